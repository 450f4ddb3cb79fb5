/* The register tiles of cnncy's matrix products (src/gemm.pxd), for conv and linear.
 *
 * Why C: written as plain loops in Cython, gcc keeps the float32 tiles in registers, but for
 * float64 its vectoriser groups the loads of A across rows into gathers and permutes (measured
 * 50x slower).  Written with vector types, every tile is a fixed set of vector registers for both
 * element types.  Everything around the tiles (packing, blocking, threads) stays in Cython.
 *
 * One `vec` is one register of the target: 64 bytes with AVX-512, 32 with AVX, 16 otherwise (a
 * portable build), and the tiles take as many rows as leave room in the register file (32 vector
 * registers with AVX-512, 16 without).
 *
 * Two tiles, for the two shapes of operand the kernels meet:
 *   tile_packed: A comes packed (a[k * GEMM_MR + r]) and each B row k is read where b_off[k] says,
 *                so B can be a plain matrix, a packed panel, or an image read at shifted offsets
 *                (a convolution without im2col).
 *   tile_rows:   A row r is read in place at a_off[r] (scalars, broadcast), so the rows can be the
 *                taps of an image; B rows are a plain matrix.  The sum over k runs in segments
 *                (image rows) so that it can skip the columns that a shifted image read adds.
 * Each C entry is one sum in increasing k order, started from C (accumulate) or a start value.
 * Also here: the vector helpers around them that plain loops do poorly (compacted stores, short row
 * copies, col2im of a panel, transposes), with AVX-512 masks where available.
 */
#ifndef CNNCY_GEMM_TILES_H
#define CNNCY_GEMM_TILES_H

#include <stddef.h>

#define CNNCY_GEMM_PACKED_VECTORS 3  /* vectors per tile_packed row */
#if defined(__AVX512F__)
#define CNNCY_GEMM_VECTOR_BYTES 64
#define CNNCY_GEMM_MR 8              /* tile_packed rows: 24 accumulators of 32 registers */
#define CNNCY_GEMM_ROWS_MR 12        /* tile_rows rows: 24 accumulators (2 vectors a row) */
#else
#if defined(__AVX__)
#define CNNCY_GEMM_VECTOR_BYTES 32
#else
#define CNNCY_GEMM_VECTOR_BYTES 16
#endif
#define CNNCY_GEMM_MR 4              /* 12 accumulators of 16 registers */
#define CNNCY_GEMM_ROWS_MR 6
#endif
/* The vectors of the larger tile (partial tiles go through a scratch array of this many). */
#define CNNCY_GEMM_TILE_VECTORS \
    (CNNCY_GEMM_MR * CNNCY_GEMM_PACKED_VECTORS > CNNCY_GEMM_ROWS_MR * 2 ? CNNCY_GEMM_MR * CNNCY_GEMM_PACKED_VECTORS \
                                                                      : CNNCY_GEMM_ROWS_MR * 2)

#ifdef __AVX512F__
#include <immintrin.h>

/* Compress the lanes of v set in `keep` to the front and store just those at out. */
#define KEEP_LANES_F32(out, keep, v) \
    _mm512_mask_storeu_ps((out), (__mmask16) ((1u << __builtin_popcount(keep)) - 1), \
                          _mm512_maskz_compress_ps((__mmask16) (keep), (__m512) (v)))
#define KEEP_LANES_F64(out, keep, v) \
    _mm512_mask_storeu_pd((out), (__mmask8) ((1u << __builtin_popcount(keep)) - 1), \
                          _mm512_maskz_compress_pd((__mmask8) (keep), (__m512d) (v)))

/* Copy the first count (< a vector) elements of src to dst. */
#define COPY_FIRST_F32(dst, src, count) \
    _mm512_mask_storeu_ps((dst), (__mmask16) ((1u << (count)) - 1), \
                          _mm512_maskz_loadu_ps((__mmask16) ((1u << (count)) - 1), (src)))
#define COPY_FIRST_F64(dst, src, count) \
    _mm512_mask_storeu_pd((dst), (__mmask8) ((1u << (count)) - 1), \
                          _mm512_maskz_loadu_pd((__mmask8) ((1u << (count)) - 1), (src)))

/* Lanes [lo, hi) of p (0 <= lo < hi <= lanes), zeros elsewhere; store the first count lanes. */
#define LOAD_LANES_F32(p, lo, hi) \
    (gemm_vec_f32) _mm512_maskz_loadu_ps((__mmask16) (((1u << (hi)) - 1) & ~((1u << (lo)) - 1)), \
                                         (p))
#define LOAD_LANES_F64(p, lo, hi) \
    (gemm_vec_f64) _mm512_maskz_loadu_pd((__mmask8) (((1u << (hi)) - 1) & ~((1u << (lo)) - 1)), (p))
#define STORE_LANES_F32(p, v, count) _mm512_mask_storeu_ps((p), (__mmask16) ((1u << (count)) - 1), (__m512) (v))
#define STORE_LANES_F64(p, v, count) _mm512_mask_storeu_pd((p), (__mmask8) ((1u << (count)) - 1), (__m512d) (v))

