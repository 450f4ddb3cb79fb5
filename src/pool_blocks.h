/* The plain 2x2 max-pool (stride 2, no padding or dilation) of one plane, forward and backward, for
 * cnncy._pooling (see src/pooling_core.pxd for the general kernel and torch's rules).
 *
 * Forward: taps a, b (top row) and c, d (bottom row) in torch's row-major order; each row's winner
 * is the later tap if it is greater or NaN, and the bottom row's winner beats the top row's the same
 * way.  That is torch's sequential `value > best or isnan(value)` scan (the first maximum, or the
 * last NaN), and the output is the winning tap's value, bit for bit.  With AVX-512 a row of 16
 * (float32) or 8 (float64) outputs at a time: two masked loads per input row, even and odd taps
 * dealt apart by permutes, mask compares and blends.  The scalar loop was 12-18 cycles per output
 * (the MNIST-example net's 64 x 64 x 24 x 24 pool: 1.9 ms at one thread).
 *
 * Backward: every input lies in at most one window, so each input gradient is 0 + the gradient of
 * the window it won (0 + g, as torch's zeroed-then-added buffer gives: -0 becomes +0), or 0; the
 * plane is written once, rows in vectors, instead of zeroed and then scattered into.
 */
#ifndef CNNCY_POOL_BLOCKS_H
#define CNNCY_POOL_BLOCKS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif

/* The scalar forward, the reference for the vector one (and all of it without AVX-512). */
#define CNNCY_POOL2X2_SCALAR(REAL)                                                                    \
    for (ptrdiff_t oh = 0; oh < out_height; oh++) {                                                  \
        for (ptrdiff_t ow = ow_start; ow < out_width; ow++) {                                        \
            ptrdiff_t corner = 2 * oh * width + 2 * ow;                                              \
            REAL a = x[corner], b = x[corner + 1];                                                   \
            ptrdiff_t top = corner + ((b > a) | (b != b));                                           \
            ptrdiff_t bottom = corner + width;                                                       \
            a = x[bottom];                                                                           \
            b = x[bottom + 1];                                                                       \
            bottom += (b > a) | (b != b);                                                            \
            ptrdiff_t index = (x[bottom] > x[top]) | (x[bottom] != x[bottom]) ? bottom : top;        \
            out[oh * out_width + ow] = x[index];                                                     \
            argmax[oh * out_width + ow] = index;                                                     \
        }                                                                                            \
    }

/* The scalar backward: rows and columns outside every window get 0. */
#define CNNCY_UNPOOL2X2_SCALAR(REAL)                                                                  \
    memset(grad_x, 0, (size_t) (height * width) * sizeof(REAL));                                     \
    for (ptrdiff_t i = 0; i < out_height * out_width; i++)                                           \
        grad_x[argmax[i]] += grad_out[i];

#ifdef __AVX512F__
static inline __mmask16 cnncy_first16(ptrdiff_t n) { return n >= 16 ? 0xFFFF : n <= 0 ? 0 : (__mmask16) ((1u << n) - 1); }
static inline __mmask8 cnncy_first8(ptrdiff_t n) { return n >= 8 ? 0xFF : n <= 0 ? 0 : (__mmask8) ((1u << n) - 1); }
#endif

