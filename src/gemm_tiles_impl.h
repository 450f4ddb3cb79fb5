/* One element type's tiles for gemm_tiles.h, which defines REAL (float or double) and NAME (appends
 * _f32 or _f64).  Do not include directly. */

typedef REAL NAME(gemm_vec) __attribute__((vector_size(CNNCY_GEMM_VECTOR_BYTES), aligned(sizeof(REAL)), may_alias));

#define LANES ((int) (CNNCY_GEMM_VECTOR_BYTES / sizeof(REAL)))

static inline __attribute__((always_inline)) NAME(gemm_vec) NAME(gemm_load)(const REAL* p) { return *(const NAME(gemm_vec)*) p; }

/* The loops over a tile's rows and vectors are unrolled (#pragma GCC unroll) so that the
 * accumulators are only ever indexed by constants: otherwise gcc keeps them in memory between
 * calls' start and end, which costs as much as a short k-loop.
 *
 * The accumulators of a tile of mr rows x nv vectors: C's values (accumulate), row_start[r]
 * (row_start not NULL) or 0.  Only the first rows x cols entries of C are read.  A partial tile goes
 * through a scratch array: indexing acc itself by a runtime lane would keep it out of registers. */
static inline __attribute__((always_inline)) void NAME(tile_start)(NAME(gemm_vec)* acc, int mr, int nv,
                                                                   const REAL* c, ptrdiff_t ldc, int rows,
                                                                   int cols, int accumulate, const REAL* row_start)
{
    if (!accumulate) {
        #pragma GCC unroll 32
        for (int r = 0; r < mr; r++)
            #pragma GCC unroll 32
            for (int v = 0; v < nv; v++)
                acc[r * nv + v] = (NAME(gemm_vec)){0} + (row_start ? row_start[r] : 0);
    } else if (rows == mr && cols == nv * LANES) {
        #pragma GCC unroll 32
        for (int r = 0; r < mr; r++)
            #pragma GCC unroll 32
            for (int v = 0; v < nv; v++)
                acc[r * nv + v] = NAME(gemm_load)(c + r * ldc + v * LANES);
    } else {
        REAL scratch[CNNCY_GEMM_TILE_VECTORS * LANES] = {0};
        for (int r = 0; r < rows && r < mr; r++)
            for (int j = 0; j < cols && j < nv * LANES; j++)
                scratch[r * nv * LANES + j] = c[r * ldc + j];
        #pragma GCC unroll 32
        for (int i = 0; i < mr * nv; i++)
            acc[i] = NAME(gemm_load)(scratch + i * LANES);
    }
}

/* Write the first rows x cols entries of the tile to C. */
static inline __attribute__((always_inline)) void NAME(tile_store)(const NAME(gemm_vec)* acc, int mr, int nv,
                                                                   REAL* c, ptrdiff_t ldc, int rows, int cols)
{
    if (rows == mr && cols == nv * LANES) {
        #pragma GCC unroll 32
        for (int r = 0; r < mr; r++)
            #pragma GCC unroll 32
            for (int v = 0; v < nv; v++)
                *(NAME(gemm_vec)*) (c + r * ldc + v * LANES) = acc[r * nv + v];
    } else {
        REAL scratch[CNNCY_GEMM_TILE_VECTORS * LANES];
        #pragma GCC unroll 32
        for (int i = 0; i < mr * nv; i++)
            *(NAME(gemm_vec)*) (scratch + i * LANES) = acc[i];
        for (int r = 0; r < rows && r < mr; r++)
            for (int j = 0; j < cols && j < nv * LANES; j++)
                c[r * ldc + j] = scratch[r * nv * LANES + j];
    }
}

/* Write the first `rows` rows of the tile to C, vector v of a row only in the lanes set in keep[v],
 * packed together from column dest[v] on: the compaction of a wide result (see tile_packed). */
static inline __attribute__((always_inline)) void NAME(tile_store_kept)(const NAME(gemm_vec)* acc, int mr, int nv,
                                                                        REAL* c, ptrdiff_t ldc, int rows,
                                                                        const unsigned* keep, const ptrdiff_t* dest)
{
    #pragma GCC unroll 32
    for (int r = 0; r < mr; r++)
        #pragma GCC unroll 32
        for (int v = 0; v < nv; v++) {
            NAME(gemm_vec) value = acc[r * nv + v];
            REAL* out = c + r * ldc + dest[v];
            if (r >= rows)
                continue;
#ifdef KEEP_LANES
            KEEP_LANES(out, keep[v], value);
#else
            int at = 0;
            for (int j = 0; j < LANES; j++)
                if (keep[v] >> j & 1)
                    out[at++] = value[j];
#endif
        }
}

