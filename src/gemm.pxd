# Shared matrix-multiply helpers over raw row-major pointers, for conv and linear.
#
#   gemm_nn:  C[M,N] (+)= A[M,K]   @ B[K,N]
#   gemm_tn:  C[M,N] (+)= A[K,M]^T @ B[K,N]
#   gemm_nt:  C[M,N] (+)= A[M,K]   @ B[N,K]^T
#
# `ld*` is the row stride (in elements) of each matrix; `accumulate` adds to C
# instead of overwriting it.  The helpers are serial: callers parallelise over
# fixed pieces of work.
#
# All three run one register-tiled kernel: a GEMM_MR x GEMM_NR tile of C is kept
# in a local array with constant bounds (gcc keeps it in vector registers) while
# k runs; the innermost loop runs over GEMM_NR contiguous columns of B.  A B
# panel that is not already GEMM_NR contiguous columns (the last, partial panel,
# or any panel of a transposed B) is first copied into a zero-padded buffer, as
# are the last, partial rows of A.  Every C entry is the sum over k in increasing
# order, started from C (accumulate) or 0, whatever the tiling: results do not
# depend on how a caller splits the work.
from cython cimport floating
from libc.string cimport memset

cdef enum:
    GEMM_MR = 6      # rows of C per register tile: its 12 (float) or 24 (double) vector
                     # accumulators are enough independent FMAs to hide their latency
    GEMM_NR = 32     # columns of C per register tile
    GEMM_KC = 128    # k-block: keeps the B panel in cache across the rows of A


cdef inline void _gemm_tile(Py_ssize_t K, const floating* A, Py_ssize_t a_row, Py_ssize_t a_col,
                            const floating* B, Py_ssize_t ldb, floating* C, Py_ssize_t ldc,
                            Py_ssize_t mr, Py_ssize_t nr, bint accumulate) noexcept nogil:
    # Computes a full tile but loads and stores only its mr x nr corner of C.
    # A's element (i, k) is A[i * a_row + k * a_col].
    cdef floating acc[GEMM_MR * GEMM_NR]
    cdef floating a
    cdef Py_ssize_t r, j, k
    cdef bint full = mr == GEMM_MR and nr == GEMM_NR
    for r in range(GEMM_MR):
        for j in range(GEMM_NR):
            acc[r * GEMM_NR + j] = C[r * ldc + j] if accumulate and full else 0
    if accumulate and not full:
        for r in range(mr):
            for j in range(nr):
                acc[r * GEMM_NR + j] = C[r * ldc + j]
    for k in range(K):
        for r in range(GEMM_MR):
            a = A[r * a_row + k * a_col]
            for j in range(GEMM_NR):
                acc[r * GEMM_NR + j] += a * B[k * ldb + j]
    if full:  # constant bounds: vector stores
        for r in range(GEMM_MR):
            for j in range(GEMM_NR):
                C[r * ldc + j] = acc[r * GEMM_NR + j]
    else:
        for r in range(mr):
            for j in range(nr):
                C[r * ldc + j] = acc[r * GEMM_NR + j]


cdef inline void _gemm(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                       const floating* A, Py_ssize_t a_row, Py_ssize_t a_col,
                       const floating* B, Py_ssize_t b_row, Py_ssize_t b_col,
                       floating* C, Py_ssize_t ldc, bint accumulate) noexcept nogil:
    # A(i, k) = A[i * a_row + k * a_col] and B(k, j) = B[k * b_row + j * b_col].
    cdef floating a_edge[GEMM_MR * GEMM_KC]
    cdef floating b_pack[GEMM_KC * GEMM_NR]
    cdef const floating* b_panel
    cdef Py_ssize_t b_ld, ib, jb, kb, i0, j0, k0, nr, kc, r, k, j
    cdef Py_ssize_t m_full = M - M % GEMM_MR
    cdef bint add
    if K == 0:
        if not accumulate:
            for r in range(M):
                memset(C + r * ldc, 0, N * sizeof(floating))
        return
    # (Cython turns range() into a C loop only for a literal step, hence block counters.)
    for kb in range((K + GEMM_KC - 1) // GEMM_KC):
        k0 = kb * GEMM_KC
        kc = min(<Py_ssize_t>GEMM_KC, K - k0)
        add = accumulate or k0 > 0
        if m_full < M:
            memset(a_edge, 0, sizeof(a_edge))
            for r in range(M - m_full):
                for k in range(kc):
                    a_edge[r * kc + k] = A[(m_full + r) * a_row + (k0 + k) * a_col]
        for jb in range((N + GEMM_NR - 1) // GEMM_NR):
            j0 = jb * GEMM_NR
            nr = min(<Py_ssize_t>GEMM_NR, N - j0)
            if b_col == 1 and nr == GEMM_NR:
                b_panel = B + k0 * b_row + j0
                b_ld = b_row
            else:
                if nr < GEMM_NR:  # zero the padding columns
                    memset(b_pack, 0, kc * GEMM_NR * sizeof(floating))
                for k in range(kc):
                    for j in range(nr):
                        b_pack[k * GEMM_NR + j] = B[(k0 + k) * b_row + (j0 + j) * b_col]
                b_panel = b_pack
                b_ld = GEMM_NR
            for ib in range(m_full // GEMM_MR):
                i0 = ib * GEMM_MR
                _gemm_tile(kc, A + i0 * a_row + k0 * a_col, a_row, a_col, b_panel, b_ld,
                           C + i0 * ldc + j0, ldc, GEMM_MR, nr, add)
            if m_full < M:
                _gemm_tile(kc, a_edge, kc, 1, b_panel, b_ld, C + m_full * ldc + j0, ldc,
                           M - m_full, nr, add)


cdef inline void gemm_nn(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                         const floating* A, Py_ssize_t lda, const floating* B, Py_ssize_t ldb,
                         floating* C, Py_ssize_t ldc, bint accumulate) noexcept nogil:
    _gemm(M, N, K, A, lda, 1, B, ldb, 1, C, ldc, accumulate)


cdef inline void gemm_tn(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                         const floating* A, Py_ssize_t lda, const floating* B, Py_ssize_t ldb,
                         floating* C, Py_ssize_t ldc, bint accumulate) noexcept nogil:
    _gemm(M, N, K, A, 1, lda, B, ldb, 1, C, ldc, accumulate)


cdef inline void gemm_nt(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                         const floating* A, Py_ssize_t lda, const floating* B, Py_ssize_t ldb,
                         floating* C, Py_ssize_t ldc, bint accumulate) noexcept nogil:
    _gemm(M, N, K, A, lda, 1, B, 1, ldb, C, ldc, accumulate)


cdef inline double gemm_tile_use(Py_ssize_t M, Py_ssize_t N) noexcept nogil:
    """The share of the register tiles' arithmetic that is real work for an M x N product
    (the rest is padding), for callers that can choose between computing C and C^T."""
    cdef Py_ssize_t padded_m = (M + GEMM_MR - 1) // GEMM_MR * GEMM_MR
    cdef Py_ssize_t padded_n = (N + GEMM_NR - 1) // GEMM_NR * GEMM_NR
    if padded_m * padded_n == 0:
        return 1.0
    return <double> (M * N) / <double> (padded_m * padded_n)
