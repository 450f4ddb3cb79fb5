/* Register blocks written with GCC/Clang vector extensions, for the Cython kernels.
 *
 * gcc's auto-vectoriser does not reliably keep a block of accumulators in registers across a
 * runtime-length loop (it spills them, or vectorises the wrong loop), so the innermost blocks of
 * the hottest kernels are written with vector types: one `vec` is 64 bytes of float32 or float64,
 * which the compiler maps to the target's registers (one AVX-512 register, two AVX2 registers, or
 * four SSE2 registers in a portable build).  Everything around them stays in Cython.
 *
 * Partial loads and stores (a block that runs past the end of a row) and int8 conversions are
 * where gcc's code for plain loops is poor; with AVX-512 they use its masked and widening/narrowing
 * instructions, elsewhere plain loops.
 *
 * A kernel family's header defines SIMD_TEMPLATE (the file with its blocks, written once in terms
 * of REAL, MASK and NAME()) and includes this file, which includes the template once per element
 * type: NAME(x) becomes x_f32 and x_f64.
 */
#include <stddef.h>
#include <stdint.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif

#define CNNCY_BLOCK_BYTES 64

#ifdef __AVX512F__
/* Bit j set for the j < 16 with 0 <= start + j < valid. */
static inline __mmask16 range_mask16(ptrdiff_t start, ptrdiff_t valid)
{
    if (start <= -16)
        return 0;
    ptrdiff_t first = start < 0 ? -start : 0;                   /* lanes before index 0 */
    ptrdiff_t end = valid - start < 16 ? valid - start : 16;   /* lanes before index `valid` */
    if (end <= first)
        return 0;
    return (__mmask16) (((1u << end) - 1) & ~((1u << first) - 1));
}
#endif

#define REAL float
#define MAX_REAL 3.40282346638528859812e+38F
#define MASK int32_t
#define NAME(name) name##_f32
#ifdef __AVX512F__
#define STORE_FIRST(p, v, count) _mm512_mask_storeu_ps((p), (__mmask16) ((1u << (count)) - 1), (__m512) (v))
#define LOAD_FIRST(p, count) (vec_f32) _mm512_maskz_loadu_ps((__mmask16) ((1u << (count)) - 1), (p))
#define STORE_INT8(p, m) _mm_storeu_si128((__m128i*) (p), _mm512_cvtepi32_epi8((__m512i) (m)))
#define LOAD_INT8(p) (mask_f32) _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*) (p)))
#define MAX_LATER(later, earlier) (vec_f32) _mm512_max_ps((__m512) (later), (__m512) (earlier))
/* row[start + j] for the lanes j with 0 <= start + j < valid, zeros elsewhere (no access there). */
#define LOAD_RANGE(row, start, valid) (vec_f32) _mm512_maskz_loadu_ps(range_mask16((start), (valid)), (row) + (start))
/* Even lanes of low:high to *even, odd lanes to *odd. */
#define DEAL_PAIRS(low, high, even, odd) do { \
        _mm512_storeu_ps((even), _mm512_permutex2var_ps((__m512) (low), _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30), (__m512) (high))); \
        _mm512_storeu_ps((odd), _mm512_permutex2var_ps((__m512) (low), _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31), (__m512) (high))); \
    } while (0)
#endif
#include "simd_vec.h"
#include SIMD_TEMPLATE
#undef REAL
#undef MAX_REAL
#undef MASK
#undef NAME
#undef STORE_FIRST
#undef LOAD_FIRST
#undef STORE_INT8
#undef LOAD_INT8
#undef MAX_LATER
#undef LOAD_RANGE
#undef DEAL_PAIRS

#define REAL double
#define MAX_REAL 1.79769313486231570815e+308
#define MASK int64_t
#define NAME(name) name##_f64
#ifdef __AVX512F__
#define STORE_FIRST(p, v, count) _mm512_mask_storeu_pd((p), (__mmask8) ((1u << (count)) - 1), (__m512d) (v))
#define LOAD_FIRST(p, count) (vec_f64) _mm512_maskz_loadu_pd((__mmask8) ((1u << (count)) - 1), (p))
#define STORE_INT8(p, m) _mm_storel_epi64((__m128i*) (p), _mm512_cvtepi64_epi8((__m512i) (m)))
#define LOAD_INT8(p) (mask_f64) _mm512_cvtepi8_epi64(_mm_loadl_epi64((const __m128i*) (p)))
#define MAX_LATER(later, earlier) (vec_f64) _mm512_max_pd((__m512d) (later), (__m512d) (earlier))
#define LOAD_RANGE(row, start, valid) (vec_f64) _mm512_maskz_loadu_pd((__mmask8) range_mask16((start), (valid)), (row) + (start))
#define DEAL_PAIRS(low, high, even, odd) do { \
        _mm512_storeu_pd((even), _mm512_permutex2var_pd((__m512d) (low), _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14), (__m512d) (high))); \
        _mm512_storeu_pd((odd), _mm512_permutex2var_pd((__m512d) (low), _mm512_setr_epi64(1, 3, 5, 7, 9, 11, 13, 15), (__m512d) (high))); \
    } while (0)
#endif
#include "simd_vec.h"
#include SIMD_TEMPLATE
#undef REAL
#undef MAX_REAL
#undef MASK
#undef NAME
#undef STORE_FIRST
#undef LOAD_FIRST
#undef STORE_INT8
#undef LOAD_INT8
#undef MAX_LATER
#undef LOAD_RANGE
#undef DEAL_PAIRS
