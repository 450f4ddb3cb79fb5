"""Fully connected layer kernels: out = x @ weight^T + bias, and its gradients.

    forward:      out[N, O]    = x[N, I] @ weight[O, I]^T (+ bias)
    grad_input:   grad_x[N, I] = grad_out[N, O] @ weight[O, I]
    grad_weight:  grad_w[O, I] = grad_out[N, O]^T @ x[N, I]
    grad_bias:    grad_b[O]    = sum over n of grad_out[n, :]

Every product runs on the register tiles of gemm.pxd, in parallel over fixed tiles of its
output.  Every output entry is a complete sum in a fixed order computed by one thread, so the
result does not depend on the thread count.  The Python layer validates shapes and hands in
C-contiguous arrays.
"""
cimport numpy as cnp
from cython cimport floating
from cython.parallel cimport parallel, prange, threadid
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memset

from arrays cimport array_arg, data, dim, float64_call, numpy_type, optional_arg, shape_error

from gemm cimport (GEMM_MR, GEMM_ROWS_MR, copy_rows, gemm, lanes, pack_a, packed_a_size, packed_cols, round_up,
                   tile_rows, transpose)

cnp.import_array()

cdef extern from "linear_blocks.h":
    enum:
        DOT_ROWS "CNNCY_DOT_ROWS"
        DOT_COLS "CNNCY_DOT_COLS"
    void dot_tile_f32(const float* A, Py_ssize_t lda, int rows, const float* B, Py_ssize_t ldb, int cols,
                      Py_ssize_t K, float* C, Py_ssize_t ldc) noexcept nogil
    void dot_tile_f64(const double* A, Py_ssize_t lda, int rows, const double* B, Py_ssize_t ldb, int cols,
                      Py_ssize_t K, double* C, Py_ssize_t ldc) noexcept nogil

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    static int cnncy_team_size(void) { return omp_get_num_threads(); }
    static void cnncy_barrier(void) {
        #pragma omp barrier
    }
    #else
    static int cnncy_team_size(void) { return 1; }
    static void cnncy_barrier(void) {}
    #endif
    """
    int cnncy_team_size() noexcept nogil  # threads in the current parallel region
    void cnncy_barrier() noexcept nogil  # every thread of the current region waits here for the others

# Below this many multiply-adds (about 2 us) a parallel region costs more than it saves, when the
# team is awake (cnncy._openmp_env).  LeNet's 120 -> 84 layer at batch 64 (0.65 M), two threads:
# forward 10 -> 8 us, backward 18.5 -> 14 us; and its worker stays awake for the next layer.
cdef Py_ssize_t PARALLEL_MIN_WORK = 1 << 18
# With at most this many rows (samples), both gradients are a few scaled sums of long rows, which
# plain streaming loops compute faster than packing for the gemm tiles (SimpleCNN's head, one
# thread: 25 -> 8 us at batch 1, 40 -> 21 us at batch 4; from 8 rows on the tiles win).
cdef Py_ssize_t FEW_ROWS = 4
# Those streamed sums, and the dot_tiles forward, are memory-bound passes over the weight that two
# cores' caches share well: they go parallel from this many multiply-adds on (SimpleCNN's head at
# batch 1 is 62,720).
cdef Py_ssize_t STREAM_PARALLEL_MIN_WORK = 1 << 15
# Columns of the few-rows gradients per parallel task.
cdef Py_ssize_t FEW_ROWS_COLUMNS = 512
# From this many input features on, a forward with few outputs runs as dot_tiles: their final
# sums across vector lanes cost little next to the long rows, and they need no padding however few
# the rows or outputs (a SimpleCNN head: 1-64 rows of 6272 features, 10 outputs: 3-6x faster than
# the gemm tiles).
cdef Py_ssize_t LONG_ROW_FEATURES = 1024
# From this many input features and outputs on, the forward runs over the rows of weight in place
# (rows_forward), its transposed copy of x made in parallel, instead of packing weight and
# transposing x serially for the gemm tiles.  LeNet's 400 -> 120 layer at batch 64, one / two
# threads: 40 / 31 us -> 29 / 19 us; at batch 1 and 4 10-13% faster.  Below 256 features (120 -> 84,
# 84 -> 10) the gemm tiles stay ahead at small batches.
cdef Py_ssize_t ROWS_FORWARD_MIN_FEATURES = 256
cdef Py_ssize_t ROWS_FORWARD_MIN_OUTPUTS = 32
# rows_forward's k-block: a block of x^T (ROWS_KC x N) stays in cache for every tile of weight rows.
cdef Py_ssize_t ROWS_KC = 512
# Output tile handed to one thread by `tiled_product` (multiples of gemm's register tile).
cdef Py_ssize_t TILE_ROWS = 64
cdef Py_ssize_t TILE_COLS = 192
# A weight gradient with at most GEMM_ROWS_MR outputs (a classifier head) and at least this many
# features runs as head_backward: one tile_rows tile covers every output, where gemm's packed
# tiles pad 10 outputs to 16 rows.
cdef Py_ssize_t HEAD_MIN_FEATURES = 1024


cdef inline int team(Py_ssize_t work, int num_threads) noexcept nogil:
    return num_threads if work >= PARALLEL_MIN_WORK else 1


cdef inline double tile_use(Py_ssize_t M, Py_ssize_t N, Py_ssize_t tile_cols) noexcept nogil:
    """The share of the register tiles' arithmetic that is real work for an M x N product."""
    cdef Py_ssize_t padded = round_up(M, GEMM_MR) * round_up(N, tile_cols)
    return 1.0 if padded == 0 else <double> (M * N) / <double> padded


