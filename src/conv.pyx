"""2-D convolution kernels (groups=1, dilation=1) as im2col + gemm.

Per image, im2col unrolls the padded input into col[K, P] with K = C*KH*KW
and P = OH*OW, so that

    forward:      out[O, P]    = weight[O, K] @ col[K, P] (+ bias)
    grad_weight:  gW[O, K]    += grad_out[O, P] @ col[K, P]^T
    grad_input:   gcol[K, P]   = weight[O, K]^T @ grad_out[O, P], scattered back by col2im.

Forward and the input gradient run in parallel over images.  The weight and
bias gradients are sums over the batch: the batch is cut into chunks whose size
depends only on the batch size, each chunk sums into its own buffer, and the
buffers are added in chunk order, so the result does not depend on the thread
count.  The Python layer validates shapes and hands in C-contiguous arrays.
"""
from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.stdlib cimport free, malloc
from libc.string cimport memset

from gemm cimport gemm_nn, gemm_nt, gemm_tn, row_sum

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


cdef inline void im2col_transfer(floating* image, floating* col, const Geometry* g,
                                 bint to_col) noexcept nogil:
    """to_col: col = im2col(image).  Otherwise image = col2im(col), adding overlapping taps
    in a fixed order."""
    cdef Py_ssize_t P = g.OH * g.OW
    cdef Py_ssize_t c, kh, kw, oy, ox, oy_lo, oy_hi, ox_lo, ox_hi, image_at, col_at
    if to_col:
        memset(col, 0, g.C * g.KH * g.KW * P * sizeof(floating))
    else:
        memset(image, 0, g.C * g.H * g.W * sizeof(floating))
    for c in range(g.C):
        for kh in range(g.KH):
            valid_outputs(kh, g.pad_h, g.stride_h, g.H, g.OH, &oy_lo, &oy_hi)
            for kw in range(g.KW):
                valid_outputs(kw, g.pad_w, g.stride_w, g.W, g.OW, &ox_lo, &ox_hi)
                for oy in range(oy_lo, oy_hi):
                    # image_at + ox*stride_w is the input under output (oy, ox) for this tap.
                    image_at = (c * g.H + oy * g.stride_h + kh - g.pad_h) * g.W + kw - g.pad_w
                    col_at = ((c * g.KH + kh) * g.KW + kw) * P + oy * g.OW
                    if to_col:
                        for ox in range(ox_lo, ox_hi):
                            col[col_at + ox] = image[image_at + ox * g.stride_w]
                    else:
                        for ox in range(ox_lo, ox_hi):
                            image[image_at + ox * g.stride_w] += col[col_at + ox]


cdef int choose_threads(Py_ssize_t work, int num_threads) noexcept nogil:
    return num_threads if work >= PARALLEL_MIN_WORK else 1


def conv2d_forward(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] weight,
                   const floating[::1] bias, floating[:, :, :, ::1] out,
                   int stride_h, int stride_w, int pad_h, int pad_w, int num_threads):
    """out = conv2d(x, weight, bias); bias may be None."""
    cdef Geometry g = make_geometry(x.shape[1], x.shape[2], x.shape[3], weight.shape[2], weight.shape[3],
                                    out.shape[2], out.shape[3], stride_h, stride_w, pad_h, pad_w)
    cdef Py_ssize_t N = x.shape[0], O = weight.shape[0]
    cdef Py_ssize_t K = g.C * g.KH * g.KW, P = g.OH * g.OW
    cdef Py_ssize_t n, o, j
    cdef int threads = choose_threads(N * O * K * P, num_threads)
    cdef int failed = 0
    cdef int* failed_flag = &failed
    cdef floating* col = NULL
    cdef floating* out_n
    cdef const floating* bias_data = NULL
    if N == 0 or O == 0 or P == 0:
        return
    if bias is not None:
        bias_data = &bias[0]
    with nogil, parallel(num_threads=threads):
        col = <floating*> malloc(max(K * P, 1) * sizeof(floating))
        if col == NULL:
            failed_flag[0] = 1
        for n in prange(N, schedule="static"):
            if col == NULL:
                continue
            out_n = &out[n, 0, 0, 0]
            im2col_transfer(<floating*> &x[n, 0, 0, 0], col, &g, True)  # to_col only reads x
            if bias_data != NULL:
                for o in range(O):
                    for j in range(P):
                        out_n[o * P + j] = bias_data[o]
            gemm_nn(O, P, K, &weight[0, 0, 0, 0], K, col, P, out_n, P, bias_data != NULL)
        free(col)
    if failed:
        raise MemoryError("conv2d_forward: could not allocate the im2col buffer")


