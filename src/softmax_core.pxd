"""Row-wise softmax helpers shared by cnncy._activation and cnncy._loss.

A row is `n` contiguous values.  Each follows PyTorch's CPU formulas
(subtract the row maximum first; log_softmax = x - max - log(sum(exp(x - max)))),
and the maximum propagates NaN like torch's vectorised maximum, so a NaN in a
row makes the whole output row NaN.
"""
from cython cimport floating
from libc.math cimport INFINITY, exp, expf, log, logf


cdef inline floating exp_(floating v) noexcept nogil:
    if floating is float:
        return expf(v)
    else:
        return exp(v)


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
    cdef floating total = 0
    for j in range(n):
        total = total + exp_(x[j] - shift)
    total = log_(total)
    for j in range(n):
        out[j] = x[j] - shift - total


cdef inline void softmax_row(const floating* x, floating* out, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j
    cdef floating shift = row_max(x, n)
    cdef floating total = 0
    for j in range(n):
        out[j] = exp_(x[j] - shift)
        total = total + out[j]
    total = 1 / total
    for j in range(n):
        out[j] = out[j] * total