cdef void tile_shape(floating* dtype, Py_ssize_t M, Py_ssize_t N, int threads, bint batch_rows,
                     Py_ssize_t* tile_rows_out, Py_ssize_t* tile_cols_out) noexcept nogil:
    """The output tile that `product` hands to one task: TILE_ROWS x TILE_COLS, halved (down to one
    register tile) while there are fewer than four tasks per thread (two left LeNet's 64 x 400
    input gradient in 5 tiles, 3 on one thread and 2 on the other; its backward at two threads
    37 -> 34 us).  Every C entry is the same sum whatever the tiles.

    batch_rows: C's rows are samples (an input gradient).  Then each thread gets one band of rows,
    the samples whose activations it computed (the other kernels split the batch the same way) and
    whose gradients it goes on with: on this VM the two cores sometimes share no cache, and
    SimpleCNN's step at two threads then took 600 us with column tiles, 550 with bands."""
    cdef Py_ssize_t nr = packed_cols(dtype)
    cdef Py_ssize_t tile_rows = TILE_ROWS, tile_cols = TILE_COLS
    if batch_rows and threads > 1 and M >= threads * GEMM_MR:
        tile_rows = round_up((M + threads - 1) // threads, GEMM_MR)
    while threads > 1 and ((M + tile_rows - 1) // tile_rows) * ((N + tile_cols - 1) // tile_cols) < 4 * threads:
        if tile_cols > nr:
            tile_cols = round_up(tile_cols // 2, nr)
        elif tile_rows > GEMM_MR and not batch_rows:
            tile_rows = round_up(tile_rows // 2, GEMM_MR)
        else:
            break
    tile_rows_out[0] = tile_rows
    tile_cols_out[0] = tile_cols


cdef inline void product_tile(Py_ssize_t tile, Py_ssize_t col_tiles, Py_ssize_t tile_rows, Py_ssize_t tile_cols,
                              Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const floating* a_packed,
                              const floating* B, Py_ssize_t b_row, Py_ssize_t b_col, floating* C) noexcept nogil:
    """Output tile `tile` of product (tiles numbered row by row)."""
    cdef Py_ssize_t i0 = tile // col_tiles * tile_rows
    cdef Py_ssize_t j0 = tile % col_tiles * tile_cols
    gemm(min(tile_rows, M - i0), min(tile_cols, N - j0), K, a_packed + i0 * K, B + j0 * b_col, b_row,
         b_col, C + i0 * N + j0, N, False)


cdef void prepare_share(int member, int team_size, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const floating* A,
                        Py_ssize_t a_row, Py_ssize_t a_col, const floating* B, Py_ssize_t b_col,
                        floating* a_packed, floating* b_rows) noexcept nogil:
    """Team member `member`'s share of product's operands: blocks of GEMM_MR rows of A packed, and
    (when b_rows is not NULL) blocks of 16 columns of B written as rows of b_rows."""
    cdef Py_ssize_t blocks = (M + GEMM_MR - 1) // GEMM_MR
    cdef Py_ssize_t b0 = blocks * member // team_size, b1 = blocks * (member + 1) // team_size
    cdef Py_ssize_t column_blocks, c0, c1
    if b1 > b0:
        pack_a(min(b1 * GEMM_MR, M) - b0 * GEMM_MR, K, A + b0 * GEMM_MR * a_row, a_row, a_col,
               a_packed + b0 * GEMM_MR * K)
    if b_rows != NULL:
        # B(k, j) = B[k + j * b_col]: its column j is row j of a row-major matrix; b_rows[k, j].
        column_blocks = (N + 15) // 16
        c0 = column_blocks * member // team_size * 16
        c1 = min(column_blocks * (member + 1) // team_size * 16, N)
        if c1 > c0:
            transpose(B + c0 * b_col, c1 - c0, K, b_col, b_rows + c0, N)


cdef bint product(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const floating* A, Py_ssize_t a_row,
                  Py_ssize_t a_col, const floating* B, Py_ssize_t b_row, Py_ssize_t b_col, floating* C,
                  int num_threads, bint batch_rows=False) noexcept nogil:
    """C[M, N] = A @ B for A(i, k) = A[i * a_row + k * a_col], likewise B; False if out of memory.

    One parallel region: the team packs A and (below) transposes B in shares, then computes the
    output tiles (tile_shape; batch_rows: see there).  Packing serially before the region left
    LeNet's 400 -> 120 and 120 -> 84 layers a serial part that two threads could not shorten."""
    cdef floating* a_packed = <floating*> malloc(max(packed_a_size(M, K), 1) * sizeof(floating))
    cdef floating* b_rows = NULL
    cdef const floating* tile_b = B  # what the tiles read as B: B, or its rows made contiguous
    cdef Py_ssize_t tile_b_row = b_row, tile_b_col = b_col
    cdef int threads = team(M * N * K, num_threads)
    cdef Py_ssize_t tile_rows, tile_cols, row_tiles, col_tiles, tile
    if a_packed == NULL:
        return False
    if b_col != 1 and b_row == 1 and N > 1:
        # B is the transpose of a row-major matrix (the forward's x^T or weight^T).  gemm would
        # gather each panel's columns element by element, once per tile; one vectorised
        # transpose makes B's rows contiguous for every tile (LeNet's 400 -> 120 layer at batch
        # 64, one thread: 63 -> 42 us).
        b_rows = <floating*> malloc(K * N * sizeof(floating))
        if b_rows == NULL:
            free(a_packed)
            return False
        tile_b, tile_b_row, tile_b_col = b_rows, N, 1
    tile_shape(<floating*> NULL, M, N, threads, batch_rows, &tile_rows, &tile_cols)
    row_tiles = (M + tile_rows - 1) // tile_rows
    col_tiles = (N + tile_cols - 1) // tile_cols
    if threads == 1:  # no parallel region (one costs ~0.7 us even for one thread)
        prepare_share(0, 1, M, N, K, A, a_row, a_col, B, b_col, a_packed, b_rows)
        for tile in range(row_tiles * col_tiles):
            product_tile(tile, col_tiles, tile_rows, tile_cols, M, N, K, a_packed, tile_b, tile_b_row, tile_b_col, C)
    else:
        with parallel(num_threads=threads):
            prepare_share(threadid(), cnncy_team_size(), M, N, K, A, a_row, a_col, B, b_col, a_packed, b_rows)
            cnncy_barrier()
            for tile in prange(row_tiles * col_tiles, schedule="static"):
                product_tile(tile, col_tiles, tile_rows, tile_cols, M, N, K, a_packed, tile_b, tile_b_row,
                             tile_b_col, C)
    free(a_packed)
    free(b_rows)
    return True


cdef void dot_tiles(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const floating* A, const floating* B,
                    floating* C, int num_threads) noexcept nogil:
    """C[M, N] = A[M, K] @ B[N, K]^T, one register tile of dot products (linear_blocks.h) per task."""
    cdef Py_ssize_t col_tiles = (N + DOT_COLS - 1) // DOT_COLS
    cdef Py_ssize_t tiles = (M + DOT_ROWS - 1) // DOT_ROWS * col_tiles
    cdef Py_ssize_t tile
    cdef int threads = num_threads if M * N * K >= STREAM_PARALLEL_MIN_WORK else 1
    if threads == 1:  # no parallel region for small work
        for tile in range(tiles):
            dot_tile(tile, col_tiles, M, N, K, A, B, C)
        return
    for tile in prange(tiles, schedule="static", num_threads=threads):
        dot_tile(tile, col_tiles, M, N, K, A, B, C)


cdef inline void dot_tile(Py_ssize_t tile, Py_ssize_t col_tiles, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                          const floating* A, const floating* B, floating* C) noexcept nogil:
    """Register tile `tile` of dot_tiles (tiles numbered row by row)."""
    cdef Py_ssize_t i0 = tile // col_tiles * DOT_ROWS
    cdef Py_ssize_t j0 = tile % col_tiles * DOT_COLS
    if floating is float:
        dot_tile_f32(A + i0 * K, K, min(DOT_ROWS, M - i0), B + j0 * K, K, min(DOT_COLS, N - j0), K,
                     C + i0 * N + j0, N)
    else:
        dot_tile_f64(A + i0 * K, K, min(DOT_ROWS, M - i0), B + j0 * K, K, min(DOT_COLS, N - j0), K,
                     C + i0 * N + j0, N)


cdef bint rows_forward(Py_ssize_t N, Py_ssize_t I, Py_ssize_t O, const floating* x, const floating* weight,
                       const floating* bias, floating* out, int num_threads) noexcept nogil:
    """out[n, o] = weight[o, :] . x[n, :] (+ bias[o] unless bias is NULL), with the rows of weight
    read in place (tile_rows) against x^T, into out^T and then out.  False if out of memory.

    One parallel region, in three steps between barriers: x^T in shares of 16 features, the output
    tiles (rows_forward_share), out from out^T (with the bias) in shares of samples.  A k-block per
    task left LeNet's 400 features to one thread, and the copy to out was serial."""
    cdef Py_ssize_t ld = round_up(N, lanes(<floating*> NULL))  # x^T's rows: a whole number of vectors
    cdef floating* x_t = <floating*> malloc(max(I * ld, 1) * sizeof(floating))
    cdef floating* out_t = <floating*> malloc(max(O * ld, 1) * sizeof(floating))
    cdef int threads = team(N * I * O, num_threads)
    cdef int member, team_size
    if x_t == NULL or out_t == NULL:
        free(x_t)
        free(out_t)
        return False
    if threads == 1:  # no parallel region for small work
        transpose_share(0, 1, N, I, x, x_t, ld)
        rows_forward_share(0, 1, I, O, x_t, weight, out_t, ld)
        output_share(0, 1, N, O, out_t, ld, bias, out)
    else:
        with parallel(num_threads=threads):
            member, team_size = threadid(), cnncy_team_size()
            transpose_share(member, team_size, N, I, x, x_t, ld)
            cnncy_barrier()
            rows_forward_share(member, team_size, I, O, x_t, weight, out_t, ld)
            cnncy_barrier()
            output_share(member, team_size, N, O, out_t, ld, bias, out)
    free(x_t)
    free(out_t)
    return True


cdef void transpose_share(int member, int team_size, Py_ssize_t N, Py_ssize_t I, const floating* x,
                          floating* x_t, Py_ssize_t ld) noexcept nogil:
    """Team member `member`'s share of x^T (rows of ld, zeros past N): blocks of 16 features."""
    cdef Py_ssize_t blocks = (I + 15) // 16
    cdef Py_ssize_t k0 = blocks * member // team_size * 16
    cdef Py_ssize_t k1 = min(blocks * (member + 1) // team_size * 16, I)
    cdef Py_ssize_t r, n
    if k1 <= k0:
        return
    transpose(x + k0, N, k1 - k0, I, x_t + k0 * ld, ld)
    for r in range(k0, k1):
        for n in range(N, ld):
            x_t[r * ld + n] = 0


cdef void output_share(int member, int team_size, Py_ssize_t N, Py_ssize_t O, const floating* out_t,
                       Py_ssize_t ld, const floating* bias, floating* out) noexcept nogil:
    """Team member `member`'s share of out[n, o] = out_t[o, n] (+ bias[o]): a band of samples."""
    cdef Py_ssize_t n0 = N * member // team_size, n1 = N * (member + 1) // team_size
    cdef Py_ssize_t n, o
    for n in range(n0, n1):
        if bias == NULL:
            for o in range(O):
                out[n * O + o] = out_t[o * ld + n]
        else:
            for o in range(O):
                out[n * O + o] = out_t[o * ld + n] + bias[o]


cdef void rows_forward_share(int member, int team_size, Py_ssize_t I, Py_ssize_t O, const floating* x_t,
                             const floating* weight, floating* out_t, Py_ssize_t ld) noexcept nogil:
    """Team member `member`'s share of rows_forward: every team_size-th output tile (weight rows x
    2 vectors of x rows), the k-blocks (ROWS_KC features) in order over all of them, so that a block
    of x^T is read from memory once.  Every out_t entry is still one sum in k order by one thread."""
    cdef Py_ssize_t vector = lanes(<floating*> NULL)
    cdef Py_ssize_t row_tiles = (O + GEMM_ROWS_MR - 1) // GEMM_ROWS_MR
    cdef Py_ssize_t col_tiles = (ld + 2 * vector - 1) // (2 * vector)
    cdef Py_ssize_t offsets[GEMM_ROWS_MR]
    cdef Py_ssize_t kb, k0, kc, step, tile, o0, r, cb, n0
    for kb in range((I + ROWS_KC - 1) // ROWS_KC):
        k0 = kb * ROWS_KC
        kc = min(ROWS_KC, I - k0)
        for step in range((row_tiles * col_tiles - member + team_size - 1) // team_size):
            tile = member + step * team_size
            o0 = tile // col_tiles * GEMM_ROWS_MR
            n0 = tile % col_tiles * 2 * vector
            for r in range(GEMM_ROWS_MR):  # rows past O repeat the last one; their sums are dropped
                offsets[r] = min(o0 + r, O - 1) * I + k0
            tile_rows(1, kc, weight, offsets, 0, 1, x_t + k0 * ld + n0, ld, out_t + o0 * ld + n0, ld,
                      min(<Py_ssize_t> GEMM_ROWS_MR, O - o0), min(2 * vector, ld - n0), kb > 0)


def linear_forward(x, weight, bias, out, int num_threads):
    """out = x @ weight^T + bias, for x [N, I], weight [O, I], bias [O] or None, out [N, O].

    Rows of 256+ features run over weight's rows in place (32+ outputs); long rows with fewer
    outputs run as dot_tiles.  Otherwise,
    with few output features (a classifier head) most of gemm's register tile would be padding, so
    out^T = weight @ x^T is computed instead and transposed: the same numbers.
    """
    if float64_call(x, "linear_forward"):
        forward_as(<double> 0, x, weight, bias, out, num_threads)
    else:
        forward_as(<float> 0, x, weight, bias, out, num_threads)


cdef forward_as(floating kind, x_array, weight_array, bias_array, out_array, int num_threads):
    cdef int typenum = numpy_type(kind)
    cdef cnp.ndarray xa = array_arg(x_array, typenum, 2, False, "linear_forward", "x")
    cdef cnp.ndarray wa = array_arg(weight_array, typenum, 2, False, "linear_forward", "weight")
    cdef cnp.ndarray ba = optional_arg(bias_array, typenum, 1, False, "linear_forward", "bias")
    cdef cnp.ndarray oa = array_arg(out_array, typenum, 2, True, "linear_forward", "out")
    cdef Py_ssize_t N = dim(xa, 0), I = dim(xa, 1), O = dim(wa, 0)
    if dim(wa, 1) != I or dim(oa, 0) != N or dim(oa, 1) != O or (ba is not None and dim(ba, 0) != O):
        shape_error("linear_forward", (("x", xa), ("weight", wa), ("bias", ba), ("out", oa)))
    cdef const floating* x = <const floating*> data(xa)
    cdef const floating* weight = <const floating*> data(wa)
    cdef const floating* bias = <const floating*> data(ba)
    cdef floating* out = <floating*> data(oa)
    cdef Py_ssize_t n, o
    cdef bint by_rows = I >= ROWS_FORWARD_MIN_FEATURES and O >= ROWS_FORWARD_MIN_OUTPUTS
    cdef bint long_rows = I >= LONG_ROW_FEATURES and not by_rows
    cdef Py_ssize_t nr = packed_cols(<floating*> NULL)
    cdef bint transposed = not by_rows and not long_rows and tile_use(O, N, nr) > tile_use(N, O, nr)
    cdef floating* out_t = NULL
    cdef bint done = True
    if N == 0 or O == 0:
        return
    if by_rows:  # bias and all
        with nogil:
            done = rows_forward(N, I, O, x, weight, bias, out, num_threads)
        if not done:
            raise MemoryError("linear_forward: could not allocate the work buffers")
        return
    if transposed:
        out_t = <floating*> malloc(O * N * sizeof(floating))
        if out_t == NULL:
            raise MemoryError("linear_forward: could not allocate the output buffer")
    with nogil:
        if long_rows:
            dot_tiles(N, O, I, x, weight, out, num_threads)
        elif transposed:
            done = product(O, N, I, weight, I, 1, x, 1, I, out_t, num_threads)
        else:
            done = product(N, O, I, x, I, 1, weight, 1, I, out, num_threads)
        if transposed and done:
            for n in range(N):
                for o in range(O):
                    out[n * O + o] = out_t[o * N + n]
        if bias != NULL:
            for n in range(N):
                for o in range(O):
                    out[n * O + o] += bias[o]
    free(out_t)
    if not done:
        raise MemoryError("linear_forward: could not allocate the work buffers")


cdef void combine_rows(Py_ssize_t M, Py_ssize_t N, Py_ssize_t J, const floating* A, Py_ssize_t a_row,
                       Py_ssize_t a_col, const floating* B, Py_ssize_t ldb, floating* C,
                       Py_ssize_t ldc) noexcept nogil:
    """C[i, :N] = sum over j < J of A[i * a_row + j * a_col] * B[j, :N] (rows ldb and ldc apart),
    one row of C at a time."""
    cdef Py_ssize_t i, j, k
    cdef floating a
    cdef floating zero = 0
    cdef floating* c
    cdef const floating* b
    for i in range(M):
        c = C + i * ldc
        if J == 0:
            for k in range(N):
                c[k] = 0
            continue
        # The first term is added to a zero as every later one is to the running sum (so the sums
        # are those of a zeroed C), without a separate pass that zeroes C.
        a = A[i * a_row]
        for k in range(N):
            c[k] = a * B[k] + zero
        for j in range(1, J):
            a = A[i * a_row + j * a_col]
            b = B + j * ldb
            for k in range(N):
                c[k] += a * b[k]


cdef void few_rows_backward(Py_ssize_t N, Py_ssize_t I, Py_ssize_t O, const floating* x,
                            const floating* weight, const floating* grad_out, floating* grad_x,
                            floating* grad_weight, int num_threads) noexcept nogil:
    """grad_x (unless NULL) and grad_weight for N <= FEW_ROWS rows as streamed sums of rows.

    In parallel, each team member writes a contiguous share of grad_weight's rows (about the share
    of the weight that the optimizer's step, split by blocks of the flat parameters, then updates on
    the same core) and a share of grad_x's blocks of FEW_ROWS_COLUMNS features.  Each entry is one sum, over the outputs
    (grad_x) or the rows (grad_weight), by one thread: the same for any thread count."""
    cdef int threads = num_threads if N * I * O >= STREAM_PARALLEL_MIN_WORK else 1
    if threads == 1:  # no parallel region for small work
        if grad_x != NULL:
            combine_rows(N, I, O, grad_out, O, 1, weight, I, grad_x, I)
        combine_rows(O, I, N, grad_out, 1, O, x, I, grad_weight, I)
        return
    with parallel(num_threads=threads):
        few_rows_share(threadid(), cnncy_team_size(), N, I, O, x, weight, grad_out, grad_x, grad_weight)


cdef void few_rows_share(int member, int team_size, Py_ssize_t N, Py_ssize_t I, Py_ssize_t O,
                         const floating* x, const floating* weight, const floating* grad_out,
                         floating* grad_x, floating* grad_weight) noexcept nogil:
    """Team member `member`'s share of few_rows_backward."""
    cdef Py_ssize_t blocks = (I + FEW_ROWS_COLUMNS - 1) // FEW_ROWS_COLUMNS
    cdef Py_ssize_t o0 = O * member // team_size, o1 = O * (member + 1) // team_size
    cdef Py_ssize_t block, j0
    combine_rows(o1 - o0, I, N, grad_out + o0, 1, O, x, I, grad_weight + o0 * I, I)
    if grad_x == NULL:
        return
    for block in range(blocks * member // team_size, blocks * (member + 1) // team_size):
        j0 = block * FEW_ROWS_COLUMNS
        combine_rows(N, min(FEW_ROWS_COLUMNS, I - j0), O, grad_out, O, 1, weight + j0, I, grad_x + j0, I)


cdef bint head_backward(Py_ssize_t N, Py_ssize_t I, Py_ssize_t O, const floating* x, const floating* weight,
                        const floating* grad_out, floating* grad_x, floating* grad_weight, int num_threads) noexcept nogil:
    """A classifier head's gradients (O <= GEMM_ROWS_MR), in one parallel region: grad_weight[O, I] =
    grad_out^T @ x as the sum of two partial products over fixed halves of the batch (samples
    [0, (N + 1) // 2) and the rest), and, unless grad_x is NULL, grad_x = grad_out @ weight in
    bands of samples as `product` computes it.  False if out of memory.

    Why halves: the batch is what the other kernels split between threads (each thread computes
    the activations and input gradients of its own samples), so here each thread of two reads only
    the x rows its core wrote.  Splitting by columns instead made each read half of the other
    core's rows, and the next forward then had to take those lines back: on this VM, when its two
    cores shared no cache, SimpleCNN's head backward took 91 us instead of 60 and the fused forward
    after it 160 instead of 100 (2 threads, batch 64).  The halves are fixed by N alone, and the
    reduction adds them in order, so the result does not depend on the thread count.  The
    reduction splits grad_weight by rows, as the optimizer's step splits the flat parameters.

    Why one region: the two products are independent, so a thread goes from its half of the weight
    gradient to its band of grad_x without waiting; one barrier, before the reduction, replaces the
    two regions' fork/join and barriers."""
    cdef Py_ssize_t width = 2 * lanes(<floating*> NULL)
    cdef Py_ssize_t col_tasks = (I + width - 1) // width
    cdef Py_ssize_t size = O * I
    cdef floating* partial = <floating*> malloc(2 * size * sizeof(floating))
    cdef floating* a_packed = NULL
    cdef int threads = team(N * I * O * (2 if grad_x != NULL else 1), num_threads)
    cdef Py_ssize_t task, o, tile, tile_rows, tile_cols, row_tiles = 0, col_tiles = 0
    cdef int failed = 0
    cdef int* failed_flag = &failed
    if grad_x != NULL:
        a_packed = <floating*> malloc(max(packed_a_size(N, O), 1) * sizeof(floating))
    if partial == NULL or (grad_x != NULL and a_packed == NULL):
        free(partial)
        free(a_packed)
        return False
    if grad_x != NULL:
        pack_a(N, O, grad_out, O, 1, a_packed)  # N x O: a few KB
        tile_shape(<floating*> NULL, N, I, threads, True, &tile_rows, &tile_cols)
        row_tiles = (N + tile_rows - 1) // tile_rows
        col_tiles = (I + tile_cols - 1) // tile_cols
    if threads == 1:  # no parallel region for small work
        for task in range(2 * col_tasks):
            if head_task(task, col_tasks, N, I, O, x, grad_out, partial):
                failed = 1
        for tile in range(row_tiles * col_tiles):
            product_tile(tile, col_tiles, tile_rows, tile_cols, N, I, O, a_packed, weight, I, 1, grad_x)
        for o in range(O):
            add_rows(partial + o * I, partial + size + o * I, I, grad_weight + o * I)
    else:
        with parallel(num_threads=threads):
            # Tasks in order of halves: with two threads, each computes one half.  (Cython's prange
            # inside a parallel block ends without a barrier.)
            for task in prange(2 * col_tasks, schedule="static"):
                if head_task(task, col_tasks, N, I, O, x, grad_out, partial):
                    failed_flag[0] = 1
            for tile in prange(row_tiles * col_tiles, schedule="static"):
                product_tile(tile, col_tiles, tile_rows, tile_cols, N, I, O, a_packed, weight, I, 1, grad_x)
            cnncy_barrier()
            for o in prange(O, schedule="static"):
                add_rows(partial + o * I, partial + size + o * I, I, grad_weight + o * I)
    free(partial)
    free(a_packed)
    return failed == 0


cdef inline void add_rows(const floating* a, const floating* b, Py_ssize_t n, floating* out) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(n):
        out[j] = a[j] + b[j]


cdef bint head_task(Py_ssize_t task, Py_ssize_t col_tasks, Py_ssize_t N, Py_ssize_t I, Py_ssize_t O,
                    const floating* x, const floating* grad_out, floating* partial) noexcept nogil:
    """Task `task` of head_backward: one half of the batch (task // col_tasks) times one block of
    2 vectors of columns, into that half's partial product.  True if out of memory."""
    cdef Py_ssize_t width = 2 * lanes(<floating*> NULL)
    cdef Py_ssize_t half = task // col_tasks
    cdef Py_ssize_t j0 = task % col_tasks * width
    cdef Py_ssize_t n0 = 0 if half == 0 else (N + 1) // 2
    cdef Py_ssize_t rows = (N + 1) // 2 if half == 0 else N - n0
    cdef Py_ssize_t cols = min(width, I - j0)
    cdef Py_ssize_t offsets[GEMM_ROWS_MR]
    cdef floating* padded
    cdef Py_ssize_t r
    for r in range(GEMM_ROWS_MR):  # rows past O repeat the last one; their sums are dropped
        offsets[r] = min(r, O - 1) + n0 * O
    if cols == width:
        tile_rows(1, rows, grad_out, offsets, 0, O, x + n0 * I + j0, I, partial + half * O * I + j0, I, O, cols,
                  False)
        return False
    # The last, partial block: tile_rows reads whole vectors of x's rows, so its columns go through
    # a zero-padded copy.
    padded = <floating*> calloc(max(rows, 1) * width, sizeof(floating))
    if padded == NULL:
        return True
    copy_rows(x + n0 * I + j0, rows, cols, I, padded, width)
    tile_rows(1, rows, grad_out, offsets, 0, O, padded, width, partial + half * O * I + j0, I, O, cols, False)
    free(padded)
    return False


def linear_backward(x, weight, grad_out, grad_x, grad_weight, grad_bias, int num_threads):
    """Write the gradients of linear (shapes as linear_forward's); grad_x and grad_bias may be None
    (not wanted).

    Both products read their long operand (weight, x) in place as B and pack only grad_out;
    for a few rows they are streamed sums of rows instead (combine_rows)."""
    if float64_call(x, "linear_backward"):
        backward_as(<double> 0, x, weight, grad_out, grad_x, grad_weight, grad_bias, num_threads)
    else:
        backward_as(<float> 0, x, weight, grad_out, grad_x, grad_weight, grad_bias, num_threads)


cdef backward_as(floating kind, x_array, weight_array, grad_out_array, grad_x_array, grad_weight_array,
                 grad_bias_array, int num_threads):
    cdef int typenum = numpy_type(kind)
    cdef cnp.ndarray xa = array_arg(x_array, typenum, 2, False, "linear_backward", "x")
    cdef cnp.ndarray wa = array_arg(weight_array, typenum, 2, False, "linear_backward", "weight")
    cdef cnp.ndarray ga = array_arg(grad_out_array, typenum, 2, False, "linear_backward", "grad_out")
    cdef cnp.ndarray gxa = optional_arg(grad_x_array, typenum, 2, True, "linear_backward", "grad_x")
    cdef cnp.ndarray gwa = array_arg(grad_weight_array, typenum, 2, True, "linear_backward", "grad_weight")
    cdef cnp.ndarray gba = optional_arg(grad_bias_array, typenum, 1, True, "linear_backward", "grad_bias")
    cdef Py_ssize_t N = dim(xa, 0), I = dim(xa, 1), O = dim(wa, 0)
    if (dim(wa, 1) != I or dim(ga, 0) != N or dim(ga, 1) != O or dim(gwa, 0) != O or dim(gwa, 1) != I
            or (gxa is not None and (dim(gxa, 0) != N or dim(gxa, 1) != I))
            or (gba is not None and dim(gba, 0) != O)):
        shape_error("linear_backward", (("x", xa), ("weight", wa), ("grad_out", ga), ("grad_x", gxa),
                                        ("grad_weight", gwa), ("grad_bias", gba)))
    cdef const floating* x = <const floating*> data(xa)
    cdef const floating* weight = <const floating*> data(wa)
    cdef const floating* grad_out = <const floating*> data(ga)
    cdef floating* grad_x = <floating*> data(gxa)
    cdef floating* grad_weight = <floating*> data(gwa)
    cdef floating* grad_bias = <floating*> data(gba)
    cdef Py_ssize_t n, o
    cdef bint done = True
    if grad_bias != NULL:
        memset(grad_bias, 0, O * sizeof(floating))
    if N == 0 or O == 0:  # empty sums, as torch gives
        memset(grad_weight, 0, O * I * sizeof(floating))
        if grad_x != NULL:
            memset(grad_x, 0, N * I * sizeof(floating))
        return
    with nogil:
        if grad_bias != NULL:
            for n in range(N):
                for o in range(O):
                    grad_bias[o] += grad_out[n * O + o]
        if N <= FEW_ROWS:
            few_rows_backward(N, I, O, x, weight, grad_out, grad_x, grad_weight, num_threads)
        else:
            if O <= GEMM_ROWS_MR and I >= HEAD_MIN_FEATURES:
                done = head_backward(N, I, O, x, weight, grad_out, grad_x, grad_weight, num_threads)
            else:
                if grad_x != NULL:
                    done = product(N, I, O, grad_out, O, 1, weight, I, 1, grad_x, num_threads, True)
                done = done and product(O, I, N, grad_out, 1, O, x, I, 1, grad_weight, num_threads)
    if not done:
        raise MemoryError("linear_backward: could not allocate the work buffers")