/* C[r, j] (+)= sum over k < K of a[k * CNNCY_GEMM_MR + r] * b[b_off[k] + j], for r < rows and
 * j < cols, started from row_start[r] (if not NULL) unless accumulating.  The full tile is
 * computed: all CNNCY_GEMM_PACKED_VECTORS vectors of every b + b_off[k] must be readable (their
 * extra columns are dropped), and a holds CNNCY_GEMM_MR values per k.
 *
 * With keep not NULL (and no accumulate), the tile's columns are positions of a wide result, some
 * of which are dropped: vector v of each row keeps the lanes set in keep[v] and writes them side by
 * side from C column dest[v] on (cols is ignored). */
static inline void NAME(tile_packed)(ptrdiff_t K, const REAL* a, const REAL* b, const ptrdiff_t* b_off,
                                     const REAL* row_start, REAL* c, ptrdiff_t ldc, int rows, int cols,
                                     int accumulate, const unsigned* keep, const ptrdiff_t* dest)
{
    enum { MR = CNNCY_GEMM_MR, NV = CNNCY_GEMM_PACKED_VECTORS };
    NAME(gemm_vec) acc[MR * NV];
    NAME(tile_start)(acc, MR, NV, c, ldc, rows, cols, accumulate, row_start);
    for (ptrdiff_t k = 0; k < K; k++) {
        const REAL* bk = b + b_off[k];
        NAME(gemm_vec) bv[NV];
        #pragma GCC unroll 32
        for (int v = 0; v < NV; v++)
            bv[v] = NAME(gemm_load)(bk + v * LANES);
        #pragma GCC unroll 32
        for (int r = 0; r < MR; r++) {
            REAL av = a[k * MR + r];
            #pragma GCC unroll 32
            for (int v = 0; v < NV; v++)
                acc[r * NV + v] += av * bv[v];
        }
    }
    if (keep)
        NAME(tile_store_kept)(acc, MR, NV, c, ldc, rows, keep, dest);
    else
        NAME(tile_store)(acc, MR, NV, c, ldc, rows, cols);
}

/* tile_rows with nv vectors of columns (a constant once inlined). */
static inline __attribute__((always_inline)) void NAME(tile_rows_nv)(
    int nv, ptrdiff_t segments, ptrdiff_t seg_len, const REAL* a, const ptrdiff_t* a_off, ptrdiff_t a_seg,
    ptrdiff_t a_step, const REAL* b, ptrdiff_t ldb, REAL* c, ptrdiff_t ldc, int rows, int cols, int accumulate)
{
    enum { MR = CNNCY_GEMM_ROWS_MR };
    NAME(gemm_vec) acc[MR * 2];
    const REAL* a_row[MR];
    #pragma GCC unroll 32
    for (int r = 0; r < MR; r++)
        a_row[r] = a + a_off[r];
    NAME(tile_start)(acc, MR, nv, c, ldc, rows, cols, accumulate, NULL);
    for (ptrdiff_t s = 0; s < segments; s++) {
        const REAL* bs = b + s * seg_len * ldb;
        ptrdiff_t at = s * a_seg;
        for (ptrdiff_t t = 0; t < seg_len; t++, at += a_step) {
            NAME(gemm_vec) bv[2];
            #pragma GCC unroll 32
            for (int v = 0; v < nv; v++)
                bv[v] = NAME(gemm_load)(bs + t * ldb + v * LANES);
            #pragma GCC unroll 32
            for (int r = 0; r < MR; r++) {
                REAL av = a_row[r][at];
                #pragma GCC unroll 32
                for (int v = 0; v < nv; v++)
                    acc[r * nv + v] += av * bv[v];
            }
        }
    }
    NAME(tile_store)(acc, MR, nv, c, ldc, rows, cols);
}

/* C[r, j] (+)= sum over segments s and t < seg_len of
 *     a[a_off[r] + s * a_seg + t * a_step] * b[(s * seg_len + t) * ldb + j]
 * for r < rows and j < cols <= 2 vectors.  Every row r < CNNCY_GEMM_ROWS_MR is read (point the rows
 * past `rows` at a real one), and b's rows are read for whole vectors (1 when cols fits in one). */
static inline void NAME(tile_rows)(ptrdiff_t segments, ptrdiff_t seg_len, const REAL* a, const ptrdiff_t* a_off,
                                   ptrdiff_t a_seg, ptrdiff_t a_step, const REAL* b, ptrdiff_t ldb, REAL* c,
                                   ptrdiff_t ldc, int rows, int cols, int accumulate)
{
    if (cols <= LANES)
        NAME(tile_rows_nv)(1, segments, seg_len, a, a_off, a_seg, a_step, b, ldb, c, ldc, rows, cols, accumulate);
    else
        NAME(tile_rows_nv)(2, segments, seg_len, a, a_off, a_seg, a_step, b, ldb, c, ldc, rows, cols, accumulate);
}

