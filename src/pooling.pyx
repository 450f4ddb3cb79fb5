"""2-D max and average pooling kernels (NCHW, C-contiguous), PyTorch's CPU semantics.

Every (n, c) plane is independent, so the kernels run planes in parallel and
each plane's arithmetic happens in one fixed order: results do not depend on
the thread count.  Shapes and arguments are validated in Python before any
kernel runs (cnncy/nn/functional/pooling.py).
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport int64_t

from pooling_core cimport (PoolGeometry, max_pool2d_backward_plane, max_pool2d_plane, max_unpool2x2_plane_f32,
                           max_unpool2x2_plane_f64, vector_2x2)
from team_size cimport team_size


cdef PoolGeometry make_geometry(Py_ssize_t height, Py_ssize_t width, Py_ssize_t out_height,
                                Py_ssize_t out_width, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh,
                                Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh,
                                Py_ssize_t dw):
    cdef PoolGeometry g
    g.height, g.width, g.out_height, g.out_width = height, width, out_height, out_width
    g.kernel_h, g.kernel_w, g.stride_h, g.stride_w = kh, kw, sh, sw
    g.pad_h, g.pad_w, g.dilation_h, g.dilation_w = ph, pw, dh, dw
    return g


# ----------------------------------------------------------------- max pooling

def max_pool2d_forward(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] out,
                       int64_t[:, :, :, ::1] argmax, Py_ssize_t kh, Py_ssize_t kw,
                       Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                       Py_ssize_t dh, Py_ssize_t dw, int num_threads):
    """out[n, c] = window maxima of x[n, c]; argmax holds each maximum's flat index h * W + w."""
    cdef PoolGeometry g = make_geometry(x.shape[2], x.shape[3], out.shape[2], out.shape[3],
                                        kh, kw, sh, sw, ph, pw, dh, dw)
    cdef Py_ssize_t planes = x.shape[0] * x.shape[1]
    cdef Py_ssize_t in_size = g.height * g.width
    cdef Py_ssize_t out_size = g.out_height * g.out_width
    cdef Py_ssize_t p
    if planes == 0 or out_size == 0:
        return
    cdef const floating* x_data = &x[0, 0, 0, 0]
    cdef floating* out_data = &out[0, 0, 0, 0]
    cdef int64_t* argmax_data = &argmax[0, 0, 0, 0]
    cdef int threads = team_size(planes, planes * out_size * kh * kw, num_threads)
    if threads == 1:  # no parallel region (one costs ~0.7 us even for one thread)
        with nogil:
            for p in range(planes):
                max_pool2d_plane(x_data + p * in_size, out_data + p * out_size,
                                 argmax_data + p * out_size, &g)
        return
    for p in prange(planes, nogil=True, schedule='static', num_threads=threads):
        max_pool2d_plane(x_data + p * in_size, out_data + p * out_size,
                         argmax_data + p * out_size, &g)


def max_pool2d_backward(const floating[:, :, :, ::1] grad_out, const int64_t[:, :, :, ::1] argmax,
                        floating[:, :, :, ::1] grad_x, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh,
                        Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
                        int num_threads):
    """grad_x = 0, then grad_x[n, c].flat[argmax[n, c, i]] += grad_out[n, c].flat[i] in order of i.

    The window (as for max_pool2d_forward) picks the kernel: plain 2x2 windows never overlap, so
    there each plane is written once (pool_blocks.h) instead of zeroed and scattered into."""
    cdef PoolGeometry g = make_geometry(grad_x.shape[2], grad_x.shape[3], grad_out.shape[2], grad_out.shape[3],
                                        kh, kw, sh, sw, ph, pw, dh, dw)
    cdef Py_ssize_t planes = grad_x.shape[0] * grad_x.shape[1]
    cdef Py_ssize_t in_size = grad_x.shape[2] * grad_x.shape[3]
    cdef Py_ssize_t out_size = grad_out.shape[2] * grad_out.shape[3]
    cdef Py_ssize_t p
    if planes == 0 or in_size == 0:
        return
    if out_size == 0:
        grad_x[...] = 0
        return
    cdef floating* grad_x_data = &grad_x[0, 0, 0, 0]
    cdef const floating* grad_out_data = &grad_out[0, 0, 0, 0]
    cdef const int64_t* argmax_data = &argmax[0, 0, 0, 0]
    cdef int threads = team_size(planes, planes * (in_size + out_size), num_threads)
    if threads == 1:  # no parallel region (one costs ~0.7 us even for one thread)
        with nogil:
            for p in range(planes):
                backward_plane(grad_out_data + p * out_size, argmax_data + p * out_size,
                               grad_x_data + p * in_size, &g)
        return
    for p in prange(planes, nogil=True, schedule='static', num_threads=threads):
        backward_plane(grad_out_data + p * out_size, argmax_data + p * out_size, grad_x_data + p * in_size, &g)