static void max_pool2x2_plane_f32(const float* x, ptrdiff_t width, ptrdiff_t out_height, ptrdiff_t out_width,
                                  float* out, int64_t* argmax)
{
    ptrdiff_t ow_start = 0;
#ifdef __AVX512F__
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    const __m512i twice_lane = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i one = _mm512_set1_epi32(1), below = _mm512_set1_epi32((int) width);
    for (ptrdiff_t oh = 0; oh < out_height; oh++) {
        const float* top_row = x + 2 * oh * width;
        for (ptrdiff_t ow0 = 0; ow0 < out_width; ow0 += 16) {
            ptrdiff_t count = out_width - ow0 < 16 ? out_width - ow0 : 16;
            __mmask16 low = cnncy_first16(2 * count), high = cnncy_first16(2 * count - 16);
            const float* p = top_row + 2 * ow0;
            __m512 lo = _mm512_maskz_loadu_ps(low, p), hi = _mm512_maskz_loadu_ps(high, p + 16);
            __m512 a = _mm512_permutex2var_ps(lo, even, hi), b = _mm512_permutex2var_ps(lo, odd, hi);
            lo = _mm512_maskz_loadu_ps(low, p + width);
            hi = _mm512_maskz_loadu_ps(high, p + width + 16);
            __m512 c = _mm512_permutex2var_ps(lo, even, hi), d = _mm512_permutex2var_ps(lo, odd, hi);
            __mmask16 right = _mm512_cmp_ps_mask(b, a, _CMP_GT_OQ) | _mm512_cmp_ps_mask(b, b, _CMP_UNORD_Q);
            __m512 top = _mm512_mask_blend_ps(right, a, b);
            __m512i top_offset = _mm512_maskz_mov_epi32(right, one);
            right = _mm512_cmp_ps_mask(d, c, _CMP_GT_OQ) | _mm512_cmp_ps_mask(d, d, _CMP_UNORD_Q);
            __m512 bottom = _mm512_mask_blend_ps(right, c, d);
            __m512i bottom_offset = _mm512_mask_add_epi32(below, right, below, one);
            __mmask16 down = _mm512_cmp_ps_mask(bottom, top, _CMP_GT_OQ)
                             | _mm512_cmp_ps_mask(bottom, bottom, _CMP_UNORD_Q);
            _mm512_mask_storeu_ps(out + oh * out_width + ow0, cnncy_first16(count),
                                  _mm512_mask_blend_ps(down, top, bottom));
            __m512i offset = _mm512_add_epi32(twice_lane, _mm512_mask_blend_epi32(down, top_offset, bottom_offset));
            __m512i corner = _mm512_set1_epi64(2 * oh * width + 2 * ow0);
            int64_t* index = argmax + oh * out_width + ow0;
            _mm512_mask_storeu_epi64(index, cnncy_first8(count),
                                     _mm512_add_epi64(corner, _mm512_cvtepi32_epi64(_mm512_castsi512_si256(offset))));
            _mm512_mask_storeu_epi64(index + 8, cnncy_first8(count - 8),
                                     _mm512_add_epi64(corner, _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(offset, 1))));
        }
    }
    return;
#endif
    CNNCY_POOL2X2_SCALAR(float)
}

static void max_pool2x2_plane_f64(const double* x, ptrdiff_t width, ptrdiff_t out_height, ptrdiff_t out_width,
                                  double* out, int64_t* argmax)
{
    ptrdiff_t ow_start = 0;
#ifdef __AVX512F__
    const __m512i even = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14);
    const __m512i odd = _mm512_setr_epi64(1, 3, 5, 7, 9, 11, 13, 15);
    const __m512i one = _mm512_set1_epi64(1), below = _mm512_set1_epi64(width);
    for (ptrdiff_t oh = 0; oh < out_height; oh++) {
        const double* top_row = x + 2 * oh * width;
        for (ptrdiff_t ow0 = 0; ow0 < out_width; ow0 += 8) {
            ptrdiff_t count = out_width - ow0 < 8 ? out_width - ow0 : 8;
            __mmask8 low = cnncy_first8(2 * count), high = cnncy_first8(2 * count - 8);
            const double* p = top_row + 2 * ow0;
            __m512d lo = _mm512_maskz_loadu_pd(low, p), hi = _mm512_maskz_loadu_pd(high, p + 8);
            __m512d a = _mm512_permutex2var_pd(lo, even, hi), b = _mm512_permutex2var_pd(lo, odd, hi);
            lo = _mm512_maskz_loadu_pd(low, p + width);
            hi = _mm512_maskz_loadu_pd(high, p + width + 8);
            __m512d c = _mm512_permutex2var_pd(lo, even, hi), d = _mm512_permutex2var_pd(lo, odd, hi);
            __mmask8 right = _mm512_cmp_pd_mask(b, a, _CMP_GT_OQ) | _mm512_cmp_pd_mask(b, b, _CMP_UNORD_Q);
            __m512d top = _mm512_mask_blend_pd(right, a, b);
            __m512i top_offset = _mm512_maskz_mov_epi64(right, one);
            right = _mm512_cmp_pd_mask(d, c, _CMP_GT_OQ) | _mm512_cmp_pd_mask(d, d, _CMP_UNORD_Q);
            __m512d bottom = _mm512_mask_blend_pd(right, c, d);
            __m512i bottom_offset = _mm512_mask_add_epi64(below, right, below, one);
            __mmask8 down = _mm512_cmp_pd_mask(bottom, top, _CMP_GT_OQ)
                            | _mm512_cmp_pd_mask(bottom, bottom, _CMP_UNORD_Q);
            _mm512_mask_storeu_pd(out + oh * out_width + ow0, cnncy_first8(count),
                                  _mm512_mask_blend_pd(down, top, bottom));
            __m512i corner = _mm512_add_epi64(_mm512_set1_epi64(2 * oh * width + 2 * ow0), even);  /* even = 2 * lane */
            _mm512_mask_storeu_epi64(argmax + oh * out_width + ow0, cnncy_first8(count),
                                     _mm512_add_epi64(corner, _mm512_mask_blend_epi64(down, top_offset, bottom_offset)));
        }
    }
    return;
