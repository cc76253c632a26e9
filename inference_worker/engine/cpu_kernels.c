/* CPU kernels for decoding one sequence, built by native.py for the machine it runs on.
 *
 * A decode step of one sequence reads every weight once, so it is bound by memory bandwidth:
 * - gemv_*: y = W x + b, W dense and row-major. Each output is one contiguous row's dot product
 *   with x, rows split evenly between the threads, so every thread streams one block of the
 *   weights from start to end.
 * - decoder_stack_*: a whole decode step of a pre-LN model (the embeddings, every layer, the final
 *   layer norm and the LM head) in one OpenMP region, the products done as in gemv_*, in place of
 *   some forty PyTorch operations per layer.
 * Dot products keep four independent vector sums on x86 (AVX2 + FMA): with one, each core waits
 * on the latency of its previous FMA and, on the AVX-512 AMD EPYC development machine, streamed
 * weights at 0.8x the speed of a plain sum of 1 GiB; with four, at 0.95-1.0x. bfloat16 products
 * use AVX-512 BF16's pair dot products where the CPU has them (x then is bfloat16 as well, as it
 * is in PyTorch's bfloat16 layers), which read weights 15% faster than widening them to float32.
 * Compiled with -O3 -march=native -fopenmp: the OpenMP runtime is the one PyTorch has already
 * loaded (libgomp.so.1), so the two share one thread pool. Sums are in float32 for both types.
 */
#include <stdint.h>
#include <math.h>
#include <string.h>
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

static inline float bf16_to_float(uint16_t v) {
    uint32_t bits = (uint32_t)v << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static inline uint16_t float_to_bf16(float f) {
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((bits >> 16) | 0x40u); /* NaN */
    return (uint16_t)((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16); /* round to nearest even */
}

/* ---- dot products: float32 x float32, bfloat16 x float32, bfloat16 x bfloat16 ---- */

#if defined(__AVX2__) && defined(__FMA__)
static inline float sum8(__m256 s) {
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    return _mm_cvtss_f32(_mm_add_ss(q, _mm_movehdup_ps(q)));
}

static inline __m256 widen8(const uint16_t *p) { /* 8 bfloat16 -> 8 float32 */
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
}

/* LOAD8(pointer) gives 8 float32 lanes; four sums of 8 lanes, 32 elements an iteration */
#define DOT4(LOAD_A, LOAD_B, A_TAIL, B_TAIL)                                                      \
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(),        \
           s3 = _mm256_setzero_ps();                                                             \
    int64_t k = 0;                                                                               \
    for (; k + 32 <= n; k += 32) {                                                               \
        s0 = _mm256_fmadd_ps(LOAD_A(a + k), LOAD_B(b + k), s0);                                  \
        s1 = _mm256_fmadd_ps(LOAD_A(a + k + 8), LOAD_B(b + k + 8), s1);                          \
        s2 = _mm256_fmadd_ps(LOAD_A(a + k + 16), LOAD_B(b + k + 16), s2);                        \
        s3 = _mm256_fmadd_ps(LOAD_A(a + k + 24), LOAD_B(b + k + 24), s3);                        \
    }                                                                                            \
    float acc = sum8(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));              \
    for (; k < n; k++) acc += A_TAIL(a[k]) * B_TAIL(b[k]);                                       \
    return acc;

#define SAME(v) (v)
static inline float dot(const float *restrict a, const float *restrict b, int64_t n) {
    DOT4(_mm256_loadu_ps, _mm256_loadu_ps, SAME, SAME)
}

static inline float dot_bf16_f32(const uint16_t *restrict a, const float *restrict b, int64_t n) {
    DOT4(widen8, _mm256_loadu_ps, bf16_to_float, SAME)
}

#if defined(__AVX512BF16__) && defined(__AVX512VL__)
static inline __m256bh load16bh(const uint16_t *p) { return (__m256bh)_mm256_loadu_si256((const __m256i *)p); }

static inline float dot_bf16(const uint16_t *restrict a, const uint16_t *restrict b, int64_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 64 <= n; k += 64) { /* each instruction: 8 sums of 2 products, 16 elements */
        s0 = _mm256_dpbf16_ps(s0, load16bh(a + k), load16bh(b + k));
        s1 = _mm256_dpbf16_ps(s1, load16bh(a + k + 16), load16bh(b + k + 16));
        s2 = _mm256_dpbf16_ps(s2, load16bh(a + k + 32), load16bh(b + k + 32));
        s3 = _mm256_dpbf16_ps(s3, load16bh(a + k + 48), load16bh(b + k + 48));
    }
    float acc = sum8(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (; k < n; k++) acc += bf16_to_float(a[k]) * bf16_to_float(b[k]);
    return acc;
}
#else
static inline float dot_bf16(const uint16_t *restrict a, const uint16_t *restrict b, int64_t n) {
    DOT4(widen8, widen8, bf16_to_float, bf16_to_float)
}
#endif

#else /* portable: the compiler vectorises one sum */
static inline float dot(const float *restrict a, const float *restrict b, int64_t n) {
    float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
    for (int64_t k = 0; k < n; k++) acc += a[k] * b[k];
    return acc;
}

static inline float dot_bf16_f32(const uint16_t *restrict a, const float *restrict b, int64_t n) {
    float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
    for (int64_t k = 0; k < n; k++) acc += bf16_to_float(a[k]) * b[k];
    return acc;
}

static inline float dot_bf16(const uint16_t *restrict a, const uint16_t *restrict b, int64_t n) {
    float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
    for (int64_t k = 0; k < n; k++) acc += bf16_to_float(a[k]) * bf16_to_float(b[k]);
    return acc;
}
#endif

void gemv_float32(const float *restrict weight, const float *restrict x, const float *restrict bias,
                  float *restrict y, int64_t rows, int64_t cols, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const float acc = dot(weight + r * cols, x, cols);
        y[r] = bias ? acc + bias[r] : acc;
    }
}

