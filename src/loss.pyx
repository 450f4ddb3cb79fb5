"""Cross-entropy and negative log-likelihood kernels for [N, C] inputs and int64 targets.

Python has checked every target (first_bad_target): it is either ignore_index
or in [0, C).  The forward kernels weigh each sample's loss by its class weight
and reduce them exactly as ATen's nll_loss does for a 2-D input: a cascade of
partial sums in sample order, ignored samples skipped, the mean divided by the
summed weights of the kept samples (their count when unweighted).  Rows are
independent and the reduction is serial, so results do not depend on the thread
count.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport int64_t

from softmax_core cimport exp_scaled, log_softmax_row
from team_size cimport team_size

cdef enum:
    # ATen's cascade summation: 8 levels of partial sums, each level 2^level_power samples wide.
    CASCADE_LEVELS = 8


def first_bad_target(const int64_t[::1] target, int64_t classes, int64_t ignore_index):
    """The position of the first target outside [0, classes) that is not ignore_index, else -1."""
    cdef Py_ssize_t i
    cdef int64_t t
    for i in range(target.shape[0]):
        t = target[i]
        if t != ignore_index and (t < 0 or t >= classes):
            return i
    return -1


cdef inline int ceil_log2(Py_ssize_t n) noexcept nogil:
    cdef int bits = 0
    while (<Py_ssize_t> 1 << bits) < n:
        bits += 1
    return bits


cdef (double, double) weighted_losses(const floating[:, ::1] log_probs, const int64_t[::1] target,
                                      const floating* weight, floating* losses, int64_t ignore_index,
                                      bint mean) noexcept nogil:
    """(reduced loss, total weight) of -weight[t] * log_probs[i, t] over the kept samples.

    Writes each sample's loss into `losses` (0 where ignored) unless it is NULL.  The loss is the
    sum, or with `mean` the sum divided by the total weight (nan when no sample is kept)."""
    cdef Py_ssize_t rows = log_probs.shape[0], i
    cdef int level_power = max(4, ceil_log2(rows) // CASCADE_LEVELS)
    cdef Py_ssize_t level_mask = (<Py_ssize_t> 1 << level_power) - 1
    cdef floating loss_sums[CASCADE_LEVELS]
    cdef floating weight_sums[CASCADE_LEVELS]
    cdef floating w, loss, total_loss = 0, total_weight = 0
    cdef Py_ssize_t ignored = 0
    cdef int j
    cdef int64_t t
    for j in range(CASCADE_LEVELS):
        loss_sums[j] = 0
        weight_sums[j] = 0
    for i in range(rows):
        t = target[i]
        if t == ignore_index:
            ignored += 1
            if losses != NULL:
                losses[i] = 0
            continue
        w = 1 if weight == NULL else weight[t]
        loss = -log_probs[i, t] * w
        if losses != NULL:
            losses[i] = loss
        loss_sums[0] += loss
        weight_sums[0] += w
        for j in range(CASCADE_LEVELS - 1):
            if (i & (level_mask << (j * level_power))) != 0:
                break
            loss_sums[j + 1] += loss_sums[j]
            weight_sums[j + 1] += weight_sums[j]
            loss_sums[j] = 0
            weight_sums[j] = 0
    for j in range(CASCADE_LEVELS):
        total_loss += loss_sums[j]
        total_weight += weight_sums[j]
    if weight == NULL:
        total_weight = <floating> (rows - ignored)
    if mean:
        total_loss = total_loss / total_weight
    return total_loss, total_weight


def cross_entropy_forward(const floating[:, ::1] logits, const int64_t[::1] target,
                          const floating[::1] weight, floating[:, ::1] log_probs, floating[::1] losses,
                          int64_t ignore_index, bint mean, int num_threads):
    """log_probs = log_softmax(logits) by row; returns (loss, total weight) as nll_forward does."""
    cdef Py_ssize_t rows = logits.shape[0], cols = logits.shape[1]
    cdef Py_ssize_t i
    cdef int threads = team_size(rows, rows * cols, num_threads)
    if rows == 0:
        return (float("nan") if mean else 0.0), 0.0
    if threads == 1:  # no parallel region for small work
        with nogil:
            for i in range(rows):
                log_softmax_row(&logits[i, 0], &log_probs[i, 0], cols)
    else:
        for i in prange(rows, nogil=True, schedule='static', num_threads=threads):
            log_softmax_row(&logits[i, 0], &log_probs[i, 0], cols)
    # weighted_losses directly: calling the def nll_forward would re-acquire every buffer (~1 us).
    cdef (double, double) result
    with nogil:
        result = weighted_losses(log_probs, target, NULL if weight is None else &weight[0],
                                 NULL if losses is None else &losses[0], ignore_index, mean)
    return result[0], result[1]


def nll_forward(const floating[:, ::1] log_probs, const int64_t[::1] target, const floating[::1] weight,
                floating[::1] losses, int64_t ignore_index, bint mean):
    """(loss, total weight): the sum (or with `mean` the weighted mean) of -weight[t] * log_probs[i, t].

    weight may be None (all ones); losses (one per sample, 0 where ignored) may be None."""
    cdef (double, double) result
    if log_probs.shape[0] == 0:
        return (float("nan") if mean else 0.0), 0.0
    with nogil:
        result = weighted_losses(log_probs, target, NULL if weight is None else &weight[0],
                                 NULL if losses is None else &losses[0], ignore_index, mean)
    return result[0], result[1]


cdef inline floating sample_grad(const int64_t[::1] target, const floating* weight, const floating* grad_losses,
                                 floating scale, Py_ssize_t i, int64_t ignore_index) noexcept nogil:
    """The gradient reaching sample i's loss: its class weight times its upstream gradient (0 if ignored)."""
    cdef int64_t t = target[i]
    if t == ignore_index:
        return 0
    return (1 if weight == NULL else weight[t]) * (scale if grad_losses == NULL else grad_losses[i])