#endif
    CNNCY_POOL2X2_SCALAR(double)
}

static void max_unpool2x2_plane_f32(const float* grad_out, const int64_t* argmax, float* grad_x, ptrdiff_t height,
                                    ptrdiff_t width, ptrdiff_t out_height, ptrdiff_t out_width)
{
#ifdef __AVX512F__
    const __m512i twice_lane = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i interleave_low = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i interleave_high = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    const __m512i one = _mm512_set1_epi32(1), below = _mm512_set1_epi32((int) width);
    const __m512i below_right = _mm512_set1_epi32((int) width + 1);
    const __m512 zero = _mm512_setzero_ps();
    for (ptrdiff_t oh = 0; oh < out_height; oh++) {
        float* top_row = grad_x + 2 * oh * width;
        for (ptrdiff_t ow0 = 0; ow0 < out_width; ow0 += 16) {
            ptrdiff_t count = out_width - ow0 < 16 ? out_width - ow0 : 16;
            const int64_t* index = argmax + oh * out_width + ow0;
            __m512 g = _mm512_maskz_loadu_ps(cnncy_first16(count), grad_out + oh * out_width + ow0);
            __m512i corner = _mm512_set1_epi64(2 * oh * width + 2 * ow0);
            /* The winner's place in its window: 0, 1 (top row), width, width + 1 (bottom row). */
            __m256i low = _mm512_cvtepi64_epi32(_mm512_sub_epi64(_mm512_maskz_loadu_epi64(cnncy_first8(count), index), corner));
            __m256i high = _mm512_cvtepi64_epi32(_mm512_sub_epi64(_mm512_maskz_loadu_epi64(cnncy_first8(count - 8), index + 8), corner));
            __m512i offset = _mm512_sub_epi32(_mm512_inserti64x4(_mm512_castsi256_si512(low), high, 1), twice_lane);
            __m512 a = _mm512_add_ps(_mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(offset, _mm512_setzero_si512()), g), zero);
            __m512 b = _mm512_add_ps(_mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(offset, one), g), zero);
            __m512 c = _mm512_add_ps(_mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(offset, below), g), zero);
            __m512 d = _mm512_add_ps(_mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(offset, below_right), g), zero);
            __mmask16 first = cnncy_first16(2 * count), second = cnncy_first16(2 * count - 16);
            float* p = top_row + 2 * ow0;
            _mm512_mask_storeu_ps(p, first, _mm512_permutex2var_ps(a, interleave_low, b));
            _mm512_mask_storeu_ps(p + 16, second, _mm512_permutex2var_ps(a, interleave_high, b));
            _mm512_mask_storeu_ps(p + width, first, _mm512_permutex2var_ps(c, interleave_low, d));
            _mm512_mask_storeu_ps(p + width + 16, second, _mm512_permutex2var_ps(c, interleave_high, d));
        }
        for (ptrdiff_t column = 2 * out_width; column < width; column++) {  /* no window reads these */
            top_row[column] = 0;
            top_row[width + column] = 0;
        }
    }
    if (height > 2 * out_height)  /* rows that no window reads */
        memset(grad_x + 2 * out_height * width, 0, (size_t) ((height - 2 * out_height) * width) * sizeof(float));
    return;