void gemv_bfloat16(const uint16_t *restrict weight, const uint16_t *restrict x,
                   const uint16_t *restrict bias, uint16_t *restrict y, int64_t rows, int64_t cols,
                   int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const float acc = dot_bf16(weight + r * cols, x, cols);
        y[r] = float_to_bf16(bias ? acc + bf16_to_float(bias[r]) : acc);
    }
}

/* ---- a decode step through a stack of pre-LN OPT layers: one sequence, TP 1 ----
 * One body for both weight types: `bf16` is a constant in each exported function, so the
 * compiler keeps one branch of every test on it. Activations of a bfloat16 model are rounded
 * to bfloat16 wherever PyTorch's bfloat16 layers round them (every operation's output). */

#define INLINE static inline __attribute__((always_inline))

INLINE float get(const void *p, int64_t i, int bf16) {
    return bf16 ? bf16_to_float(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}

INLINE void put(void *p, int64_t i, float v, int bf16) {
    if (bf16)
        ((uint16_t *)p)[i] = float_to_bf16(v);
    else
        ((float *)p)[i] = v;
}

/* the address of element i of an array of the model's type */
INLINE void *at(const void *p, int64_t i, int bf16) { return (char *)p + i * (bf16 ? 2 : 4); }

INLINE float rounded(float v, int bf16) { return bf16 ? bf16_to_float(float_to_bf16(v)) : v; }

/* row r of the (rows, n) weight w times x, both of the model's type */
INLINE float row_dot(const void *w, int64_t r, const void *x, int64_t n, int bf16) {
    return bf16 ? dot_bf16(at(w, r * n, 1), x, n) : dot(at(w, r * n, 0), x, n);
}

/* output r of the linear layer (w, b) on x (n), rounded to the model's type */
INLINE float linear_row(const void *w, const void *b, int64_t r, const void *x, int64_t n, int bf16) {
    return rounded(row_dot(w, r, x, n, bf16) + get(b, r, bf16), bf16);
}

/* query q (float32) times key k (the model's type) */
INLINE float key_dot(const float *q, const void *k, int64_t n, int bf16) {
    return bf16 ? dot_bf16_f32(k, q, n) : dot(q, k, n);
}

INLINE void layer_norm(const float *restrict x, const void *weight, const void *bias, void *out, int64_t n, float eps,
                       int bf16) {
    float mean = 0.0f, var = 0.0f;
    for (int64_t i = 0; i < n; i++) mean += x[i];
    mean /= (float)n;
    for (int64_t i = 0; i < n; i++) var += (x[i] - mean) * (x[i] - mean);
    const float inv = 1.0f / sqrtf(var / (float)n + eps);
    for (int64_t i = 0; i < n; i++) put(out, i, (x[i] - mean) * inv * get(weight, i, bf16) + get(bias, i, bf16), bf16);
}

/* one head's attention for the new query q over keys/values 0..keys-1 ((max_len, head_dim)) */
INLINE void attend(const float *restrict q, const void *k, const void *v, int64_t keys, int64_t head_dim,
                   float *restrict scores, void *out, int bf16) {
    const float scale = 1.0f / sqrtf((float)head_dim);
    float top = -INFINITY, total = 0.0f, sum[head_dim];
    for (int64_t j = 0; j < keys; j++) {
        const float s = key_dot(q, at(k, j * head_dim, bf16), head_dim, bf16) * scale;
        scores[j] = s;
        top = s > top ? s : top;
    }
    for (int64_t j = 0; j < keys; j++) total += scores[j] = expf(scores[j] - top);
    for (int64_t d = 0; d < head_dim; d++) sum[d] = 0.0f;
    for (int64_t j = 0; j < keys; j++) {
        const float p = scores[j] / total;
#pragma omp simd
        for (int64_t d = 0; d < head_dim; d++) sum[d] += p * get(v, j * head_dim + d, bf16);
    }
    for (int64_t d = 0; d < head_dim; d++) put(out, d, sum[d], bf16);
}

enum { LN1_W, LN1_B, QKV_W, QKV_B, OUT_W, OUT_B, LN2_W, LN2_B, FC1_W, FC1_B, FC2_W, FC2_B, PER_LAYER };

/* x = embed[token] + positions[position_row], then for each layer:
 * x += out_proj(attention(qkv(LN1(x)))), then x += fc2(relu(fc1(LN2(x)))). embed and
 * positions: (rows, hidden) tables. params: PER_LAYER addresses per layer,
 * in the enum's order. keys/values: layer 0's cache slot, (heads, max_len, head_dim), the next
 * layer's cache_stride elements further; the new key and value are written at ``position`` and
 * 0..position attended. Then the final layer norm (final_w, final_b) and the LM head: logits
 * (vocab) = head (vocab, hidden) times the normed x. Everything but scratch is of the model's
 * type. scratch: 6 * hidden + ffn + heads * max_len floats.
 * One OpenMP region for the whole step: its phases are separated by barriers, each weight's
 * rows split as in gemv_*. */
INLINE void decoder_stack(const void *embed, int64_t token, const void *positions, int64_t position_row,
                          int64_t layers, int64_t hidden, int64_t heads, int64_t ffn, float eps, const int64_t *params,
                          void *keys, void *values, int64_t cache_stride, int64_t max_len, int64_t position,
                          const void *final_w, const void *final_b, const void *head, int64_t vocab, void *logits,
                          float *scratch, int threads, int bf16) {
    const int64_t head_dim = hidden / heads;
    float *x = scratch, *qkv = x + hidden, *scores = qkv + 3 * hidden; /* float32 */
    void *h = scores + heads * max_len, *attn = at(h, hidden, bf16), *f = at(attn, hidden, bf16); /* model's type */
    const void *token_row = at(embed, token * hidden, bf16), *position_vec = at(positions, position_row * hidden, bf16);
    for (int64_t i = 0; i < hidden; i++) x[i] = rounded(get(token_row, i, bf16) + get(position_vec, i, bf16), bf16);
#pragma omp parallel num_threads(threads)
    {
        for (int64_t layer = 0; layer < layers; layer++) {
            const void *const *w = (const void *const *)(params + layer * PER_LAYER);
            void *k_slot = at(keys, layer * cache_stride, bf16), *v_slot = at(values, layer * cache_stride, bf16);
#pragma omp single
            layer_norm(x, w[LN1_W], w[LN1_B], h, hidden, eps, bf16);
#pragma omp for schedule(static)
            for (int64_t r = 0; r < 3 * hidden; r++) qkv[r] = linear_row(w[QKV_W], w[QKV_B], r, h, hidden, bf16);
#pragma omp for schedule(static)
            for (int64_t head = 0; head < heads; head++) { /* qkv: q, k, v, each heads x head_dim */
                void *k = at(k_slot, head * max_len * head_dim, bf16), *v = at(v_slot, head * max_len * head_dim, bf16);
                for (int64_t d = 0; d < head_dim; d++) {
                    put(k, position * head_dim + d, qkv[hidden + head * head_dim + d], bf16);
                    put(v, position * head_dim + d, qkv[2 * hidden + head * head_dim + d], bf16);
                }
                attend(qkv + head * head_dim, k, v, position + 1, head_dim, scores + head * max_len,
                       at(attn, head * head_dim, bf16), bf16);
            }
#pragma omp for schedule(static)
            for (int64_t r = 0; r < hidden; r++)
                x[r] = rounded(x[r] + linear_row(w[OUT_W], w[OUT_B], r, attn, hidden, bf16), bf16);
#pragma omp single
            layer_norm(x, w[LN2_W], w[LN2_B], h, hidden, eps, bf16);
#pragma omp for schedule(static)
            for (int64_t r = 0; r < ffn; r++) {
                const float y = linear_row(w[FC1_W], w[FC1_B], r, h, hidden, bf16);
                put(f, r, y > 0.0f ? y : 0.0f, bf16);
            }
#pragma omp for schedule(static)
            for (int64_t r = 0; r < hidden; r++)
                x[r] = rounded(x[r] + linear_row(w[FC2_W], w[FC2_B], r, f, ffn, bf16), bf16);
        }
#pragma omp single
        layer_norm(x, final_w, final_b, h, hidden, eps, bf16);
#pragma omp for schedule(static)
        for (int64_t r = 0; r < vocab; r++) put(logits, r, row_dot(head, r, h, hidden, bf16), bf16);
    }
}

void decoder_stack_float32(const float *embed, int64_t token, const float *positions, int64_t position_row,
                           int64_t layers, int64_t hidden, int64_t heads, int64_t ffn, float eps, const int64_t *params,
                           float *keys, float *values, int64_t cache_stride, int64_t max_len, int64_t position,
                           const float *final_w, const float *final_b, const float *head, int64_t vocab, float *logits,
                           float *scratch, int threads) {
    decoder_stack(embed, token, positions, position_row, layers, hidden, heads, ffn, eps, params, keys, values,
                  cache_stride, max_len, position, final_w, final_b, head, vocab, logits, scratch, threads, 0);
}

void decoder_stack_bfloat16(const uint16_t *embed, int64_t token, const uint16_t *positions, int64_t position_row,
                            int64_t layers, int64_t hidden, int64_t heads, int64_t ffn, float eps,
                            const int64_t *params, uint16_t *keys, uint16_t *values, int64_t cache_stride,
                            int64_t max_len, int64_t position, const uint16_t *final_w, const uint16_t *final_b,
                            const uint16_t *head, int64_t vocab, uint16_t *logits, float *scratch, int threads) {
    decoder_stack(embed, token, positions, position_row, layers, hidden, heads, ffn, eps, params, keys, values,
                  cache_stride, max_len, position, final_w, final_b, head, vocab, logits, scratch, threads, 1);
}
