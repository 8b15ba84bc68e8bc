/* y[M, N] = x[M, K] @ w[N, K]^T (+ bias[N]): fp32 activations, bf16 weights as stored, fp32 sums.
 *
 * For x86 CPUs with AVX2 and FMA but no bf16 arithmetic, where torch's bf16 matmul is emulated and
 * its fp32 matmul would need a second, fp32 copy of the weights (twice the bytes to read). Each weight
 * row is read once per tile of activation rows, widened to fp32 in registers (a bf16 is the top half
 * of an fp32) and multiplied by up to four activation rows at a time; one activation row (batch-1
 * decode) streams up to eight weight rows at once. Built and loaded by cpu_bf16_linear.py; threads
 * come from the OpenMP runtime torch already loaded (the same libgomp.so.1), so this and torch's own
 * kernels share one pool.
 */
#include <immintrin.h>
#include <stdint.h>

static inline __m256 load_bf16x8(const uint16_t *p) {
    __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
}

static inline float bf16_to_float(uint16_t v) {
    union { uint32_t u; float f; } bits = { (uint32_t)v << 16 };
    return bits.f;
}

static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* A tile of MB activation rows by NB weight rows over all of K. */
#define TILE(MB, NB)                                                                               \
    static void tile_##MB##x##NB(const float *x, int64_t ldx, const uint16_t *w, int64_t ldw,       \
                                 float *y, int64_t ldy, int64_t K) {                                \
        __m256 acc[MB][NB];                                                                         \
        for (int m = 0; m < MB; m++)                                                                \
            for (int n = 0; n < NB; n++) acc[m][n] = _mm256_setzero_ps();                           \
        int64_t k = 0;                                                                              \
        for (; k + 8 <= K; k += 8) {                                                                \
            __m256 wv[NB];                                                                          \
            for (int n = 0; n < NB; n++) wv[n] = load_bf16x8(w + n * ldw + k);                      \
            for (int m = 0; m < MB; m++) {                                                          \
                __m256 xv = _mm256_loadu_ps(x + m * ldx + k);                                       \
                for (int n = 0; n < NB; n++) acc[m][n] = _mm256_fmadd_ps(xv, wv[n], acc[m][n]);     \
            }                                                                                       \
        }                                                                                           \
        for (int m = 0; m < MB; m++)                                                                \
            for (int n = 0; n < NB; n++) {                                                          \
                float sum = hsum(acc[m][n]);                                                        \
                for (int64_t t = k; t < K; t++) sum += x[m * ldx + t] * bf16_to_float(w[n * ldw + t]); \
                y[m * ldy + n] = sum;                                                               \
            }                                                                                       \
    }

/* One activation row against weight rows [n0, n1) (batch-1 decode: bandwidth-bound). The rows are read
 * in memory order, one at a time, with four sums in flight, so the hardware prefetcher sees one long
 * stream per thread. */
static void gemv(const float *x, const uint16_t *w, int64_t ldw, float *y, int64_t K, int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; n++) {
        const uint16_t *row = w + n * ldw;
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
        __m256 a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
        int64_t k = 0;
        for (; k + 32 <= K; k += 32) {
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + k), load_bf16x8(row + k), a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + k + 8), load_bf16x8(row + k + 8), a1);
            a2 = _mm256_fmadd_ps(_mm256_loadu_ps(x + k + 16), load_bf16x8(row + k + 16), a2);
            a3 = _mm256_fmadd_ps(_mm256_loadu_ps(x + k + 24), load_bf16x8(row + k + 24), a3);
        }
        for (; k + 8 <= K; k += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + k), load_bf16x8(row + k), a0);
        float sum = hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
        for (; k < K; k++) sum += x[k] * bf16_to_float(row[k]);
        y[n] = sum;
    }
}

TILE(1, 8)
TILE(1, 1)
TILE(2, 4)
TILE(2, 1)
TILE(3, 4)
TILE(3, 1)
TILE(4, 3)
TILE(4, 1)

typedef void (*tile_fn)(const float *, int64_t, const uint16_t *, int64_t, float *, int64_t, int64_t);
static const tile_fn WIDE[5] = {0, tile_1x8, tile_2x4, tile_3x4, tile_4x3};
static const tile_fn NARROW[5] = {0, tile_1x1, tile_2x1, tile_3x1, tile_4x1};
static const int WIDTH[5] = {0, 8, 4, 4, 3};
#define CHUNK 24 /* weight rows per pass over a block of activation rows: a multiple of every WIDTH */

/* Weight rows [n0, n1) against every activation row: blocks of activation rows that stay in L2, and
 * per block, chunks of weight rows that stay in L2 while every tile of activation rows passes them. */
static void rows(const float *x, int64_t ldx, const uint16_t *w, int64_t ldw, float *y, int64_t ldy,
                 int64_t M, int64_t K, int64_t n0, int64_t n1) {
    int64_t block = (256 * 1024) / (4 * (K > 0 ? K : 1));
    block = block < 4 ? 4 : block - block % 4;
    if (M == 1) {
        gemv(x, w, ldw, y, K, n0, n1);
        return;
    }
    for (int64_t m0 = 0; m0 < M; m0 += block) {
        int64_t m_end = m0 + block < M ? m0 + block : M;
        for (int64_t c = n0; c < n1; c += CHUNK) {
            int64_t c_end = c + CHUNK < n1 ? c + CHUNK : n1;
            for (int64_t m = m0; m < m_end; m += 4) {
                int mb = m_end - m >= 4 ? 4 : (int)(m_end - m);
                int64_t n = c;
                for (; n + WIDTH[mb] <= c_end; n += WIDTH[mb])
                    WIDE[mb](x + m * ldx, ldx, w + n * ldw, ldw, y + m * ldy + n, ldy, K);
                for (; n < c_end; n++) NARROW[mb](x + m * ldx, ldx, w + n * ldw, ldw, y + m * ldy + n, ldy, K);
            }
        }
    }
}

void cortex_bf16_linear(const float *x, int64_t ldx, const uint16_t *w, int64_t ldw, const float *bias,
                        float *y, int64_t ldy, int64_t M, int64_t N, int64_t K, int num_threads) {
    /* Slices of weight rows, taken by the threads as they finish (a thread slowed by its neighbours on a
     * shared machine takes fewer), each slice long enough for the prefetcher: 256 KiB of weights. */
    int64_t slice = (128 * 1024) / (K > 0 ? K : 1);
    slice = slice < CHUNK ? CHUNK : slice - slice % CHUNK;
    int64_t num_slices = (N + slice - 1) / slice;
#pragma omp parallel for schedule(dynamic, 1) num_threads(num_threads)
    for (int64_t i = 0; i < num_slices; i++) {
        int64_t n0 = i * slice, n1 = n0 + slice < N ? n0 + slice : N;
        rows(x, ldx, w, ldw, y, ldy, M, K, n0, n1);
        if (bias)
            for (int64_t m = 0; m < M; m++)
                for (int64_t n = n0; n < n1; n++) y[m * ldy + n] += bias[n];
    }
}
