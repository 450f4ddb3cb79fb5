"""Cross-entropy and negative log-likelihood kernels for [N, C] inputs and int64 targets.

Python has checked every target (first_bad_target): it is either ignore_index
or in [0, C).  The forward kernels weigh each sample's loss by its class weight
and reduce them exactly as ATen's nll_loss does for a 2-D input: a cascade of
partial sums in sample order, ignored samples skipped, the mean divided by the
summed weights of the kept samples (their count when unweighted).  Rows are
independent and the reduction is serial, so results do not depend on the thread
count.
"""
cimport numpy as cnp
from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport int64_t
from libc.string cimport memset

from arrays cimport array_arg, data, dim, float64_call, numpy_type, optional_arg, shape_error
from softmax_core cimport exp_scaled, log_softmax_row
from team_size cimport team_size

cnp.import_array()

cdef enum:
    # ATen's cascade summation: 8 levels of partial sums, each level 2^level_power samples wide.
    CASCADE_LEVELS = 8


def first_bad_target(target, int64_t classes, int64_t ignore_index):
    """The position of the first target (int64, 1-D) outside [0, classes) that is not ignore_index, else -1."""
    cdef cnp.ndarray ta = array_arg(target, cnp.NPY_INT64, 1, False, "first_bad_target", "target")
    cdef const int64_t* targets = <const int64_t*> data(ta)
    cdef Py_ssize_t i
    cdef int64_t t
    for i in range(dim(ta, 0)):
        t = targets[i]
        if t != ignore_index and (t < 0 or t >= classes):
            return i
    return -1


cdef cnp.ndarray class_targets(object target, Py_ssize_t rows, str kernel):
    """target checked: int64, 1-D, one per row."""
    cdef cnp.ndarray checked = array_arg(target, cnp.NPY_INT64, 1, False, kernel, "target")
    if dim(checked, 0) != rows:
        raise ValueError(f"{kernel}: {dim(checked, 0)} targets for {rows} rows")
    return checked


cdef inline int ceil_log2(Py_ssize_t n) noexcept nogil:
    cdef int bits = 0
    while (<Py_ssize_t> 1 << bits) < n:
        bits += 1
    return bits


cdef (double, double) weighted_losses(const floating* log_probs, Py_ssize_t rows, Py_ssize_t cols,
                                      const int64_t* target, const floating* weight, floating* losses,
                                      int64_t ignore_index, bint mean) noexcept nogil:
    """(reduced loss, total weight) of -weight[t] * log_probs[i, t] over the kept samples.

    Writes each sample's loss into `losses` (0 where ignored) unless it is NULL.  The loss is the
    sum, or with `mean` the sum divided by the total weight (nan when no sample is kept)."""
    cdef Py_ssize_t i
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
        loss = -log_probs[i * cols + t] * w
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


cdef tuple empty_result(bint mean):
    return (float("nan") if mean else 0.0), 0.0


def cross_entropy_forward(logits, target, weight, log_probs, losses, int64_t ignore_index, bint mean,
                          int num_threads):
    """log_probs = log_softmax(logits) by row (logits, log_probs [N, C]); returns (loss, total
    weight) as nll_forward does (target, weight, losses as there)."""
    if float64_call(logits, "cross_entropy_forward"):
        return cross_entropy_forward_as(<double> 0, logits, target, weight, log_probs, losses, ignore_index, mean,
                                        num_threads)
    return cross_entropy_forward_as(<float> 0, logits, target, weight, log_probs, losses, ignore_index, mean,
                                    num_threads)


cdef tuple cross_entropy_forward_as(floating kind, logits_array, target_array, weight_array, log_probs_array,
                                    losses_array, int64_t ignore_index, bint mean, int num_threads):
    cdef int typenum = numpy_type(kind)
    cdef cnp.ndarray la = array_arg(logits_array, typenum, 2, False, "cross_entropy_forward", "logits")
    cdef cnp.ndarray pa = array_arg(log_probs_array, typenum, 2, True, "cross_entropy_forward", "log_probs")
    cdef cnp.ndarray wa = optional_arg(weight_array, typenum, 1, False, "cross_entropy_forward", "weight")
    cdef cnp.ndarray sa = optional_arg(losses_array, typenum, 1, True, "cross_entropy_forward", "losses")
    cdef Py_ssize_t rows = dim(la, 0), cols = dim(la, 1)
    cdef cnp.ndarray ta = class_targets(target_array, rows, "cross_entropy_forward")
    if (dim(pa, 0) != rows or dim(pa, 1) != cols or (wa is not None and dim(wa, 0) != cols)
            or (sa is not None and dim(sa, 0) != rows)):
        shape_error("cross_entropy_forward", (("logits", la), ("log_probs", pa), ("weight", wa), ("losses", sa)))
    cdef const floating* logits = <const floating*> data(la)
    cdef floating* log_probs = <floating*> data(pa)
    cdef Py_ssize_t i
    cdef int threads = team_size(rows, rows * cols, num_threads)
    cdef (double, double) result
    if rows == 0:
        return empty_result(mean)
    if threads == 1:  # no parallel region for small work
        with nogil:
            for i in range(rows):
                log_softmax_row(logits + i * cols, log_probs + i * cols, cols)
    else:
        for i in prange(rows, nogil=True, schedule='static', num_threads=threads):
            log_softmax_row(logits + i * cols, log_probs + i * cols, cols)
    cdef const int64_t* target = <const int64_t*> data(ta)
    cdef const floating* weight = <const floating*> data(wa)
    cdef floating* losses = <floating*> data(sa)
    with nogil:
        result = weighted_losses(log_probs, rows, cols, target, weight, losses, ignore_index, mean)
    return result[0], result[1]