cdef inline void backward_plane(const floating* grad_out, const int64_t* argmax, floating* grad_x,
                                const PoolGeometry* g) noexcept nogil:
    if vector_2x2(g):
        if floating is float:
            max_unpool2x2_plane_f32(grad_out, argmax, grad_x, g.height, g.width, g.out_height, g.out_width)
        else:
            max_unpool2x2_plane_f64(grad_out, argmax, grad_x, g.height, g.width, g.out_height, g.out_width)
    else:
        max_pool2d_backward_plane(grad_out, argmax, grad_x, g.height * g.width, g.out_height * g.out_width)


# ----------------------------------------------------------------- average pooling

ctypedef struct AvgWindow:
    Py_ssize_t row_begin
    Py_ssize_t row_end
    Py_ssize_t col_begin
    Py_ssize_t col_end
    Py_ssize_t divisor


cdef inline AvgWindow avg_window(Py_ssize_t oh, Py_ssize_t ow, const PoolGeometry* g,
                                 bint count_include_pad, Py_ssize_t divisor_override) noexcept nogil:
    """Torch's window for output (oh, ow): the taps inside the input and the divisor.

    With count_include_pad the divisor counts padding taps, but not the taps a
    ceil_mode window hangs past the right/bottom padding.  A zero
    divisor_override means "none" (Python rejects an explicit zero).
    """
    cdef AvgWindow w
    cdef Py_ssize_t padded_rows, padded_cols
    w.row_begin = oh * g.stride_h - g.pad_h
    w.col_begin = ow * g.stride_w - g.pad_w
    w.row_end = min(w.row_begin + g.kernel_h, g.height + g.pad_h)
    w.col_end = min(w.col_begin + g.kernel_w, g.width + g.pad_w)
    padded_rows = w.row_end - w.row_begin
    padded_cols = w.col_end - w.col_begin
    w.row_begin = max(w.row_begin, 0)
    w.col_begin = max(w.col_begin, 0)
    w.row_end = min(w.row_end, g.height)
    w.col_end = min(w.col_end, g.width)
    if divisor_override != 0:
        w.divisor = divisor_override
    elif count_include_pad:
        w.divisor = padded_rows * padded_cols
    else:
        w.divisor = (w.row_end - w.row_begin) * (w.col_end - w.col_begin)
    return w


cdef inline void avg_pool2d_plane(const floating* x, floating* out, const PoolGeometry* g,
                                  bint count_include_pad, Py_ssize_t divisor_override) noexcept nogil:
    cdef Py_ssize_t oh, ow, ih, iw
    cdef AvgWindow w
    cdef floating total
    for oh in range(g.out_height):
        for ow in range(g.out_width):
            w = avg_window(oh, ow, g, count_include_pad, divisor_override)
            total = 0
            if w.row_begin < w.row_end and w.col_begin < w.col_end:
                for ih in range(w.row_begin, w.row_end):
                    for iw in range(w.col_begin, w.col_end):
                        total = total + x[ih * g.width + iw]
                total = total / <floating>w.divisor
            out[oh * g.out_width + ow] = total


