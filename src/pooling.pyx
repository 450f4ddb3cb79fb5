"""2-D max and average pooling kernels (NCHW, C-contiguous), PyTorch's CPU semantics.

Every (n, c) plane is independent, so the kernels run planes in parallel and
each plane's arithmetic happens in one fixed order: results do not depend on
the thread count.  Shapes and arguments are validated in Python before any
kernel runs (cnncy/nn/functional/pooling.py).
"""
cimport numpy as cnp
from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport int64_t
from libc.string cimport memset

from arrays cimport array_arg, data, dim, float64_call, numpy_type, same_shape, shape_error

from pooling_core cimport (PoolGeometry, max_pool2d_backward_plane, max_pool2d_plane, max_unpool2x2_plane_f32,
                           max_unpool2x2_plane_f64, vector_2x2)
from team_size cimport team_size

cnp.import_array()


cdef PoolGeometry make_geometry(Py_ssize_t height, Py_ssize_t width, Py_ssize_t out_height,
                                Py_ssize_t out_width, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh,
                                Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh,
                                Py_ssize_t dw):
    cdef PoolGeometry g
    g.height, g.width, g.out_height, g.out_width = height, width, out_height, out_width
    g.kernel_h, g.kernel_w, g.stride_h, g.stride_w = kh, kw, sh, sw
    g.pad_h, g.pad_w, g.dilation_h, g.dilation_w = ph, pw, dh, dw
    return g


cdef int check_planes(cnp.ndarray image, cnp.ndarray pooled, cnp.ndarray argmax, str op) except -1:
    """The (n, c) planes of the image-sized and the pooled-sized arrays match; argmax (or None) is
    shaped as the pooled one."""
    if (dim(image, 0) != dim(pooled, 0) or dim(image, 1) != dim(pooled, 1)
            or (argmax is not None and not same_shape(argmax, pooled))):
        shape_error(op, (("image", image), ("pooled", pooled), ("argmax", argmax)))
    return 0


# ----------------------------------------------------------------- max pooling

def max_pool2d_forward(x, out, argmax, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph,
                       Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw, int num_threads):
    """out[n, c] = window maxima of x[n, c]; argmax (int64, shaped as out) holds each maximum's
    flat index h * W + w."""
    if float64_call(x, "max_pool2d_forward"):
        max_forward_as(<double> 0, x, out, argmax, kh, kw, sh, sw, ph, pw, dh, dw, num_threads)
    else:
        max_forward_as(<float> 0, x, out, argmax, kh, kw, sh, sw, ph, pw, dh, dw, num_threads)


cdef max_forward_as(floating kind, x_array, out_array, argmax_array, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh,
                    Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw, int num_threads):
    cdef int typenum = numpy_type(kind)
    cdef cnp.ndarray xa = array_arg(x_array, typenum, 4, False, "max_pool2d_forward", "x")
    cdef cnp.ndarray oa = array_arg(out_array, typenum, 4, True, "max_pool2d_forward", "out")
    cdef cnp.ndarray aa = array_arg(argmax_array, cnp.NPY_INT64, 4, True, "max_pool2d_forward", "argmax")
    check_planes(xa, oa, aa, "max_pool2d_forward")
    cdef PoolGeometry g = make_geometry(dim(xa, 2), dim(xa, 3), dim(oa, 2), dim(oa, 3), kh, kw, sh, sw, ph, pw, dh, dw)
    cdef Py_ssize_t planes = dim(xa, 0) * dim(xa, 1)
    cdef Py_ssize_t in_size = g.height * g.width
    cdef Py_ssize_t out_size = g.out_height * g.out_width
    cdef Py_ssize_t p
    cdef const floating* x_data = <const floating*> data(xa)
    cdef floating* out_data = <floating*> data(oa)
    cdef int64_t* argmax_data = <int64_t*> data(aa)
    if planes == 0 or out_size == 0:
        return
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


def max_pool2d_backward(grad_out, argmax, grad_x, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                        Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw, int num_threads):
    """grad_x = 0, then grad_x[n, c].flat[argmax[n, c, i]] += grad_out[n, c].flat[i] in order of i.

    The window (as for max_pool2d_forward) picks the kernel: plain 2x2 windows never overlap, so
    there each plane is written once (pool_blocks.h) instead of zeroed and scattered into."""
    if float64_call(grad_out, "max_pool2d_backward"):
        max_backward_as(<double> 0, grad_out, argmax, grad_x, kh, kw, sh, sw, ph, pw, dh, dw, num_threads)
    else:
        max_backward_as(<float> 0, grad_out, argmax, grad_x, kh, kw, sh, sw, ph, pw, dh, dw, num_threads)


