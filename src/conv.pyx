"""2-D convolution kernels (groups=1, dilation=1) as im2col + gemm.

Per image, im2col unrolls the padded input into col[K, P] with K = C*KH*KW
and P = OH*OW, so that

    forward:      out[O, P]    = weight[O, K] @ col[K, P] (+ bias)
    grad_weight:  gW[O, K]    += grad_out[O, P] @ col[K, P]^T
    grad_input:   gcol[K, P]   = weight[O, K]^T @ grad_out[O, P], scattered back by col2im.

The bias takes part in the gemms through an extra row of ones in col: an extra
weight column in the forward, an extra gradient column (the sum of grad_out
over positions) in the backward.

Forward and the input gradient run in parallel over images.  The weight and
bias gradients are sums over the batch: the batch is cut into chunks whose size
depends only on the batch size, each chunk sums into its own buffer, and the
buffers are added in chunk order, so the result does not depend on the thread
count.  The Python layer validates shapes and hands in C-contiguous arrays.
"""
from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

from gemm cimport gemm_nn, gemm_nt, gemm_tn, gemm_tile_use

# Below this many multiply-adds a parallel region costs more than it saves.
cdef Py_ssize_t PARALLEL_MIN_WORK = 1 << 16
# The weight/bias gradient sums over at most this many batch chunks.
cdef Py_ssize_t MAX_BATCH_CHUNKS = 16


cdef struct Geometry:
    Py_ssize_t C, H, W, KH, KW, OH, OW
    Py_ssize_t stride_h, stride_w, pad_h, pad_w


cdef Geometry make_geometry(Py_ssize_t C, Py_ssize_t H, Py_ssize_t W, Py_ssize_t KH, Py_ssize_t KW,
                            Py_ssize_t OH, Py_ssize_t OW, Py_ssize_t stride_h, Py_ssize_t stride_w,
                            Py_ssize_t pad_h, Py_ssize_t pad_w):
    cdef Geometry g
    g.C, g.H, g.W, g.KH, g.KW, g.OH, g.OW = C, H, W, KH, KW, OH, OW
    g.stride_h, g.stride_w, g.pad_h, g.pad_w = stride_h, stride_w, pad_h, pad_w
    return g


