/* One decode token of the depthwise causal conv1d with SiLU per sequence, its history updated in place.
 *
 * For channel c of sequence n with history h (the last kw - 1 inputs, oldest first, in the pool's
 * dtype) and the new input x: out = silu(sum_j w[c, j] h[j] + w[c, kw - 1] x), then the history
 * shifts by one and takes x (rounded to bf16, to nearest even, for a bf16 pool). Threads take
 * sequences from the OpenMP runtime torch already loaded. Built and loaded by cpu_native.py.
 */
#include <math.h>
#include <stdint.h>

#define MAX_KERNEL 16

static inline float from_bf16(uint16_t v) {
    union { uint32_t u; float f; } bits = { (uint32_t)v << 16 };
    return bits.f;
}

static inline uint16_t to_bf16(float f) {
    union { float f; uint32_t u; } bits = { f };
    if ((bits.u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((bits.u >> 16) | 0x40); /* quiet NaN */
    return (uint16_t)((bits.u + 0x7fffu + ((bits.u >> 16) & 1u)) >> 16);
}

/* The channels [c0, c1) of one sequence; KW known at compile time where it is the common 4 taps. */
#define CHANNELS(NAME, KW_EXPR)                                                                     \
    static void NAME(const float *xn, const float *weight, void *state, int state_bf16, int64_t slot, \
                     float *on, int64_t channels, int64_t kw_arg, int64_t c0, int64_t c1) {          \
        const int64_t kw = KW_EXPR, hist = kw - 1;                                                  \
        for (int64_t c = c0; c < c1; c++) {                                                         \
            const float *w = weight + c * kw;                                                       \
            float window[MAX_KERNEL];                                                               \
            int64_t at = (slot * channels + c) * hist;                                              \
            uint16_t *h16 = (uint16_t *)state + at;                                                 \
            float *h32 = (float *)state + at;                                                       \
            for (int64_t j = 0; j < hist; j++) window[j] = state_bf16 ? from_bf16(h16[j]) : h32[j]; \
            window[hist] = xn[c];                                                                   \
            float sum = 0.0f;                                                                       \
            for (int64_t j = 0; j < kw; j++) sum += w[j] * window[j];                               \
            on[c] = sum / (1.0f + expf(-sum));                                                      \
            for (int64_t j = 0; j < hist; j++) {                                                    \
                if (state_bf16)                                                                     \
                    h16[j] = to_bf16(window[j + 1]);                                                \
                else                                                                                \
                    h32[j] = window[j + 1];                                                         \
            }                                                                                       \
        }                                                                                           \
    }

CHANNELS(channels_4, 4)
CHANNELS(channels_any, kw_arg)

#define BLOCK 512 /* channels per task: sequences x blocks are shared among the threads */

/* x: [N, C] rows ldx apart; weight: [C, kw] fp32; state: [num_slots, C, kw - 1], bf16 (state_bf16) or
 * fp32; slots: [N]; out: [N, C]. kw at most MAX_KERNEL. */
void cortex_conv1d_decode(const float *x, int64_t ldx, const float *weight, void *state, int state_bf16,
                          const int64_t *slots, float *out, int64_t num_seqs, int64_t channels,
                          int64_t kw, int num_threads) {
    int64_t blocks = (channels + BLOCK - 1) / BLOCK;
#pragma omp parallel for schedule(static) num_threads(num_threads)
    for (int64_t task = 0; task < num_seqs * blocks; task++) {
        int64_t n = task / blocks, c0 = (task % blocks) * BLOCK;
        int64_t c1 = c0 + BLOCK < channels ? c0 + BLOCK : channels;
        if (kw == 4)
            channels_4(x + n * ldx, weight, state, state_bf16, slots[n], out + n * channels, channels, kw, c0, c1);
        else
            channels_any(x + n * ldx, weight, state, state_bf16, slots[n], out + n * channels, channels, kw, c0,
                         c1);
    }
}