cdef max_backward_as(floating kind, grad_out_array, argmax_array, grad_x_array, Py_ssize_t kh, Py_ssize_t kw,
                     Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
                     int num_threads):
    cdef int typenum = numpy_type(kind)
    cdef cnp.ndarray ga = array_arg(grad_out_array, typenum, 4, False, "max_pool2d_backward", "grad_out")
    cdef cnp.ndarray aa = array_arg(argmax_array, cnp.NPY_INT64, 4, False, "max_pool2d_backward", "argmax")
    cdef cnp.ndarray xa = array_arg(grad_x_array, typenum, 4, True, "max_pool2d_backward", "grad_x")
    check_planes(xa, ga, aa, "max_pool2d_backward")
    cdef PoolGeometry g = make_geometry(dim(xa, 2), dim(xa, 3), dim(ga, 2), dim(ga, 3), kh, kw, sh, sw, ph, pw, dh, dw)
    cdef Py_ssize_t planes = dim(xa, 0) * dim(xa, 1)
    cdef Py_ssize_t in_size = g.height * g.width
    cdef Py_ssize_t out_size = g.out_height * g.out_width
    cdef Py_ssize_t p
    cdef floating* grad_x_data = <floating*> data(xa)
    cdef const floating* grad_out_data = <const floating*> data(ga)
    cdef const int64_t* argmax_data = <const int64_t*> data(aa)
    if planes == 0 or in_size == 0:
        return
    if out_size == 0:
        memset(grad_x_data, 0, planes * in_size * sizeof(floating))
        return
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


def avg_pool2d_forward(x, out, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph,
                       Py_ssize_t pw, bint count_include_pad, Py_ssize_t divisor_override, int num_threads):
    """out[n, c] = window sums of x[n, c] / divisor; divisor_override 0 means none."""
    if float64_call(x, "avg_pool2d_forward"):
        avg_forward_as(<double> 0, x, out, kh, kw, sh, sw, ph, pw, count_include_pad, divisor_override, num_threads)
    else:
        avg_forward_as(<float> 0, x, out, kh, kw, sh, sw, ph, pw, count_include_pad, divisor_override, num_threads)


cdef avg_forward_as(floating kind, x_array, out_array, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                    Py_ssize_t ph, Py_ssize_t pw, bint count_include_pad, Py_ssize_t divisor_override,
                    int num_threads):
    cdef int typenum = numpy_type(kind)
    cdef cnp.ndarray xa = array_arg(x_array, typenum, 4, False, "avg_pool2d_forward", "x")
    cdef cnp.ndarray oa = array_arg(out_array, typenum, 4, True, "avg_pool2d_forward", "out")
    check_planes(xa, oa, None, "avg_pool2d_forward")
    cdef PoolGeometry g = make_geometry(dim(xa, 2), dim(xa, 3), dim(oa, 2), dim(oa, 3), kh, kw, sh, sw, ph, pw, 1, 1)
    cdef Py_ssize_t planes = dim(xa, 0) * dim(xa, 1)
    cdef Py_ssize_t in_size = g.height * g.width
    cdef Py_ssize_t out_size = g.out_height * g.out_width
    cdef Py_ssize_t p
    cdef const floating* x_data = <const floating*> data(xa)
    cdef floating* out_data = <floating*> data(oa)
    if planes == 0 or out_size == 0:
        return
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


def avg_pool2d_backward(grad_out, grad_x, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                        Py_ssize_t ph, Py_ssize_t pw, bint count_include_pad, Py_ssize_t divisor_override,
                        int num_threads):
    """grad_x = 0, then each output's gradient / divisor is added to its window, in output order."""
    if float64_call(grad_out, "avg_pool2d_backward"):
        avg_backward_as(<double> 0, grad_out, grad_x, kh, kw, sh, sw, ph, pw, count_include_pad, divisor_override,
                        num_threads)
    else:
        avg_backward_as(<float> 0, grad_out, grad_x, kh, kw, sh, sw, ph, pw, count_include_pad, divisor_override,
                        num_threads)


cdef avg_backward_as(floating kind, grad_out_array, grad_x_array, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh,
                     Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw, bint count_include_pad,
                     Py_ssize_t divisor_override, int num_threads):
    cdef int typenum = numpy_type(kind)
    cdef cnp.ndarray ga = array_arg(grad_out_array, typenum, 4, False, "avg_pool2d_backward", "grad_out")
    cdef cnp.ndarray xa = array_arg(grad_x_array, typenum, 4, True, "avg_pool2d_backward", "grad_x")
    check_planes(xa, ga, None, "avg_pool2d_backward")
    cdef PoolGeometry g = make_geometry(dim(xa, 2), dim(xa, 3), dim(ga, 2), dim(ga, 3), kh, kw, sh, sw, ph, pw, 1, 1)
    cdef Py_ssize_t planes = dim(xa, 0) * dim(xa, 1)
    cdef Py_ssize_t in_size = g.height * g.width
    cdef Py_ssize_t out_size = g.out_height * g.out_width
    cdef Py_ssize_t p
    cdef floating* grad_x_data = <floating*> data(xa)
    cdef const floating* grad_out_data = <const floating*> data(ga)
    if planes == 0 or in_size == 0 or out_size == 0:
        return
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