cdef inline void valid_outputs(Py_ssize_t k, Py_ssize_t pad, Py_ssize_t stride, Py_ssize_t size,
                               Py_ssize_t out_size, Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    # The outputs o whose input o*stride + k - pad lies inside [0, size): the rest read padding.
    cdef Py_ssize_t first = pad - k
    cdef Py_ssize_t last = size - 1 + pad - k
    lo[0] = (first + stride - 1) // stride if first > 0 else 0
    hi[0] = last // stride + 1 if last >= 0 else 0
    lo[0] = min(lo[0], out_size)
    hi[0] = max(min(hi[0], out_size), lo[0])


cdef inline void copy_strided(floating* dst, const floating* src, Py_ssize_t n,
                              Py_ssize_t src_stride) noexcept nogil:
    """dst[i] = src[i * src_stride]; stride 1 (the common case) gets its own, vectorised loop."""
    cdef Py_ssize_t i
    if src_stride == 1:
        for i in range(n):
            dst[i] = src[i]
    else:
        for i in range(n):
            dst[i] = src[i * src_stride]


cdef inline void add_strided(floating* dst, Py_ssize_t dst_stride, const floating* src,
                             Py_ssize_t n) noexcept nogil:
    """dst[i * dst_stride] += src[i]; stride 1 (the common case) gets its own, vectorised loop."""
    cdef Py_ssize_t i
    if dst_stride == 1:
        for i in range(n):
            dst[i] += src[i]
    else:
        for i in range(n):
            dst[i * dst_stride] += src[i]


cdef inline void zero(floating* x, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        x[i] = 0


cdef inline void im2col_transfer(floating* image, floating* col, const Geometry* g,
                                 bint to_col) noexcept nogil:
    """to_col: col = im2col(image), zeros where a tap reads padding.  Otherwise
    image = col2im(col), adding overlapping taps in a fixed order."""
    cdef Py_ssize_t P = g.OH * g.OW
    cdef Py_ssize_t c, kh, kw, oy, oy_lo, oy_hi, ox_lo, ox_hi
    cdef floating* image_row
    cdef floating* col_row
    cdef floating* tap
    if not to_col:
        memset(image, 0, g.C * g.H * g.W * sizeof(floating))
    for c in range(g.C):
        for kh in range(g.KH):
            valid_outputs(kh, g.pad_h, g.stride_h, g.H, g.OH, &oy_lo, &oy_hi)
            for kw in range(g.KW):
                valid_outputs(kw, g.pad_w, g.stride_w, g.W, g.OW, &ox_lo, &ox_hi)
                tap = col + ((c * g.KH + kh) * g.KW + kw) * P
                if to_col:
                    zero(tap, oy_lo * g.OW)
                    zero(tap + oy_hi * g.OW, (g.OH - oy_hi) * g.OW)
                for oy in range(oy_lo, oy_hi):
                    # The input under output (oy, ox_lo) for this tap, and the col entry for it.
                    image_row = image + ((c * g.H + oy * g.stride_h + kh - g.pad_h) * g.W
                                         + ox_lo * g.stride_w + kw - g.pad_w)
                    col_row = tap + oy * g.OW
                    if to_col:
                        zero(col_row, ox_lo)
                        copy_strided(col_row + ox_lo, image_row, ox_hi - ox_lo, g.stride_w)
                        zero(col_row + ox_hi, g.OW - ox_hi)
                    else:
                        add_strided(image_row, g.stride_w, col_row + ox_lo, ox_hi - ox_lo)


cdef inline void fill_ones(floating* x, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        x[i] = 1


cdef int choose_threads(Py_ssize_t work, int num_threads) noexcept nogil:
    return num_threads if work >= PARALLEL_MIN_WORK else 1


def conv2d_forward(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] weight,
                   const floating[::1] bias, floating[:, :, :, ::1] out,
                   int stride_h, int stride_w, int pad_h, int pad_w, int num_threads):
    """out = conv2d(x, weight, bias); bias may be None.

    The bias rides in the gemm: it is an extra column of the weights, against a row of
    ones in col, so the output is written once.
    """
    cdef Geometry g = make_geometry(x.shape[1], x.shape[2], x.shape[3], weight.shape[2], weight.shape[3],
                                    out.shape[2], out.shape[3], stride_h, stride_w, pad_h, pad_w)
    cdef Py_ssize_t N = x.shape[0], O = weight.shape[0]
    cdef Py_ssize_t K = g.C * g.KH * g.KW, P = g.OH * g.OW
    cdef bint has_bias = bias is not None
    cdef Py_ssize_t rows = K + has_bias  # rows of col, with the row of ones
    cdef Py_ssize_t n, o
    cdef int threads = choose_threads(N * O * K * P, num_threads)
    cdef int failed = 0
    cdef int* failed_flag = &failed
    cdef floating* col = NULL
    cdef floating* weight_bias
    if N == 0 or O == 0 or P == 0:
        return
    weight_bias = <floating*> malloc(O * rows * sizeof(floating))
    if weight_bias == NULL:
        raise MemoryError("conv2d_forward: could not allocate the weight buffer")
    for o in range(O):
        memcpy(weight_bias + o * rows, &weight[o, 0, 0, 0], K * sizeof(floating))
        if has_bias:
            weight_bias[o * rows + K] = bias[o]
    with nogil, parallel(num_threads=threads):
        col = <floating*> malloc(max(rows * P, 1) * sizeof(floating))
        if col == NULL:
            failed_flag[0] = 1
        else:
            fill_ones(col + K * P, (rows - K) * P)  # im2col writes only the first K rows
        for n in prange(N, schedule="static"):
            if col == NULL:
                continue
            im2col_transfer(<floating*> &x[n, 0, 0, 0], col, &g, True)  # to_col only reads x
            gemm_nn(O, P, rows, weight_bias, rows, col, P, &out[n, 0, 0, 0], P, False)
        free(col)
    free(weight_bias)
    if failed:
        raise MemoryError("conv2d_forward: could not allocate the im2col buffer")


def conv2d_backward(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] weight,
                    const floating[:, :, :, ::1] grad_out, floating[:, :, :, ::1] grad_x,
                    floating[:, :, :, ::1] grad_weight, floating[::1] grad_bias,
                    int stride_h, int stride_w, int pad_h, int pad_w, int num_threads):
    """Write the gradients of conv2d; grad_x and grad_bias may be None (not wanted).

    The bias gradient rides along in the weight-gradient gemm: col gets an extra row of ones,
    so that row's entry of grad_out @ col^T is the sum of grad_out over the positions.
    """
    cdef Geometry g = make_geometry(x.shape[1], x.shape[2], x.shape[3], weight.shape[2], weight.shape[3],
                                    grad_out.shape[2], grad_out.shape[3], stride_h, stride_w, pad_h, pad_w)
    cdef Py_ssize_t N = x.shape[0], O = weight.shape[0]
    cdef Py_ssize_t K = g.C * g.KH * g.KW, P = g.OH * g.OW
    cdef bint want_grad_x = grad_x is not None
    cdef bint want_grad_bias = grad_bias is not None
    cdef Py_ssize_t rows = K + want_grad_bias  # rows of col, with the row of ones
    # Sums of grad_out @ col^T per chunk, as [O, rows] or transposed as [rows, O]: the same
    # numbers either way, so take the shape that wastes less of gemm's register tiles.
    cdef bint transposed = gemm_tile_use(rows, O) > gemm_tile_use(O, rows)
    cdef Py_ssize_t chunk_count = min(N, MAX_BATCH_CHUNKS)
    cdef Py_ssize_t chunk_size = (N + chunk_count - 1) // chunk_count if chunk_count else 0
    cdef Py_ssize_t chunk, n, o, k, i
    cdef int threads = choose_threads(N * O * K * P * (2 if want_grad_x else 1), num_threads)
    cdef int failed = 0
    cdef int* failed_flag = &failed
    cdef floating* col = NULL
    cdef floating* grad_col = NULL
    cdef floating* chunk_sum
    cdef const floating* grad_out_n
    cdef floating* sums

    grad_weight[...] = 0
    if want_grad_bias:
        grad_bias[...] = 0
    if want_grad_x:
        grad_x[...] = 0
    if chunk_count == 0 or O == 0 or P == 0:
        return
    chunk_count = (N + chunk_size - 1) // chunk_size
    sums = <floating*> malloc(max(chunk_count * O * rows, 1) * sizeof(floating))
    if sums == NULL:
        raise MemoryError("conv2d_backward: could not allocate the gradient buffers")

    with nogil, parallel(num_threads=threads):
        col = <floating*> malloc(max(rows * P, 1) * sizeof(floating))
        grad_col = <floating*> malloc(max(K * P, 1) * sizeof(floating)) if want_grad_x else NULL
        if col == NULL or (want_grad_x and grad_col == NULL):
            failed_flag[0] = 1
        else:
            fill_ones(col + K * P, (rows - K) * P)  # im2col writes only the first K rows
        for chunk in prange(chunk_count, schedule="static"):
            if col == NULL or (want_grad_x and grad_col == NULL):
                continue
            chunk_sum = sums + chunk * O * rows
            memset(chunk_sum, 0, O * rows * sizeof(floating))
            for n in range(chunk * chunk_size, min(N, (chunk + 1) * chunk_size)):
                grad_out_n = &grad_out[n, 0, 0, 0]
                im2col_transfer(<floating*> &x[n, 0, 0, 0], col, &g, True)  # to_col only reads x
                if transposed:
                    gemm_nt(rows, O, P, col, P, grad_out_n, P, chunk_sum, O, True)
                else:
                    gemm_nt(O, rows, P, grad_out_n, P, col, P, chunk_sum, rows, True)
                if want_grad_x:
                    gemm_tn(K, P, O, &weight[0, 0, 0, 0], K, grad_out_n, P, grad_col, P, False)
                    im2col_transfer(&grad_x[n, 0, 0, 0], grad_col, &g, False)
        free(col)
        free(grad_col)

    if not failed:
        for o in range(O):
            for k in range(rows):
                i = k * O + o if transposed else o * rows + k
                if k < K:
                    grad_weight[o, 0, 0, k] = sum_chunks(sums, chunk_count, O * rows, i)
                else:
                    grad_bias[o] = sum_chunks(sums, chunk_count, O * rows, i)
    free(sums)
    if failed:
        raise MemoryError("conv2d_backward: could not allocate the im2col buffers")


cdef inline floating sum_chunks(const floating* chunks, Py_ssize_t chunk_count, Py_ssize_t chunk_stride,
                                Py_ssize_t index) noexcept nogil:
    """chunks[index] + chunks[chunk_stride + index] + ..., in chunk order."""
    cdef floating total = chunks[index]
    cdef Py_ssize_t chunk
    for chunk in range(1, chunk_count):
        total += chunks[chunk * chunk_stride + index]
    return total
