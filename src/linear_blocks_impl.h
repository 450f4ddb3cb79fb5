/* One element type's blocks for linear_blocks.h (REAL, NAME and the vector helpers come from
 * simd.h).  Do not include directly. */

/* One vector step of dot_tile: acc[r][c] += a[r][k : k + count] * b[c][k : k + count], lane by lane. */
static inline void NAME(dot_step)(const REAL* const* a, const REAL* const* b, ptrdiff_t k, int count,
                                  NAME(vec) acc[CNNCY_DOT_ROWS][CNNCY_DOT_COLS])
{
    const int lanes = CNNCY_BLOCK_BYTES / sizeof(REAL);
    NAME(vec) av[CNNCY_DOT_ROWS];
    for (int r = 0; r < CNNCY_DOT_ROWS; r++)
        av[r] = count == lanes ? NAME(load)(a[r] + k) : NAME(load_first)(a[r] + k, count);
    for (int c = 0; c < CNNCY_DOT_COLS; c++) {
        NAME(vec) bv = count == lanes ? NAME(load)(b[c] + k) : NAME(load_first)(b[c] + k, count);
        for (int r = 0; r < CNNCY_DOT_ROWS; r++)
            acc[r][c] += av[r] * bv;
    }
}

/* C[r * ldc + c] = sum over k < K of A[r * lda + k] * B[c * ldb + k], for r < rows <= CNNCY_DOT_ROWS
 * and c < cols <= CNNCY_DOT_COLS: each sum runs one vector of k at a time (the tail masked), lane by
 * lane, and the lanes are added in a fixed order at the end.  Rows and columns past rows/cols repeat
 * the last one, so every tile runs the same register block; their sums are dropped. */
static inline void NAME(dot_tile)(const REAL* A, ptrdiff_t lda, int rows, const REAL* B, ptrdiff_t ldb,
                                  int cols, ptrdiff_t K, REAL* C, ptrdiff_t ldc)
{
    const int lanes = CNNCY_BLOCK_BYTES / sizeof(REAL);
    const REAL* a[CNNCY_DOT_ROWS];
    const REAL* b[CNNCY_DOT_COLS];
    NAME(vec) acc[CNNCY_DOT_ROWS][CNNCY_DOT_COLS];
    ptrdiff_t k = 0;
    for (int r = 0; r < CNNCY_DOT_ROWS; r++)
        a[r] = A + (r < rows ? r : rows - 1) * lda;
    for (int c = 0; c < CNNCY_DOT_COLS; c++)
        b[c] = B + (c < cols ? c : cols - 1) * ldb;
    for (int r = 0; r < CNNCY_DOT_ROWS; r++)
        for (int c = 0; c < CNNCY_DOT_COLS; c++)
            acc[r][c] = NAME(splat)(0);
    for (; k + lanes <= K; k += lanes)
        NAME(dot_step)(a, b, k, lanes, acc);
    if (k < K)
        NAME(dot_step)(a, b, k, (int) (K - k), acc);
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++)
            C[r * ldc + c] = NAME(lane_sum)(acc[r][c]);
}

