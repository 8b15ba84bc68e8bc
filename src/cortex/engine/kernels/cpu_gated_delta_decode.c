/* One decode token of the gated delta rule per sequence, each state updated where it lies in its slot.
 *
 * For a head with state S [dk, dv] (fp32), normalised q, k [dk], v [dv], decay d = exp(g) and beta:
 *   sk = S^T k, sq = S^T q, u = beta (v - d sk), o = d sq + (q . k) u, S <- d S + k u^T.
 * Done per block of 16 state columns (one 64-byte cache line of each of the dk rows, 8 KiB at dk 128):
 * the block is read from memory once for both products and rewritten from L1, so a decode reads and
 * writes the state, its largest tensor, once each. Threads take (sequence, head) pairs from the
 * OpenMP runtime torch already loaded. Built and loaded by cpu_native.py.
 */
#include <immintrin.h>
#include <stdint.h>

#define COLS 16

static void head(float *S, const float *q, const float *k, const float *v, float decay, float beta,
                 float qk, float *o, int64_t dk, int64_t dv) {
    for (int64_t c = 0; c < dv; c += COLS) {
        __m256 sk0 = _mm256_setzero_ps(), sk1 = _mm256_setzero_ps();
        __m256 sq0 = _mm256_setzero_ps(), sq1 = _mm256_setzero_ps();
        for (int64_t i = 0; i < dk; i++) {
            __m256 s0 = _mm256_loadu_ps(S + i * dv + c), s1 = _mm256_loadu_ps(S + i * dv + c + 8);
            __m256 ki = _mm256_set1_ps(k[i]), qi = _mm256_set1_ps(q[i]);
            sk0 = _mm256_fmadd_ps(s0, ki, sk0);
            sk1 = _mm256_fmadd_ps(s1, ki, sk1);
            sq0 = _mm256_fmadd_ps(s0, qi, sq0);
            sq1 = _mm256_fmadd_ps(s1, qi, sq1);
        }
        __m256 d = _mm256_set1_ps(decay), b = _mm256_set1_ps(beta), dot = _mm256_set1_ps(qk);
        __m256 u0 = _mm256_mul_ps(b, _mm256_fnmadd_ps(d, sk0, _mm256_loadu_ps(v + c)));
        __m256 u1 = _mm256_mul_ps(b, _mm256_fnmadd_ps(d, sk1, _mm256_loadu_ps(v + c + 8)));
        _mm256_storeu_ps(o + c, _mm256_fmadd_ps(dot, u0, _mm256_mul_ps(d, sq0)));
        _mm256_storeu_ps(o + c + 8, _mm256_fmadd_ps(dot, u1, _mm256_mul_ps(d, sq1)));
        for (int64_t i = 0; i < dk; i++) {
            __m256 ki = _mm256_set1_ps(k[i]);
            float *row = S + i * dv + c;
            _mm256_storeu_ps(row, _mm256_fmadd_ps(ki, u0, _mm256_mul_ps(d, _mm256_loadu_ps(row))));
            _mm256_storeu_ps(row + 8, _mm256_fmadd_ps(ki, u1, _mm256_mul_ps(d, _mm256_loadu_ps(row + 8))));
        }
    }
}

/* state: [num_slots, H, dk, dv]; q, k: [N, H, dk]; v, o: [N, H, dv]; decay, beta: [N, H]; slots: [N].
 * dv must be a multiple of 16. */
void cortex_gated_delta_decode(float *state, const int64_t *slots, const float *q, const float *k,
                               const float *v, const float *decay, const float *beta, float *o,
                               int64_t num_seqs, int64_t num_heads, int64_t dk, int64_t dv,
                               int num_threads) {
#pragma omp parallel for schedule(static) num_threads(num_threads)
    for (int64_t job = 0; job < num_seqs * num_heads; job++) {
        int64_t n = job / num_heads, h = job % num_heads;
        const float *qh = q + job * dk, *kh = k + job * dk;
        float qk = 0.0f;
        for (int64_t i = 0; i < dk; i++) qk += qh[i] * kh[i];
        float *S = state + (slots[n] * num_heads + h) * dk * dv;
        head(S, qh, kh, v + job * dv, decay[job], beta[job], qk, o + job * dv, dk, dv);
    }
}
