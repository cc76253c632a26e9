/* CPU kernels for decoding one sequence, built by native.py for the machine it runs on.
 *
 * A decode step of one sequence reads every weight once, so it is bound by memory bandwidth:
 * - gemv_*: y = W x + b, W dense and row-major. Each output is one contiguous row's dot product
 *   with x, rows split evenly between the threads, so every thread streams one block of the
 *   weights from start to end. One accumulator per row, 256-bit vectors (native.py's flags):
 *   on the AVX-512 AMD EPYC development machine two or four accumulators, four rows at a time
 *   or 512-bit vectors ran as fast or faster from cache but slower from memory.
 * - decoder_stack_float32: all pre-LN layers of one step in one OpenMP region, the products
 *   done as in gemv_float32, in place of some forty PyTorch operations per layer.
 * Compiled with -O3 -march=native -fopenmp: the compiler vectorises the reductions for the
 * machine, and the OpenMP runtime is the one PyTorch has already loaded (libgomp.so.1), so the
 * two share one thread pool. Sums are in float32 for both weight types.
 */
#include <stdint.h>
#include <math.h>
#include <string.h>

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

static inline float dot(const float *restrict a, const float *restrict b, int64_t n) {
    float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
    for (int64_t k = 0; k < n; k++) acc += a[k] * b[k];
    return acc;
}

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
                   int threads, float *restrict scratch) {
    /* scratch: cols floats, x widened once instead of once per row */
    for (int64_t k = 0; k < cols; k++) scratch[k] = bf16_to_float(x[k]);
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const uint16_t *row = weight + r * cols;
        float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
        for (int64_t k = 0; k < cols; k++) acc += bf16_to_float(row[k]) * scratch[k];
        y[r] = float_to_bf16(bias ? acc + bf16_to_float(bias[r]) : acc);
    }
}

/* ---- a decode step through a stack of pre-LN OPT layers: one sequence, float32, TP 1 ---- */

static void layer_norm(const float *restrict x, const float *restrict weight, const float *restrict bias,
                       float *restrict out, int64_t n, float eps) {
    float mean = 0.0f, var = 0.0f;
    for (int64_t i = 0; i < n; i++) mean += x[i];
    mean /= (float)n;
    for (int64_t i = 0; i < n; i++) var += (x[i] - mean) * (x[i] - mean);
    const float inv = 1.0f / sqrtf(var / (float)n + eps);
    for (int64_t i = 0; i < n; i++) out[i] = (x[i] - mean) * inv * weight[i] + bias[i];
}

/* one head's attention for the new query q over keys/values 0..keys-1 ((max_len, head_dim)) */
static void attend(const float *restrict q, const float *restrict k, const float *restrict v, int64_t keys,
                   int64_t head_dim, float *restrict scores, float *restrict out) {
    const float scale = 1.0f / sqrtf((float)head_dim);
    float top = -INFINITY, total = 0.0f;
    for (int64_t j = 0; j < keys; j++) {
        scores[j] = dot(q, k + j * head_dim, head_dim) * scale;
        top = scores[j] > top ? scores[j] : top;
    }
    for (int64_t j = 0; j < keys; j++) total += scores[j] = expf(scores[j] - top);
    for (int64_t d = 0; d < head_dim; d++) out[d] = 0.0f;
    for (int64_t j = 0; j < keys; j++) {
        const float p = scores[j] / total, *vj = v + j * head_dim;
#pragma omp simd
        for (int64_t d = 0; d < head_dim; d++) out[d] += p * vj[d];
    }
}

enum { LN1_W, LN1_B, QKV_W, QKV_B, OUT_W, OUT_B, LN2_W, LN2_B, FC1_W, FC1_B, FC2_W, FC2_B, PER_LAYER };

/* For each layer: x += out_proj(attention(qkv(LN1(x)))), then x += fc2(relu(fc1(LN2(x)))),
 * x (hidden) updated in place. params: PER_LAYER addresses per layer, in the enum's order.
 * keys/values: layer 0's cache slot, (heads, max_len, head_dim), the next layer's cache_stride
 * floats further; the new key and value are written at ``position`` and 0..position attended.
 * Then the final layer norm (final_w, final_b) and the LM head: logits (vocab) = head (vocab,
 * hidden) times the normed x. scratch: 5 * hidden + ffn + heads * max_len floats.
 * One OpenMP region for the whole step: its phases are separated by barriers, each weight's
 * rows split as in gemv_float32. */
void decoder_stack_float32(float *restrict x, int64_t layers, int64_t hidden, int64_t heads, int64_t ffn,
                           float eps, const int64_t *params, float *keys, float *values,
                           int64_t cache_stride, int64_t max_len, int64_t position, const float *final_w,
                           const float *final_b, const float *head, int64_t vocab, float *restrict logits,
                           float *scratch, int threads) {
    const int64_t head_dim = hidden / heads;
    float *h = scratch, *qkv = h + hidden, *attn = qkv + 3 * hidden, *f = attn + hidden, *scores = f + ffn;
#pragma omp parallel num_threads(threads)
    {
        for (int64_t layer = 0; layer < layers; layer++) {
            const float *const *w = (const float *const *)(params + layer * PER_LAYER);
            float *k_slot = keys + layer * cache_stride, *v_slot = values + layer * cache_stride;
#pragma omp single
            layer_norm(x, w[LN1_W], w[LN1_B], h, hidden, eps);
#pragma omp for schedule(static)
            for (int64_t r = 0; r < 3 * hidden; r++) qkv[r] = dot(w[QKV_W] + r * hidden, h, hidden) + w[QKV_B][r];
#pragma omp for schedule(static)
            for (int64_t head = 0; head < heads; head++) { /* qkv: q, k, v, each heads x head_dim */
                float *k = k_slot + head * max_len * head_dim, *v = v_slot + head * max_len * head_dim;
                memcpy(k + position * head_dim, qkv + hidden + head * head_dim, head_dim * sizeof(float));
                memcpy(v + position * head_dim, qkv + 2 * hidden + head * head_dim, head_dim * sizeof(float));
                attend(qkv + head * head_dim, k, v, position + 1, head_dim, scores + head * max_len,
                       attn + head * head_dim);
            }
#pragma omp for schedule(static)
            for (int64_t r = 0; r < hidden; r++) x[r] += dot(w[OUT_W] + r * hidden, attn, hidden) + w[OUT_B][r];
#pragma omp single
            layer_norm(x, w[LN2_W], w[LN2_B], h, hidden, eps);
#pragma omp for schedule(static)
            for (int64_t r = 0; r < ffn; r++) {
                const float y = dot(w[FC1_W] + r * hidden, h, hidden) + w[FC1_B][r];
                f[r] = y > 0.0f ? y : 0.0f;
            }
#pragma omp for schedule(static)
            for (int64_t r = 0; r < hidden; r++) x[r] += dot(w[FC2_W] + r * ffn, f, ffn) + w[FC2_B][r];
        }
#pragma omp single
        layer_norm(x, final_w, final_b, h, hidden, eps);
#pragma omp for schedule(static)
        for (int64_t r = 0; r < vocab; r++) logits[r] = dot(head + r * hidden, h, hidden);
    }
}
