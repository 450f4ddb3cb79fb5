"""Cross-entropy and negative log-likelihood kernels for [N, C] inputs and int64 targets.

Python has checked every target: it is either ignore_index or in [0, C).
Losses are per sample and unweighted; Python applies class weights and the
reduction (a handful of vectorised numpy ops on N values).  Rows are
independent, so results do not depend on the thread count.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport int64_t

from softmax_core cimport exp_, log_softmax_row
from team_size cimport team_size


def cross_entropy_forward(const floating[:, ::1] logits, const int64_t[::1] target,
                          floating[:, ::1] log_probs, floating[::1] loss, int64_t ignore_index,
                          int num_threads):
    """log_probs = log_softmax(logits) by row; loss[i] = -log_probs[i, target[i]] (0 if ignored)."""
    cdef Py_ssize_t rows = logits.shape[0], cols = logits.shape[1]
    cdef Py_ssize_t i
    cdef int64_t t
    if rows == 0:
        return
    cdef int threads = team_size(rows, rows * cols, num_threads)
    for i in prange(rows, nogil=True, schedule='static', num_threads=threads):
        log_softmax_row(&logits[i, 0], &log_probs[i, 0], cols)
        t = target[i]
        loss[i] = 0 if t == ignore_index else -log_probs[i, t]


def cross_entropy_backward(const floating[:, ::1] log_probs, const int64_t[::1] target,
                           const floating[::1] grad_loss, floating[:, ::1] grad_logits,
                           int64_t ignore_index, int num_threads):
    """grad_logits[i] = (softmax(logits[i]) - onehot(target[i])) * grad_loss[i]; 0 rows if ignored.

    grad_loss already holds each sample's share of the reduction and its class weight.
    """
    cdef Py_ssize_t rows = log_probs.shape[0], cols = log_probs.shape[1]
    cdef Py_ssize_t i, j
    cdef int64_t t
    cdef floating g
    if rows == 0:
        return
    cdef int threads = team_size(rows, rows * cols, num_threads)
    for i in prange(rows, nogil=True, schedule='static', num_threads=threads):
        t = target[i]
        g = 0 if t == ignore_index else grad_loss[i]
        for j in range(cols):
            grad_logits[i, j] = exp_(log_probs[i, j]) * g
        if t != ignore_index:
            grad_logits[i, t] = grad_logits[i, t] - g


def nll_forward(const floating[:, ::1] log_probs, const int64_t[::1] target, floating[::1] loss,
                int64_t ignore_index):
    """loss[i] = -log_probs[i, target[i]], 0 where target[i] == ignore_index."""
    cdef Py_ssize_t i
    cdef int64_t t
    with nogil:
        for i in range(log_probs.shape[0]):
            t = target[i]
            loss[i] = 0 if t == ignore_index else -log_probs[i, t]


def nll_backward(const int64_t[::1] target, const floating[::1] grad_loss,
                 floating[:, ::1] grad_input, int64_t ignore_index):
    """grad_input = 0 except grad_input[i, target[i]] = -grad_loss[i] where not ignored."""
    cdef Py_ssize_t i, j
    cdef int64_t t
    with nogil:
        for i in range(grad_input.shape[0]):
            for j in range(grad_input.shape[1]):
                grad_input[i, j] = 0
            t = target[i]
            if t != ignore_index:
                grad_input[i, t] = -grad_loss[i]
