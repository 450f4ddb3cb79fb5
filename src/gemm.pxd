# Matrix-product building blocks for conv and linear, over raw row-major pointers.
#
# The register tiles are in gemm_tiles.h (see there why they are C):
#   tile_packed: a GEMM_MR x packed_cols() tile; A packed by pack_a, B row k read at b + b_off[k].
#   tile_rows:   a GEMM_ROWS_MR x (up to 2 vectors) tile; A rows read in place at a + a_off[r],
#                the sum over k in segments (image rows); B rows plain.
# and the vector helpers that conv needs around them: copy_rows, col2im_panel, transpose.
# On top of them, `gemm` is a serial general product with A packed and B strided any way; it
# packs a B panel only when B's columns are not contiguous or the panel is partial.  Callers
# parallelise over fixed pieces of work, so every C entry is one sum in a fixed order (over k in
# increasing order, started from C or 0) whatever the thread count.
from cython cimport floating

cdef extern from "gemm_tiles.h":
    enum:
        GEMM_MR "CNNCY_GEMM_MR"
        GEMM_ROWS_MR "CNNCY_GEMM_ROWS_MR"
        GEMM_VECTOR_BYTES "CNNCY_GEMM_VECTOR_BYTES"
        GEMM_PACKED_VECTORS "CNNCY_GEMM_PACKED_VECTORS"
    void tile_packed_f32(Py_ssize_t K, const float* a, const float* b, const Py_ssize_t* b_off,
                         const float* row_start, float* c, Py_ssize_t ldc, int rows, int cols,
                         int accumulate, const unsigned* keep, const Py_ssize_t* dest) noexcept nogil
    void tile_packed_f64(Py_ssize_t K, const double* a, const double* b, const Py_ssize_t* b_off,
                         const double* row_start, double* c, Py_ssize_t ldc, int rows, int cols,
                         int accumulate, const unsigned* keep, const Py_ssize_t* dest) noexcept nogil
    void tile_rows_f32(Py_ssize_t segments, Py_ssize_t seg_len, const float* a, const Py_ssize_t* a_off,
                       Py_ssize_t a_seg, Py_ssize_t a_step, const float* b, Py_ssize_t ldb, float* c,
                       Py_ssize_t ldc, int rows, int cols, int accumulate) noexcept nogil
    void tile_rows_f64(Py_ssize_t segments, Py_ssize_t seg_len, const double* a, const Py_ssize_t* a_off,
                       Py_ssize_t a_seg, Py_ssize_t a_step, const double* b, Py_ssize_t ldb, double* c,
                       Py_ssize_t ldc, int rows, int cols, int accumulate) noexcept nogil
    void copy_rows_f32(const float* src, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t lds, float* dst,
                       Py_ssize_t ldd) noexcept nogil
    void copy_rows_f64(const double* src, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t lds, double* dst,
                       Py_ssize_t ldd) noexcept nogil
    void col2im_panel_f32(const float* panel, Py_ssize_t ld, Py_ssize_t rows, Py_ssize_t KW, Py_ssize_t span,
                          float* image, const Py_ssize_t* row_off) noexcept nogil
    void col2im_panel_f64(const double* panel, Py_ssize_t ld, Py_ssize_t rows, Py_ssize_t KW,
                          Py_ssize_t span, double* image, const Py_ssize_t* row_off) noexcept nogil
    void transpose_f32(const float* src, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t lds, float* dst,
                       Py_ssize_t ldd) noexcept nogil
    void transpose_f64(const double* src, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t lds, double* dst,
                       Py_ssize_t ldd) noexcept nogil

cdef enum:
    GEMM_KC = 128        # k-block of `gemm`: bounds its packed B panel (on the stack)
    GEMM_MAX_LANES = 16  # float32 lanes of the widest vector: sizes buffers for any target and type


cdef inline Py_ssize_t lanes(floating* dtype) noexcept nogil:
    """Elements of `floating` in one vector (the argument only picks the type)."""
    return GEMM_VECTOR_BYTES // sizeof(floating)


cdef inline Py_ssize_t packed_cols(floating* dtype) noexcept nogil:
    """Columns of a tile_packed tile."""
    return GEMM_PACKED_VECTORS * lanes(dtype)


cdef inline Py_ssize_t round_up(Py_ssize_t n, Py_ssize_t multiple) noexcept nogil:
    return (n + multiple - 1) // multiple * multiple


cdef inline void tile_packed(Py_ssize_t K, const floating* a, const floating* b, const Py_ssize_t* b_off,
                             const floating* row_start, floating* c, Py_ssize_t ldc, Py_ssize_t rows,
                             Py_ssize_t cols, bint accumulate, const unsigned* keep=NULL,
                             const Py_ssize_t* dest=NULL) noexcept nogil:
    if floating is float:
        tile_packed_f32(K, a, b, b_off, row_start, c, ldc, <int> rows, <int> cols, accumulate, keep, dest)
    else:
        tile_packed_f64(K, a, b, b_off, row_start, c, ldc, <int> rows, <int> cols, accumulate, keep, dest)