def nll_forward(log_probs, target, weight, losses, int64_t ignore_index, bint mean):
    """(loss, total weight): the sum (or with `mean` the weighted mean) of -weight[t] * log_probs[i, t].

    log_probs [N, C]; target int64 [N]; weight [C] may be None (all ones); losses [N] (one per
    sample, 0 where ignored) may be None."""
    if float64_call(log_probs, "nll_forward"):
        return nll_forward_as(<double> 0, log_probs, target, weight, losses, ignore_index, mean)
    return nll_forward_as(<float> 0, log_probs, target, weight, losses, ignore_index, mean)


cdef tuple nll_forward_as(floating kind, log_probs_array, target_array, weight_array, losses_array,
                          int64_t ignore_index, bint mean):
    cdef int typenum = numpy_type(kind)
    cdef cnp.ndarray pa = array_arg(log_probs_array, typenum, 2, False, "nll_forward", "log_probs")
    cdef cnp.ndarray wa = optional_arg(weight_array, typenum, 1, False, "nll_forward", "weight")
    cdef cnp.ndarray sa = optional_arg(losses_array, typenum, 1, True, "nll_forward", "losses")
    cdef Py_ssize_t rows = dim(pa, 0), cols = dim(pa, 1)
    cdef cnp.ndarray ta = class_targets(target_array, rows, "nll_forward")
    cdef (double, double) result
    if (wa is not None and dim(wa, 0) != cols) or (sa is not None and dim(sa, 0) != rows):
        shape_error("nll_forward", (("log_probs", pa), ("weight", wa), ("losses", sa)))
    cdef const floating* log_probs = <const floating*> data(pa)
    cdef const int64_t* target = <const int64_t*> data(ta)
    cdef const floating* weight = <const floating*> data(wa)
    cdef floating* losses = <floating*> data(sa)
    if rows == 0:
        return empty_result(mean)
    with nogil:
        result = weighted_losses(log_probs, rows, cols, target, weight, losses, ignore_index, mean)
    return result[0], result[1]


cdef inline floating sample_grad(const int64_t* target, const floating* weight, const floating* grad_losses,
                                 floating scale, Py_ssize_t i, int64_t ignore_index) noexcept nogil:
    """The gradient reaching sample i's loss: its class weight times its upstream gradient (0 if ignored)."""
    cdef int64_t t = target[i]
    if t == ignore_index:
        return 0
    return (1 if weight == NULL else weight[t]) * (scale if grad_losses == NULL else grad_losses[i])


def cross_entropy_backward(log_probs, target, weight, grad_losses, double scale, grad_logits,
                           int64_t ignore_index, int num_threads):
    """grad_logits[i] = (softmax(logits[i]) - onehot(target[i])) * g_i; 0 rows where ignored.

    log_probs and grad_logits [N, C], target int64 [N], weight [C] or None, grad_losses [N] or
    None.  g_i = weight[target[i]] * grad_losses[i], or weight[target[i]] * scale when grad_losses
    is None (scale: the upstream gradient of a sum, divided by the total weight for a mean)."""
    if float64_call(log_probs, "cross_entropy_backward"):
        cross_entropy_backward_as(<double> 0, log_probs, target, weight, grad_losses, scale, grad_logits,
                                  ignore_index, num_threads)
    else:
        cross_entropy_backward_as(<float> 0, log_probs, target, weight, grad_losses, scale, grad_logits,
                                  ignore_index, num_threads)


