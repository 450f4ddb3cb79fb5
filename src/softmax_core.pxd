"""Row-wise softmax helpers shared by cnncy._activation and cnncy._loss.

A row is `n` contiguous values.  Each follows PyTorch's CPU formulas
(subtract the row maximum first; log_softmax = x - max - log(sum(exp(x - max)))),
and the maximum propagates NaN like torch's vectorised maximum, so a NaN in a
row makes the whole output row NaN.
"""
from cython cimport floating
from libc.math cimport INFINITY, log, logf

cdef extern from "softmax_blocks.h":
    float exp_shifted_f32(const float* x, float shift, float* out, Py_ssize_t n) noexcept nogil
    double exp_shifted_f64(const double* x, double shift, double* out, Py_ssize_t n) noexcept nogil
    void exp_scaled_f32(const float* base, const float* x, float scale, float* out, Py_ssize_t n) noexcept nogil
    void exp_scaled_f64(const double* base, const double* x, double scale, double* out, Py_ssize_t n) noexcept nogil


cdef inline floating log_(floating v) noexcept nogil:
    if floating is float:
        return logf(v)
    else:
        return log(v)


cdef inline floating row_max(const floating* x, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j
    cdef floating best = -INFINITY
    for j in range(n):
        if (x[j] > best) | (x[j] != x[j]):
            best = x[j]
    return best


cdef inline void log_softmax_row(const floating* x, floating* out, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j
    cdef floating shift = row_max(x, n)
    cdef floating total
    if floating is float:
        total = exp_shifted_f32(x, shift, NULL, n)
    else:
        total = exp_shifted_f64(x, shift, NULL, n)
    total = log_(total)
    for j in range(n):
        out[j] = x[j] - shift - total


cdef inline void softmax_row(const floating* x, floating* out, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j
    cdef floating shift = row_max(x, n)
    cdef floating total
    if floating is float:
        total = exp_shifted_f32(x, shift, out, n)
    else:
        total = exp_shifted_f64(x, shift, out, n)
    total = 1 / total
    for j in range(n):
        out[j] = out[j] * total


cdef inline void exp_scaled(const floating* base, const floating* x, floating scale, floating* out,
                            Py_ssize_t n) noexcept nogil:
    """out[j] = base[j] - exp(x[j]) * scale, or exp(x[j]) * scale where base is NULL (out may be x or base)."""
    if floating is float:
        exp_scaled_f32(base, x, scale, out, n)
    else:
        exp_scaled_f64(base, x, scale, out, n)