def cross_entropy_backward(const floating[:, ::1] log_probs, const int64_t[::1] target,
                           const floating[::1] weight, const floating[::1] grad_losses, double scale,
                           floating[:, ::1] grad_logits, int64_t ignore_index, int num_threads):
    """grad_logits[i] = (softmax(logits[i]) - onehot(target[i])) * g_i; 0 rows where ignored.

    g_i = weight[target[i]] * grad_losses[i], or weight[target[i]] * scale when grad_losses is None
    (scale: the upstream gradient of a sum, divided by the total weight for a mean)."""
    cdef Py_ssize_t rows = log_probs.shape[0], cols = log_probs.shape[1]
    cdef Py_ssize_t i
    cdef const floating* weight_data = NULL if weight is None else &weight[0]
    cdef const floating* grad_data = NULL if grad_losses is None else &grad_losses[0]
    cdef int threads = team_size(rows, rows * cols, num_threads)
    if rows == 0:
        return
    if threads == 1:  # no parallel region for small work
        with nogil:
            for i in range(rows):
                softmax_minus_onehot(&log_probs[i, 0], target[i], cols, ignore_index,
                                     sample_grad(target, weight_data, grad_data, <floating> scale, i, ignore_index),
                                     &grad_logits[i, 0])
    else:
        for i in prange(rows, nogil=True, schedule='static', num_threads=threads):
            softmax_minus_onehot(&log_probs[i, 0], target[i], cols, ignore_index,
                                 sample_grad(target, weight_data, grad_data, <floating> scale, i, ignore_index),
                                 &grad_logits[i, 0])


cdef inline void softmax_minus_onehot(const floating* log_probs, int64_t t, Py_ssize_t cols,
                                      int64_t ignore_index, floating g, floating* grad) noexcept nogil:
    exp_scaled(NULL, log_probs, g, grad, cols)
    if t != ignore_index:
        grad[t] = grad[t] - g


def nll_backward(floating[:, ::1] grad_input, const int64_t[::1] target, const floating[::1] weight,
                 const floating[::1] grad_losses, double scale, int64_t ignore_index):
    """grad_input = 0 except grad_input[i, target[i]] = -g_i where not ignored (g_i as in cross_entropy_backward)."""
    cdef Py_ssize_t i, j
    cdef int64_t t
    cdef const floating* weight_data = NULL if weight is None else &weight[0]
    cdef const floating* grad_data = NULL if grad_losses is None else &grad_losses[0]
    with nogil:
        for i in range(grad_input.shape[0]):
            for j in range(grad_input.shape[1]):
                grad_input[i, j] = 0
            t = target[i]
            if t != ignore_index:
                grad_input[i, t] = -sample_grad(target, weight_data, grad_data, <floating> scale, i, ignore_index)
