"""ReLU and softmax / log_softmax kernels, PyTorch's CPU semantics.

ReLU works on flat C-contiguous arrays (Python passes `reshape(-1)` views);
softmax and log_softmax work on the last axis of a C-contiguous 2-D view
[rows, cols] (Python moves the softmax dim last).  Every element or row is
computed independently in a fixed order, so results do not depend on the
thread count.
"""
cimport numpy as cnp
from cython cimport floating
from cython.parallel cimport prange

from arrays cimport array_arg, data, dim, float64_call, numpy_type, same_shape, shape_error
from softmax_core cimport exp_scaled, log_softmax_row, softmax_row
from team_size cimport team_size

cnp.import_array()

# The elementwise kernels go parallel from two chunks of this many elements on.
cdef Py_ssize_t CHUNK = 1 << 14


cdef inline Py_ssize_t share_start(Py_ssize_t n, Py_ssize_t part, Py_ssize_t parts) noexcept nogil:
    """Where part `part` of `parts` contiguous shares of n elements starts (on a 16-element boundary).

    One share per thread, rather than chunks dealt out in turn: the batch then splits as the
    layers around it split it (an NCHW activation's first half is the first half of the batch),
    and each thread works on what its core wrote.  LeNet's conv2 relu (64 x 16 x 10 x 10) at two
    threads: 7 chunks of 16384 gave one thread 8 of the other thread's images."""
    return n if part >= parts else min(n, n * part // parts // 16 * 16)


# ----------------------------------------------------------------- relu

cdef inline void relu_chunk(const floating* x, floating* out, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        # `x < 0`, not `x <= 0`: like torch, -0.0 and NaN pass through unchanged.
        out[i] = 0 if x[i] < 0 else x[i]


cdef inline void relu_backward_chunk(const floating* grad_out, const floating* out,
                                     floating* grad_x, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating grad
    for i in range(n):
        # grad_out read whatever out is: read only where out > 0, gcc made it a masked load that
        # merges into the previous vector, through the stack (one thread, 102,400 values: 21 -> 5 us).
        grad = grad_out[i]
        grad_x[i] = 0 if out[i] <= 0 else grad


def relu_forward(x, out, int num_threads):
    """out = max(x, 0) elementwise over flat arrays; out may be x itself (in-place relu)."""
    if float64_call(x, "relu_forward"):
        relu_forward_as(<double> 0, x, out, num_threads)
    else:
        relu_forward_as(<float> 0, x, out, num_threads)


cdef relu_forward_as(floating kind, x_array, out_array, int num_threads):
    cdef int typenum = numpy_type(kind)
    cdef cnp.ndarray xa = array_arg(x_array, typenum, 1, False, "relu_forward", "x")
    cdef cnp.ndarray oa = array_arg(out_array, typenum, 1, True, "relu_forward", "out")
    if dim(oa, 0) != dim(xa, 0):
        shape_error("relu_forward", (("x", xa), ("out", oa)))
    cdef Py_ssize_t n = dim(xa, 0)
    cdef Py_ssize_t chunks = (n + CHUNK - 1) // CHUNK
    cdef Py_ssize_t c
    cdef const floating* x_data = <const floating*> data(xa)
    cdef floating* out_data = <floating*> data(oa)
    cdef int threads = team_size(chunks, n, num_threads)
    if n == 0:
        return
    if threads == 1:  # no parallel region (one costs ~0.7 us even for one thread)
        with nogil:
            relu_chunk(x_data, out_data, n)
        return
    for c in prange(threads, nogil=True, schedule='static', num_threads=threads):
        relu_chunk(x_data + share_start(n, c, threads), out_data + share_start(n, c, threads),
                   share_start(n, c + 1, threads) - share_start(n, c, threads))


def relu_backward(grad_out, out, grad_x, int num_threads):
    """grad_x = grad_out where out > 0, else 0 (torch's threshold_backward on the output); flat arrays."""
    if float64_call(grad_out, "relu_backward"):
        relu_backward_as(<double> 0, grad_out, out, grad_x, num_threads)
    else:
        relu_backward_as(<float> 0, grad_out, out, grad_x, num_threads)


cdef relu_backward_as(floating kind, grad_out_array, out_array, grad_x_array, int num_threads):
    cdef int typenum = numpy_type(kind)
    cdef cnp.ndarray ga = array_arg(grad_out_array, typenum, 1, False, "relu_backward", "grad_out")
    cdef cnp.ndarray oa = array_arg(out_array, typenum, 1, False, "relu_backward", "out")
    cdef cnp.ndarray xa = array_arg(grad_x_array, typenum, 1, True, "relu_backward", "grad_x")
    if dim(ga, 0) != dim(oa, 0) or dim(xa, 0) != dim(oa, 0):
        shape_error("relu_backward", (("grad_out", ga), ("out", oa), ("grad_x", xa)))
    cdef Py_ssize_t n = dim(oa, 0)
    cdef Py_ssize_t chunks = (n + CHUNK - 1) // CHUNK
    cdef Py_ssize_t c
    cdef const floating* grad_out_data = <const floating*> data(ga)
    cdef const floating* out_data = <const floating*> data(oa)
    cdef floating* grad_x_data = <floating*> data(xa)
    cdef int threads = team_size(chunks, n, num_threads)
    if n == 0:
        return
    if threads == 1:  # no parallel region for small work
        with nogil:
            relu_backward_chunk(grad_out_data, out_data, grad_x_data, n)
        return
    for c in prange(threads, nogil=True, schedule='static', num_threads=threads):
        relu_backward_chunk(grad_out_data + share_start(n, c, threads), out_data + share_start(n, c, threads),
                            grad_x_data + share_start(n, c, threads),
                            share_start(n, c + 1, threads) - share_start(n, c, threads))


# ----------------------------------------------------------------- softmax

cdef inline void softmax_backward_row(const floating* grad_out, const floating* out,
                                      floating* grad_x, Py_ssize_t n, bint log) noexcept nogil:
    """softmax: grad_x = out * (grad - sum(grad * out)); log_softmax: grad - exp(out) * sum(grad)."""
    cdef Py_ssize_t j
    cdef floating total = 0
    if log:
        for j in range(n):
            total = total + grad_out[j]
        exp_scaled(grad_out, out, total, grad_x, n)
    else:
        for j in range(n):
            total = total + grad_out[j] * out[j]
        for j in range(n):
            grad_x[j] = (grad_out[j] - total) * out[j]


cdef void softmax_rows(floating kind, x_array, out_array, bint log, int num_threads, str op) except *:
    cdef int typenum = numpy_type(kind)
    cdef cnp.ndarray xa = array_arg(x_array, typenum, 2, False, op, "x")
    cdef cnp.ndarray oa = array_arg(out_array, typenum, 2, True, op, "out")
    if not same_shape(xa, oa):
        shape_error(op, (("x", xa), ("out", oa)))
    cdef Py_ssize_t rows = dim(xa, 0), cols = dim(xa, 1)
    cdef const floating* x = <const floating*> data(xa)
    cdef floating* out = <floating*> data(oa)
    cdef Py_ssize_t r
    if rows == 0 or cols == 0:
        return
    cdef int threads = team_size(rows, rows * cols, num_threads)
    if threads == 1:  # no parallel region for small work
        with nogil:
            for r in range(rows):
                if log:
                    log_softmax_row(x + r * cols, out + r * cols, cols)
                else:
                    softmax_row(x + r * cols, out + r * cols, cols)
        return
    for r in prange(rows, nogil=True, schedule='static', num_threads=threads):
        if log:
            log_softmax_row(x + r * cols, out + r * cols, cols)
        else:
            softmax_row(x + r * cols, out + r * cols, cols)


cdef void softmax_backward_rows(floating kind, grad_out_array, out_array, grad_x_array, bint log, int num_threads,
                                str op) except *:
    cdef int typenum = numpy_type(kind)
    cdef cnp.ndarray ga = array_arg(grad_out_array, typenum, 2, False, op, "grad_out")
    cdef cnp.ndarray oa = array_arg(out_array, typenum, 2, False, op, "out")
    cdef cnp.ndarray xa = array_arg(grad_x_array, typenum, 2, True, op, "grad_x")
    if not same_shape(ga, oa) or not same_shape(xa, oa):
        shape_error(op, (("grad_out", ga), ("out", oa), ("grad_x", xa)))
    cdef Py_ssize_t rows = dim(oa, 0), cols = dim(oa, 1)
    cdef const floating* grad_out = <const floating*> data(ga)
    cdef const floating* out = <const floating*> data(oa)
    cdef floating* grad_x = <floating*> data(xa)
    cdef Py_ssize_t r
    if rows == 0 or cols == 0:
        return
    cdef int threads = team_size(rows, rows * cols, num_threads)
    if threads == 1:  # no parallel region for small work
        with nogil:
            for r in range(rows):
                softmax_backward_row(grad_out + r * cols, out + r * cols, grad_x + r * cols, cols, log)
        return
    for r in prange(rows, nogil=True, schedule='static', num_threads=threads):
        softmax_backward_row(grad_out + r * cols, out + r * cols, grad_x + r * cols, cols, log)


def softmax_forward(x, out, int num_threads):
    """out[r] = exp(x[r] - max) / sum(exp(x[r] - max)) for every row r of x [rows, cols]."""
    if float64_call(x, "softmax_forward"):
        softmax_rows(<double> 0, x, out, False, num_threads, "softmax_forward")
    else:
        softmax_rows(<float> 0, x, out, False, num_threads, "softmax_forward")


def log_softmax_forward(x, out, int num_threads):
    """out[r] = x[r] - max - log(sum(exp(x[r] - max))) for every row r of x [rows, cols]."""
    if float64_call(x, "log_softmax_forward"):
        softmax_rows(<double> 0, x, out, True, num_threads, "log_softmax_forward")
    else:
        softmax_rows(<float> 0, x, out, True, num_threads, "log_softmax_forward")


def softmax_backward(grad_out, out, grad_x, int num_threads):
    """Gradient of softmax from its output: grad_x = out * (grad_out - sum(grad_out * out)), by rows."""
    if float64_call(grad_out, "softmax_backward"):
        softmax_backward_rows(<double> 0, grad_out, out, grad_x, False, num_threads, "softmax_backward")
    else:
        softmax_backward_rows(<float> 0, grad_out, out, grad_x, False, num_threads, "softmax_backward")


def log_softmax_backward(grad_out, out, grad_x, int num_threads):
    """Gradient of log_softmax from its output: grad_x = grad_out - exp(out) * sum(grad_out), by rows."""
    if float64_call(grad_out, "log_softmax_backward"):
        softmax_backward_rows(<double> 0, grad_out, out, grad_x, True, num_threads, "log_softmax_backward")
    else:
        softmax_backward_rows(<float> 0, grad_out, out, grad_x, True, num_threads, "log_softmax_backward")