cdef cross_entropy_backward_as(floating kind, log_probs_array, target_array, weight_array, grad_losses_array,
                               double scale, grad_logits_array, int64_t ignore_index, int num_threads):
    cdef int typenum = numpy_type(kind)
    cdef cnp.ndarray pa = array_arg(log_probs_array, typenum, 2, False, "cross_entropy_backward", "log_probs")
    cdef cnp.ndarray wa = optional_arg(weight_array, typenum, 1, False, "cross_entropy_backward", "weight")
    cdef cnp.ndarray ga = optional_arg(grad_losses_array, typenum, 1, False, "cross_entropy_backward",
                                       "grad_losses")
    cdef cnp.ndarray oa = array_arg(grad_logits_array, typenum, 2, True, "cross_entropy_backward", "grad_logits")
    cdef Py_ssize_t rows = dim(pa, 0), cols = dim(pa, 1)
    cdef cnp.ndarray ta = class_targets(target_array, rows, "cross_entropy_backward")
    if (dim(oa, 0) != rows or dim(oa, 1) != cols or (wa is not None and dim(wa, 0) != cols)
            or (ga is not None and dim(ga, 0) != rows)):
        shape_error("cross_entropy_backward", (("log_probs", pa), ("weight", wa), ("grad_losses", ga),
                                               ("grad_logits", oa)))
    cdef const floating* log_probs = <const floating*> data(pa)
    cdef const int64_t* target = <const int64_t*> data(ta)
    cdef const floating* weight = <const floating*> data(wa)
    cdef const floating* grad_losses = <const floating*> data(ga)
    cdef floating* grad_logits = <floating*> data(oa)
    cdef Py_ssize_t i
    cdef int threads = team_size(rows, rows * cols, num_threads)
    if rows == 0:
        return
    if threads == 1:  # no parallel region for small work
        with nogil:
            for i in range(rows):
                softmax_minus_onehot(log_probs + i * cols, target[i], cols, ignore_index,
                                     sample_grad(target, weight, grad_losses, <floating> scale, i, ignore_index),
                                     grad_logits + i * cols)
    else:
        for i in prange(rows, nogil=True, schedule='static', num_threads=threads):
            softmax_minus_onehot(log_probs + i * cols, target[i], cols, ignore_index,
                                 sample_grad(target, weight, grad_losses, <floating> scale, i, ignore_index),
                                 grad_logits + i * cols)


cdef inline void softmax_minus_onehot(const floating* log_probs, int64_t t, Py_ssize_t cols,
                                      int64_t ignore_index, floating g, floating* grad) noexcept nogil:
    exp_scaled(NULL, log_probs, g, grad, cols)
    if t != ignore_index:
        grad[t] = grad[t] - g


def nll_backward(grad_input, target, weight, grad_losses, double scale, int64_t ignore_index):
    """grad_input [N, C] = 0 except grad_input[i, target[i]] = -g_i where not ignored (g_i as in
    cross_entropy_backward)."""
    if float64_call(grad_input, "nll_backward"):
        nll_backward_as(<double> 0, grad_input, target, weight, grad_losses, scale, ignore_index)
    else:
        nll_backward_as(<float> 0, grad_input, target, weight, grad_losses, scale, ignore_index)


cdef nll_backward_as(floating kind, grad_input_array, target_array, weight_array, grad_losses_array,
                     double scale, int64_t ignore_index):
    cdef int typenum = numpy_type(kind)
    cdef cnp.ndarray ia = array_arg(grad_input_array, typenum, 2, True, "nll_backward", "grad_input")
    cdef cnp.ndarray wa = optional_arg(weight_array, typenum, 1, False, "nll_backward", "weight")
    cdef cnp.ndarray ga = optional_arg(grad_losses_array, typenum, 1, False, "nll_backward", "grad_losses")
    cdef Py_ssize_t rows = dim(ia, 0), cols = dim(ia, 1)
    cdef cnp.ndarray ta = class_targets(target_array, rows, "nll_backward")
    if (wa is not None and dim(wa, 0) != cols) or (ga is not None and dim(ga, 0) != rows):
        shape_error("nll_backward", (("grad_input", ia), ("weight", wa), ("grad_losses", ga)))
    cdef floating* grad_input = <floating*> data(ia)
    cdef const int64_t* target = <const int64_t*> data(ta)
    cdef const floating* weight = <const floating*> data(wa)
    cdef const floating* grad_losses = <const floating*> data(ga)
    cdef Py_ssize_t i
    cdef int64_t t
    with nogil:
        memset(grad_input, 0, rows * cols * sizeof(floating))
        for i in range(rows):
            t = target[i]
            if t != ignore_index:
                grad_input[i * cols + t] = -sample_grad(target, weight, grad_losses, <floating> scale, i, ignore_index)
