"""Fully connected layer kernels: out = x @ weight^T + bias, and its gradients.

    forward:      out[N, O]    = x[N, I] @ weight[O, I]^T (+ bias)
    grad_input:   grad_x[N, I] = grad_out[N, O] @ weight[O, I]
    grad_weight:  grad_w[O, I] = grad_out[N, O]^T @ x[N, I]
    grad_bias:    grad_b[O]    = sum over n of grad_out[n, :]

Each product runs in parallel over fixed tiles of its output.  Every output
entry is a complete sum in a fixed order computed by one thread (gemm.pxd sums
over k in increasing order whatever the tiling), so the result does not depend
on the thread count.  The Python layer validates shapes and hands in
C-contiguous arrays.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.stdlib cimport free, malloc

from gemm cimport gemm_nn, gemm_nt, gemm_tile_use, gemm_tn

cdef extern from "linear_blocks.h":
    enum:
        DOT_ROWS "CNNCY_DOT_ROWS"
        DOT_COLS "CNNCY_DOT_COLS"
    void dot_tile_f32(const float* A, Py_ssize_t lda, int rows, const float* B, Py_ssize_t ldb, int cols,
                      Py_ssize_t K, float* C, Py_ssize_t ldc) noexcept nogil
    void dot_tile_f64(const double* A, Py_ssize_t lda, int rows, const double* B, Py_ssize_t ldb, int cols,
                      Py_ssize_t K, double* C, Py_ssize_t ldc) noexcept nogil

# Below this many multiply-adds a parallel region costs more than it saves.
cdef Py_ssize_t PARALLEL_MIN_WORK = 1 << 16
# From this many input features on, the forward's dot products run as dot_tiles: their final
# sums across vector lanes cost little next to the long rows, and they need no padding however
# few the rows or outputs (a SimpleCNN head: 1-64 rows of 6272 features, 10 outputs: 3-6x faster
# than the gemm tiles).  Shorter rows keep the gemm tiles, which sum without lane reductions.
cdef Py_ssize_t DOT_TILES_MIN_FEATURES = 1024
# Output tile handed to one thread (multiples of gemm's register tile).
cdef Py_ssize_t TILE_ROWS = 32
cdef Py_ssize_t TILE_COLS = 128

cdef enum Variant:
    NN
    TN
    NT


cdef void tiled_gemm(Variant variant, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                     const floating* A, Py_ssize_t lda, const floating* B, Py_ssize_t ldb,
                     floating* C, Py_ssize_t ldc, int num_threads) noexcept nogil:
    """C = op(A) @ op(B), one output tile per task."""
    cdef Py_ssize_t row_tiles = (M + TILE_ROWS - 1) // TILE_ROWS
    cdef Py_ssize_t col_tiles = (N + TILE_COLS - 1) // TILE_COLS
    cdef Py_ssize_t tile, i0, j0, rows, cols
    cdef int threads = num_threads if M * N * K >= PARALLEL_MIN_WORK else 1
    for tile in prange(row_tiles * col_tiles, schedule="static", num_threads=threads):
        i0 = (tile // col_tiles) * TILE_ROWS
        j0 = (tile % col_tiles) * TILE_COLS
        rows = min(TILE_ROWS, M - i0)
        cols = min(TILE_COLS, N - j0)
        if variant == NN:
            gemm_nn(rows, cols, K, A + i0 * lda, lda, B + j0, ldb, C + i0 * ldc + j0, ldc, False)
        elif variant == TN:
            gemm_tn(rows, cols, K, A + i0, lda, B + j0, ldb, C + i0 * ldc + j0, ldc, False)
        else:
            gemm_nt(rows, cols, K, A + i0 * lda, lda, B + j0 * ldb, ldb, C + i0 * ldc + j0, ldc, False)


cdef void dot_tiles(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const floating* A, const floating* B,
                    floating* C, int num_threads) noexcept nogil:
    """C[M, N] = A[M, K] @ B[N, K]^T, one register tile of dot products (linear_blocks.h) per task."""
    cdef Py_ssize_t col_tiles = (N + DOT_COLS - 1) // DOT_COLS
    cdef Py_ssize_t tiles = (M + DOT_ROWS - 1) // DOT_ROWS * col_tiles
    cdef Py_ssize_t tile, i0, j0
    cdef int threads = num_threads if M * N * K >= PARALLEL_MIN_WORK else 1
    for tile in prange(tiles, schedule="static", num_threads=threads):
        i0 = tile // col_tiles * DOT_ROWS
        j0 = tile % col_tiles * DOT_COLS
        if floating is float:
            dot_tile_f32(A + i0 * K, K, min(DOT_ROWS, M - i0), B + j0 * K, K, min(DOT_COLS, N - j0), K,
                         C + i0 * N + j0, N)
        else:
            dot_tile_f64(A + i0 * K, K, min(DOT_ROWS, M - i0), B + j0 * K, K, min(DOT_COLS, N - j0), K,
                         C + i0 * N + j0, N)


def linear_forward(const floating[:, ::1] x, const floating[:, ::1] weight,
                   const floating[::1] bias, floating[:, ::1] out, int num_threads):
    """out = x @ weight^T + bias; bias may be None.

    Long rows run as dot_tiles.  Otherwise, with few output features (a classifier head) most
    of gemm's register tile would be padding, so out^T = weight @ x^T is computed instead and
    transposed: the same numbers.
    """
    cdef Py_ssize_t N = x.shape[0], I = x.shape[1], O = weight.shape[0]
    cdef Py_ssize_t n, o
    cdef bint has_bias = bias is not None
    cdef bint dot_rows = I >= DOT_TILES_MIN_FEATURES
    cdef bint transposed = not dot_rows and gemm_tile_use(O, N) > gemm_tile_use(N, O)
    cdef floating* out_t = NULL
    if transposed:
        out_t = <floating*> malloc(O * N * sizeof(floating))
        if out_t == NULL:
            raise MemoryError("linear_forward: could not allocate the output buffer")
    with nogil:
        if dot_rows:
            if N > 0 and O > 0:
                dot_tiles(N, O, I, &x[0, 0], &weight[0, 0], &out[0, 0], num_threads)
        elif transposed:
            tiled_gemm(NT, O, N, I, &weight[0, 0], I, &x[0, 0], I, out_t, N, num_threads)
            for n in range(N):
                for o in range(O):
                    out[n, o] = out_t[o * N + n]
            free(out_t)
        else:
            tiled_gemm(NT, N, O, I, &x[0, 0], I, &weight[0, 0], I, &out[0, 0], O, num_threads)
        if has_bias:
            for n in range(N):
                for o in range(O):
                    out[n, o] += bias[o]


def linear_backward(const floating[:, ::1] x, const floating[:, ::1] weight,
                    const floating[:, ::1] grad_out, floating[:, ::1] grad_x,
                    floating[:, ::1] grad_weight, floating[::1] grad_bias, int num_threads):
    """Write the gradients of linear; grad_x and grad_bias may be None (not wanted)."""
    cdef Py_ssize_t N = x.shape[0], I = x.shape[1], O = weight.shape[0]
    cdef Py_ssize_t n, o
    cdef bint want_grad_x = grad_x is not None
    cdef bint want_grad_bias = grad_bias is not None
    # An empty sum (N == 0 or O == 0) makes gemm write zeros, as torch does.
    with nogil:
        if want_grad_bias:
            for o in range(O):
                grad_bias[o] = 0
            for n in range(N):
                for o in range(O):
                    grad_bias[o] += grad_out[n, o]
        if want_grad_x:
            tiled_gemm(NN, N, I, O, &grad_out[0, 0], O, &weight[0, 0], I, &grad_x[0, 0], I, num_threads)
        tiled_gemm(TN, O, I, N, &grad_out[0, 0], O, &x[0, 0], I, &grad_weight[0, 0], I, num_threads)