/* dst[i * ldd + j] = src[i * lds + j] for i < rows, j < cols: short rows (an image's), whole vectors
 * and a masked tail where AVX-512 has them, rather than a memcpy call per row. */
static inline void NAME(copy_rows)(const REAL* src, ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t lds, REAL* dst,
                                   ptrdiff_t ldd)
{
    for (ptrdiff_t i = 0; i < rows; i++) {
        const REAL* s = src + i * lds;
        REAL* d = dst + i * ldd;
        ptrdiff_t j = 0;
        for (; j + LANES <= cols; j += LANES)
            *(NAME(gemm_vec)*) (d + j) = NAME(gemm_load)(s + j);
#ifdef COPY_FIRST
        if (j < cols)
            COPY_FIRST(d + j, s + j, (int) (cols - j));
#else
        for (; j < cols; j++)
            d[j] = s[j];
#endif
    }
}

/* lanes [lo, hi) of p (clipped to a vector), zeros elsewhere; only those lanes are read. */
static inline __attribute__((always_inline)) NAME(gemm_vec) NAME(load_lanes)(const REAL* p, ptrdiff_t lo, ptrdiff_t hi)
{
    lo = lo < 0 ? 0 : lo;
    hi = hi > LANES ? LANES : hi;
#ifdef LOAD_LANES
    if (lo >= hi)
        return (NAME(gemm_vec)){0};
    return LOAD_LANES(p, lo, hi);
#else
    NAME(gemm_vec) v = {0};
    for (ptrdiff_t j = lo; j < hi; j++)
        v[j] = p[j];
    return v;
#endif
}

/* One panel of col2im at stride 1: for each of `rows` kernel rows t (one (c, kh) each, KW taps
 * whose panel rows follow one another, ld apart), image[row_off[t] + j] += the sum over kw < KW of
 * panel[(t * KW + kw) * ld + j - kw], for j < span.  Panel rows are read from KW - 1 before their
 * start to a vector past span: the caller keeps zeros there.  The KW taps are summed in
 * registers, so each image entry is read and written once per kernel row: adding them one by one
 * would reload entries that the previous tap has just stored one element off, which stalls store
 * forwarding. */
static inline void NAME(col2im_panel)(const REAL* panel, ptrdiff_t ld, ptrdiff_t rows, ptrdiff_t KW,
                                      ptrdiff_t span, REAL* image, const ptrdiff_t* row_off)
{
    for (ptrdiff_t t = 0; t < rows; t++) {
        REAL* out = image + row_off[t];
        const REAL* taps = panel + t * KW * ld;
        ptrdiff_t j0 = 0;
        for (; j0 + LANES <= span; j0 += LANES) {
            NAME(gemm_vec) acc = NAME(gemm_load)(out + j0);
            for (ptrdiff_t kw = 0; kw < KW; kw++)
                acc += NAME(gemm_load)(taps + kw * ld + j0 - kw);
            *(NAME(gemm_vec)*) (out + j0) = acc;
        }
        if (j0 < span) {
            NAME(gemm_vec) acc = NAME(load_lanes)(out + j0, 0, span - j0);
            for (ptrdiff_t kw = 0; kw < KW; kw++)
                acc += NAME(gemm_load)(taps + kw * ld + j0 - kw);
#ifdef STORE_LANES
            STORE_LANES(out + j0, acc, span - j0);
#else
            for (ptrdiff_t j = 0; j0 + j < span; j++)
                out[j0 + j] = acc[j];
#endif
        }
    }
}

/* dst[j * ldd + i] = src[i * lds + j] for i < rows, j < cols. */
static inline void NAME(transpose)(const REAL* src, ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t lds, REAL* dst,
                                   ptrdiff_t ldd)
{
    ptrdiff_t i0 = 0;
#ifdef TRANSPOSE_BLOCK
    ptrdiff_t j0 = 0;
    for (; i0 + LANES <= rows; i0 += LANES)
        for (j0 = 0; j0 + LANES <= cols; j0 += LANES)
            TRANSPOSE_BLOCK(src + i0 * lds + j0, lds, dst + j0 * ldd + i0, ldd);
    /* The rest: the last columns of the blocked rows, then the last rows. */
    for (ptrdiff_t i = 0; i < i0; i++)
        for (ptrdiff_t j = j0; j < cols; j++)
            dst[j * ldd + i] = src[i * lds + j];
#endif
    for (ptrdiff_t i = i0; i < rows; i++)
        for (ptrdiff_t j = 0; j < cols; j++)
            dst[j * ldd + i] = src[i * lds + j];
}

#undef LANES