#endif
    CNNCY_UNPOOL2X2_SCALAR(float)
}

static void max_unpool2x2_plane_f64(const double* grad_out, const int64_t* argmax, double* grad_x, ptrdiff_t height,
                                    ptrdiff_t width, ptrdiff_t out_height, ptrdiff_t out_width)
{
#ifdef __AVX512F__
    const __m512i twice_lane = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14);
    const __m512i interleave_low = _mm512_setr_epi64(0, 8, 1, 9, 2, 10, 3, 11);
    const __m512i interleave_high = _mm512_setr_epi64(4, 12, 5, 13, 6, 14, 7, 15);
    const __m512i one = _mm512_set1_epi64(1), below = _mm512_set1_epi64(width);
    const __m512i below_right = _mm512_set1_epi64(width + 1);
    const __m512d zero = _mm512_setzero_pd();
    for (ptrdiff_t oh = 0; oh < out_height; oh++) {
        double* top_row = grad_x + 2 * oh * width;
        for (ptrdiff_t ow0 = 0; ow0 < out_width; ow0 += 8) {
            ptrdiff_t count = out_width - ow0 < 8 ? out_width - ow0 : 8;
            __m512d g = _mm512_maskz_loadu_pd(cnncy_first8(count), grad_out + oh * out_width + ow0);
            __m512i corner = _mm512_add_epi64(_mm512_set1_epi64(2 * oh * width + 2 * ow0), twice_lane);
            __m512i offset = _mm512_sub_epi64(_mm512_maskz_loadu_epi64(cnncy_first8(count), argmax + oh * out_width + ow0),
                                              corner);
            __m512d a = _mm512_add_pd(_mm512_maskz_mov_pd(_mm512_cmpeq_epi64_mask(offset, _mm512_setzero_si512()), g), zero);
            __m512d b = _mm512_add_pd(_mm512_maskz_mov_pd(_mm512_cmpeq_epi64_mask(offset, one), g), zero);
            __m512d c = _mm512_add_pd(_mm512_maskz_mov_pd(_mm512_cmpeq_epi64_mask(offset, below), g), zero);
            __m512d d = _mm512_add_pd(_mm512_maskz_mov_pd(_mm512_cmpeq_epi64_mask(offset, below_right), g), zero);
            __mmask8 first = cnncy_first8(2 * count), second = cnncy_first8(2 * count - 8);
            double* p = top_row + 2 * ow0;
            _mm512_mask_storeu_pd(p, first, _mm512_permutex2var_pd(a, interleave_low, b));
            _mm512_mask_storeu_pd(p + 8, second, _mm512_permutex2var_pd(a, interleave_high, b));
            _mm512_mask_storeu_pd(p + width, first, _mm512_permutex2var_pd(c, interleave_low, d));
            _mm512_mask_storeu_pd(p + width + 8, second, _mm512_permutex2var_pd(c, interleave_high, d));
        }
        for (ptrdiff_t column = 2 * out_width; column < width; column++) {
            top_row[column] = 0;
            top_row[width + column] = 0;
        }
    }
    if (height > 2 * out_height)
        memset(grad_x + 2 * out_height * width, 0, (size_t) ((height - 2 * out_height) * width) * sizeof(double));
    return;
#endif
    CNNCY_UNPOOL2X2_SCALAR(double)
}

#endif