/* dst[j * ldd + i] = src[i * lds + j] for a 16 x 16 block of float32: pairs of rows interleaved,
 * then quadruples within 128-bit lanes, then the 128-bit lanes exchanged twice. */
static inline void transpose_block_f32(const float* src, ptrdiff_t lds, float* dst, ptrdiff_t ldd)
{
    __m512 r[16], t[16], u[16];
    for (int i = 0; i < 16; i++)
        r[i] = _mm512_loadu_ps(src + i * lds);
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    /* u[4g + j], 128-bit lane L: rows 4g..4g+3 of column 4L + j. */
    for (int g = 0; g < 4; g++) {
        u[4 * g] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
        u[4 * g + 1] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], 0xEE);
        u[4 * g + 2] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
        u[4 * g + 3] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xEE);
    }
    for (int j = 0; j < 4; j++) {
        __m512 even01 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0x88);
        __m512 odd01 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0xDD);
        __m512 even23 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0x88);
        __m512 odd23 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0xDD);
        _mm512_storeu_ps(dst + j * ldd, _mm512_shuffle_f32x4(even01, even23, 0x88));
        _mm512_storeu_ps(dst + (8 + j) * ldd, _mm512_shuffle_f32x4(even01, even23, 0xDD));
        _mm512_storeu_ps(dst + (4 + j) * ldd, _mm512_shuffle_f32x4(odd01, odd23, 0x88));
        _mm512_storeu_ps(dst + (12 + j) * ldd, _mm512_shuffle_f32x4(odd01, odd23, 0xDD));
    }
}

/* The same for an 8 x 8 block of float64. */
static inline void transpose_block_f64(const double* src, ptrdiff_t lds, double* dst, ptrdiff_t ldd)
{
    __m512d r[8], t[8];
    for (int i = 0; i < 8; i++)
        r[i] = _mm512_loadu_pd(src + i * lds);
    /* t[2g + j], 128-bit lane L: rows 2g, 2g+1 of column 2L + j. */
    for (int g = 0; g < 4; g++) {
        t[2 * g] = _mm512_unpacklo_pd(r[2 * g], r[2 * g + 1]);
        t[2 * g + 1] = _mm512_unpackhi_pd(r[2 * g], r[2 * g + 1]);
    }
    for (int j = 0; j < 2; j++) {
        __m512d even01 = _mm512_shuffle_f64x2(t[j], t[2 + j], 0x88);
        __m512d odd01 = _mm512_shuffle_f64x2(t[j], t[2 + j], 0xDD);
        __m512d even23 = _mm512_shuffle_f64x2(t[4 + j], t[6 + j], 0x88);
        __m512d odd23 = _mm512_shuffle_f64x2(t[4 + j], t[6 + j], 0xDD);
        _mm512_storeu_pd(dst + j * ldd, _mm512_shuffle_f64x2(even01, even23, 0x88));
        _mm512_storeu_pd(dst + (4 + j) * ldd, _mm512_shuffle_f64x2(even01, even23, 0xDD));
        _mm512_storeu_pd(dst + (2 + j) * ldd, _mm512_shuffle_f64x2(odd01, odd23, 0x88));
        _mm512_storeu_pd(dst + (6 + j) * ldd, _mm512_shuffle_f64x2(odd01, odd23, 0xDD));
    }
}
#endif

/* The vector helpers are static inline: their vectors never cross a real call, so gcc's note that
 * such calls would depend on the target's vector ABI does not apply.  (gcc reports it when it
 * compiles the functions, at the end of the file, so it stays off from here on.) */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

#define REAL float
#define NAME(name) name##_f32
#ifdef __AVX512F__
#define KEEP_LANES KEEP_LANES_F32
#define TRANSPOSE_BLOCK transpose_block_f32
#define COPY_FIRST COPY_FIRST_F32
#define LOAD_LANES LOAD_LANES_F32
#define STORE_LANES STORE_LANES_F32
#endif
#include "gemm_tiles_impl.h"
#undef REAL
#undef NAME
#undef KEEP_LANES
#undef TRANSPOSE_BLOCK
#undef COPY_FIRST
#undef LOAD_LANES
#undef STORE_LANES

#define REAL double
#define NAME(name) name##_f64
#ifdef __AVX512F__
#define KEEP_LANES KEEP_LANES_F64
#define TRANSPOSE_BLOCK transpose_block_f64
#define COPY_FIRST COPY_FIRST_F64
#define LOAD_LANES LOAD_LANES_F64
#define STORE_LANES STORE_LANES_F64
#endif
#include "gemm_tiles_impl.h"
#undef REAL
#undef NAME
#undef KEEP_LANES
#undef TRANSPOSE_BLOCK
#undef COPY_FIRST
#undef LOAD_LANES
#undef STORE_LANES

#endif