cdef inline void avg_pool2d_backward_plane(const floating* grad_out, floating* grad_x,
                                           const PoolGeometry* g, bint count_include_pad,
                                           Py_ssize_t divisor_override) noexcept nogil:
    cdef Py_ssize_t oh, ow, ih, iw
    cdef AvgWindow w
    cdef floating share
    for ih in range(g.height * g.width):
        grad_x[ih] = 0
    for oh in range(g.out_height):
        for ow in range(g.out_width):
            w = avg_window(oh, ow, g, count_include_pad, divisor_override)
            share = grad_out[oh * g.out_width + ow] / <floating>w.divisor
            for ih in range(w.row_begin, w.row_end):
                for iw in range(w.col_begin, w.col_end):
                    grad_x[ih * g.width + iw] += share


def avg_pool2d_forward(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] out,
                       Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                       Py_ssize_t ph, Py_ssize_t pw, bint count_include_pad,
                       Py_ssize_t divisor_override, int num_threads):
    """out[n, c] = window sums of x[n, c] / divisor; divisor_override 0 means none."""
    cdef PoolGeometry g = make_geometry(x.shape[2], x.shape[3], out.shape[2], out.shape[3],
                                        kh, kw, sh, sw, ph, pw, 1, 1)
    cdef Py_ssize_t planes = x.shape[0] * x.shape[1]
    cdef Py_ssize_t in_size = g.height * g.width
    cdef Py_ssize_t out_size = g.out_height * g.out_width
    cdef Py_ssize_t p
    if planes == 0 or out_size == 0:
        return
    cdef const floating* x_data = &x[0, 0, 0, 0]
    cdef floating* out_data = &out[0, 0, 0, 0]
    cdef int threads = team_size(planes, planes * out_size * kh * kw, num_threads)
    if threads == 1:  # no parallel region (one costs ~0.7 us even for one thread)
        with nogil:
            for p in range(planes):
                avg_pool2d_plane(x_data + p * in_size, out_data + p * out_size, &g,
                                 count_include_pad, divisor_override)
        return
    for p in prange(planes, nogil=True, schedule='static', num_threads=threads):
        avg_pool2d_plane(x_data + p * in_size, out_data + p * out_size, &g,
                         count_include_pad, divisor_override)


def avg_pool2d_backward(const floating[:, :, :, ::1] grad_out, floating[:, :, :, ::1] grad_x,
                        Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                        Py_ssize_t ph, Py_ssize_t pw, bint count_include_pad,
                        Py_ssize_t divisor_override, int num_threads):
    """grad_x = 0, then each output's gradient / divisor is added to its window, in output order."""
    cdef PoolGeometry g = make_geometry(grad_x.shape[2], grad_x.shape[3], grad_out.shape[2],
                                        grad_out.shape[3], kh, kw, sh, sw, ph, pw, 1, 1)
    cdef Py_ssize_t planes = grad_x.shape[0] * grad_x.shape[1]
    cdef Py_ssize_t in_size = g.height * g.width
    cdef Py_ssize_t out_size = g.out_height * g.out_width
    cdef Py_ssize_t p
    if planes == 0 or in_size == 0 or out_size == 0:
        return
    cdef floating* grad_x_data = &grad_x[0, 0, 0, 0]
    cdef const floating* grad_out_data = &grad_out[0, 0, 0, 0]
    cdef int threads = team_size(planes, planes * (in_size + out_size * kh * kw), num_threads)
    if threads == 1:  # no parallel region (one costs ~0.7 us even for one thread)
        with nogil:
            for p in range(planes):
                avg_pool2d_backward_plane(grad_out_data + p * out_size, grad_x_data + p * in_size, &g,
                                          count_include_pad, divisor_override)
        return
    for p in prange(planes, nogil=True, schedule='static', num_threads=threads):
        avg_pool2d_backward_plane(grad_out_data + p * out_size, grad_x_data + p * in_size, &g,
                                  count_include_pad, divisor_override)