cdef inline void tile_rows(Py_ssize_t segments, Py_ssize_t seg_len, const floating* a, const Py_ssize_t* a_off,
                           Py_ssize_t a_seg, Py_ssize_t a_step, const floating* b, Py_ssize_t ldb,
                           floating* c, Py_ssize_t ldc, Py_ssize_t rows, Py_ssize_t cols,
                           bint accumulate) noexcept nogil:
    if floating is float:
        tile_rows_f32(segments, seg_len, a, a_off, a_seg, a_step, b, ldb, c, ldc, <int> rows, <int> cols,
                      accumulate)
    else:
        tile_rows_f64(segments, seg_len, a, a_off, a_seg, a_step, b, ldb, c, ldc, <int> rows, <int> cols,
                      accumulate)


cdef inline void transpose(const floating* src, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t lds,
                           floating* dst, Py_ssize_t ldd) noexcept nogil:
    """dst[j * ldd + i] = src[i * lds + j] for i < rows, j < cols (vector blocks where AVX-512 has them)."""
    if floating is float:
        transpose_f32(src, rows, cols, lds, dst, ldd)
    else:
        transpose_f64(src, rows, cols, lds, dst, ldd)


cdef inline void copy_rows(const floating* src, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t lds,
                           floating* dst, Py_ssize_t ldd) noexcept nogil:
    """dst[i * ldd + j] = src[i * lds + j] for i < rows, j < cols (short rows: no memcpy call per row)."""
    if floating is float:
        copy_rows_f32(src, rows, cols, lds, dst, ldd)
    else:
        copy_rows_f64(src, rows, cols, lds, dst, ldd)


cdef inline void col2im_panel(const floating* panel, Py_ssize_t ld, Py_ssize_t rows, Py_ssize_t KW,
                              Py_ssize_t span, floating* image, const Py_ssize_t* row_off) noexcept nogil:
    """Add a panel of gcol back onto `span` entries of each kernel row of the image (gemm_tiles.h)."""
    if floating is float:
        col2im_panel_f32(panel, ld, rows, KW, span, image, row_off)
    else:
        col2im_panel_f64(panel, ld, rows, KW, span, image, row_off)


cdef inline Py_ssize_t packed_a_size(Py_ssize_t M, Py_ssize_t K) noexcept nogil:
    """Elements that pack_a writes for an M x K matrix."""
    return round_up(M, GEMM_MR) * K


cdef inline void pack_a(Py_ssize_t M, Py_ssize_t K, const floating* A, Py_ssize_t a_row, Py_ssize_t a_col,
                        floating* packed) noexcept nogil:
    """Pack A(i, k) = A[i * a_row + k * a_col] for tile_packed: each GEMM_MR rows become a
    [K][GEMM_MR] block (rows past M are zeros), the blocks one after another."""
    cdef Py_ssize_t ib, i0, k, r
    cdef floating* block
    for ib in range((M + GEMM_MR - 1) // GEMM_MR):
        i0 = ib * GEMM_MR
        block = packed + i0 * K
        for k in range(K):
            for r in range(GEMM_MR):
                block[k * GEMM_MR + r] = A[(i0 + r) * a_row + k * a_col] if i0 + r < M else 0


cdef inline void gemm(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const floating* a_packed,
                      const floating* B, Py_ssize_t b_row, Py_ssize_t b_col,
                      floating* C, Py_ssize_t ldc, bint accumulate) noexcept nogil:
    """C[M, N] (+)= A @ B for A packed by pack_a (M x K) and B(k, j) = B[k * b_row + j * b_col]."""
    cdef floating b_pack[GEMM_KC * GEMM_PACKED_VECTORS * GEMM_MAX_LANES]
    cdef Py_ssize_t in_place_off[GEMM_KC]
    cdef Py_ssize_t packed_off[GEMM_KC]
    cdef Py_ssize_t nr_max = packed_cols(<floating*> NULL)
    cdef Py_ssize_t kb, jb, ib, k0, kc, j0, nr, i0, k, j
    cdef bint in_place
    cdef const floating* b_panel
    cdef const Py_ssize_t* b_off
    if K == 0:
        if not accumulate:
            for i0 in range(M):
                for j in range(N):
                    C[i0 * ldc + j] = 0
        return
    for k in range(GEMM_KC):
        packed_off[k] = k * nr_max
    for kb in range((K + GEMM_KC - 1) // GEMM_KC):
        k0 = kb * GEMM_KC
        kc = min(<Py_ssize_t> GEMM_KC, K - k0)
        for k in range(kc):
            in_place_off[k] = (k0 + k) * b_row
        for jb in range((N + nr_max - 1) // nr_max):
            j0 = jb * nr_max
            nr = min(nr_max, N - j0)
            # A full panel of contiguous columns is read in place; any other is copied, zero-padded.
            in_place = b_col == 1 and nr == nr_max
            if in_place:
                b_panel, b_off = B + j0, in_place_off
            else:
                for k in range(kc):
                    for j in range(nr_max):
                        b_pack[k * nr_max + j] = B[(k0 + k) * b_row + (j0 + j) * b_col] if j < nr else 0
                b_panel, b_off = b_pack, packed_off
            for ib in range((M + GEMM_MR - 1) // GEMM_MR):
                i0 = ib * GEMM_MR
                tile_packed(kc, a_packed + i0 * K + k0 * GEMM_MR, b_panel, b_off, NULL, C + i0 * ldc + j0, ldc,
                            min(<Py_ssize_t> GEMM_MR, M - i0), nr, accumulate or k0 > 0)