def conv2d_backward(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] weight,
                    const floating[:, :, :, ::1] grad_out, floating[:, :, :, ::1] grad_x,
                    floating[:, :, :, ::1] grad_weight, floating[::1] grad_bias,
                    int stride_h, int stride_w, int pad_h, int pad_w, int num_threads):
    """Write the gradients of conv2d; grad_x and grad_bias may be None (not wanted)."""
    cdef Geometry g = make_geometry(x.shape[1], x.shape[2], x.shape[3], weight.shape[2], weight.shape[3],
                                    grad_out.shape[2], grad_out.shape[3], stride_h, stride_w, pad_h, pad_w)
    cdef Py_ssize_t N = x.shape[0], O = weight.shape[0]
    cdef Py_ssize_t K = g.C * g.KH * g.KW, P = g.OH * g.OW
    cdef Py_ssize_t chunk_count = min(N, MAX_BATCH_CHUNKS)
    cdef Py_ssize_t chunk_size = (N + chunk_count - 1) // chunk_count if chunk_count else 0
    cdef Py_ssize_t chunk, n, o
    cdef int threads = choose_threads(N * O * K * P * (2 if grad_x is not None else 1), num_threads)
    cdef int failed = 0
    cdef int* failed_flag = &failed
    cdef bint want_grad_x = grad_x is not None
    cdef bint want_grad_bias = grad_bias is not None
    cdef floating* col = NULL
    cdef floating* grad_col = NULL
    cdef floating* chunk_weight
    cdef floating* chunk_bias
    cdef const floating* grad_out_n
    cdef floating* weight_sums
    cdef floating* bias_sums

    grad_weight[...] = 0
    if want_grad_bias:
        grad_bias[...] = 0
    if want_grad_x:
        grad_x[...] = 0
    if chunk_count == 0 or O == 0 or P == 0:
        return
    chunk_count = (N + chunk_size - 1) // chunk_size
    weight_sums = <floating*> malloc(max(chunk_count * O * K, 1) * sizeof(floating))
    bias_sums = <floating*> malloc(chunk_count * O * sizeof(floating))
    if weight_sums == NULL or bias_sums == NULL:
        free(weight_sums)
        free(bias_sums)
        raise MemoryError("conv2d_backward: could not allocate the gradient buffers")

    with nogil, parallel(num_threads=threads):
        col = <floating*> malloc(max(K * P, 1) * sizeof(floating))
        grad_col = <floating*> malloc(max(K * P, 1) * sizeof(floating)) if want_grad_x else NULL
        if col == NULL or (want_grad_x and grad_col == NULL):
            failed_flag[0] = 1
        for chunk in prange(chunk_count, schedule="static"):
            if col == NULL or (want_grad_x and grad_col == NULL):
                continue
            chunk_weight = weight_sums + chunk * O * K
            chunk_bias = bias_sums + chunk * O
            memset(chunk_weight, 0, O * K * sizeof(floating))
            memset(chunk_bias, 0, O * sizeof(floating))
            for n in range(chunk * chunk_size, min(N, (chunk + 1) * chunk_size)):
                grad_out_n = &grad_out[n, 0, 0, 0]
                im2col_transfer(<floating*> &x[n, 0, 0, 0], col, &g, True)  # to_col only reads x
                gemm_nt(O, K, P, grad_out_n, P, col, P, chunk_weight, K, True)
                if want_grad_bias:
                    for o in range(O):
                        chunk_bias[o] += row_sum(grad_out_n + o * P, P)
                if want_grad_x:
                    gemm_tn(K, P, O, &weight[0, 0, 0, 0], K, grad_out_n, P, grad_col, P, False)
                    im2col_transfer(&grad_x[n, 0, 0, 0], grad_col, &g, False)
        free(col)
        free(grad_col)

    if not failed:
        add_chunks(weight_sums, chunk_count, O * K, &grad_weight[0, 0, 0, 0])
        if want_grad_bias:
            add_chunks(bias_sums, chunk_count, O, &grad_bias[0])
    free(weight_sums)
    free(bias_sums)
    if failed:
        raise MemoryError("conv2d_backward: could not allocate the im2col buffers")


cdef void add_chunks(const floating* chunks, Py_ssize_t chunk_count, Py_ssize_t size,
                     floating* total) noexcept nogil:
    """total = chunks[0] + chunks[1] + ..., in chunk order."""
    cdef Py_ssize_t chunk, i
    for i in range(size):
        total[i] = chunks[i]
    for chunk in range(1, chunk_count):
        for i in range(size):
            total[i] += chunks[chunk * size + i]
