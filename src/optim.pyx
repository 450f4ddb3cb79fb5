# cython: language_level=3
"""Fused in-place optimizer updates over flat, C-contiguous parameter arrays.

Each kernel does in one pass over memory what torch.optim's single-tensor code
does with several tensor ops, and it reproduces those ops' float rounding:
every scalar is first rounded to the parameter's dtype (as ATen does for a
Python scalar operand), `add(other, alpha=a)` and `lerp` are fused
multiply-adds (ATen's vectorised kernels use fmadd), while `mul`, `addcmul`
and `addcdiv` round after every operation.  SGD therefore matches torch bit for
bit.  Adam differs only through sqrt: torch's CPU sqrt is MKL's, which is off
by one ulp in a few percent of cases, while ours is correctly rounded.

The updates are elementwise, so the result does not depend on the thread count.
"""
cimport numpy as cnp
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport fma, fmaf, sqrt, sqrtf
from libc.stdlib cimport free, malloc

from arrays cimport array_arg, data, dim, float64_call, numpy_type, optional_arg

cnp.import_array()

cdef enum:
    # Below this many elements one thread is faster than opening a parallel region (SimpleCNN's
    # 62,720-weight head at 2 threads: 7.5 -> 4 us per step).
    PARALLEL_MIN_ELEMENTS = 16384
    # Elements per parallel work item.
    BLOCK_ELEMENTS = 4096


cdef inline floating fused_multiply_add(floating a, floating b, floating c) noexcept nogil:
    """a * b + c rounded once, like ATen's vec::fmadd."""
    if floating is float:
        return fmaf(a, b, c)
    else:
        return fma(a, b, c)


cdef inline floating rounded_product(floating a, floating b) noexcept nogil:
    """a * b rounded before anything is added to it, as torch's separate mul_ does.

    Written as fma(a, b, -0.0), which equals a * b exactly (zero signs included),
    so that gcc's -ffp-contract=fast cannot fuse the product into a later addition.
    """
    return fused_multiply_add(a, b, <floating>-0.0)


cdef inline floating square_root(floating x) noexcept nogil:
    if floating is float:
        return sqrtf(x)
    else:
        return sqrt(x)


cdef inline floating nan_propagating_max(floating a, floating b) noexcept nogil:
    """torch.maximum: NaN if either side is NaN."""
    return a if (a > b or a != a) else b


cdef inline int threads_for(Py_ssize_t n, int num_threads) noexcept nogil:
    return num_threads if n >= PARALLEL_MIN_ELEMENTS and num_threads > 1 else 1


cdef inline Py_ssize_t block_end(Py_ssize_t block, Py_ssize_t n) noexcept nogil:
    return min(n, (block + 1) * BLOCK_ELEMENTS)


cdef inline int check_length(str kernel, str name, Py_ssize_t length, Py_ssize_t expected) except -1:
    if length != expected:
        raise ValueError(f"{kernel}: {name} has {length} elements but the parameter has {expected}")
    return 0


# The element functions below compute every candidate and then select, instead of
# branching on the options, so that gcc vectorises the loops (it will not speculate
# floating-point operations out of a branch).  The one option that changes which
# arrays are touched (momentum buffer / amsgrad maximum present or not) is passed as
# a literal NULL or a pointer by the range functions: after inlining, each loop is
# specialised with the test folded away.

# ------------------------------------------------------------------------ SGD

ctypedef struct SGDOptions:
    double grad_sign          # -1 to maximize
    double weight_decay
    double momentum
    double one_minus_dampening
    double neg_lr
    bint nesterov
    bint init_buffer          # first step: the buffer starts as the gradient


cdef inline void sgd_element(floating* param, const floating* grad, floating* momentum_buffer,
                             Py_ssize_t i, floating grad_sign, floating weight_decay,
                             floating momentum, floating one_minus_dampening, floating neg_lr,
                             bint nesterov, bint init_buffer) noexcept nogil:
    cdef floating p = param[i]
    cdef floating d_p = grad_sign * grad[i]
    cdef floating decayed = fused_multiply_add(p, weight_decay, d_p)
    cdef floating buf, continued, nesterov_step
    d_p = decayed if weight_decay != 0 else d_p
    if momentum_buffer != NULL:
        # buf.mul_(momentum).add_(d_p, alpha=1 - dampening)
        continued = fused_multiply_add(d_p, one_minus_dampening, momentum_buffer[i] * momentum)
        buf = d_p if init_buffer else continued
        momentum_buffer[i] = buf
        nesterov_step = fused_multiply_add(buf, momentum, d_p)
        d_p = nesterov_step if nesterov else buf
    param[i] = fused_multiply_add(d_p, neg_lr, p)


cdef void sgd_range(floating* param, const floating* grad, floating* momentum_buffer,
                    Py_ssize_t start, Py_ssize_t end, const SGDOptions* o) noexcept nogil:
    # Scalars are rounded to the parameter dtype first, as ATen does.
    cdef floating grad_sign = <floating>o.grad_sign
    cdef floating weight_decay = <floating>o.weight_decay
    cdef floating momentum = <floating>o.momentum
    cdef floating one_minus_dampening = <floating>o.one_minus_dampening
    cdef floating neg_lr = <floating>o.neg_lr
    cdef Py_ssize_t i
    if momentum_buffer == NULL:
        for i in range(start, end):
            sgd_element(param, grad, <floating*>NULL, i, grad_sign, weight_decay, momentum,
                        one_minus_dampening, neg_lr, o.nesterov, o.init_buffer)
    else:
        for i in range(start, end):
            sgd_element(param, grad, momentum_buffer, i, grad_sign, weight_decay, momentum,
                        one_minus_dampening, neg_lr, o.nesterov, o.init_buffer)


cdef void sgd_run(floating* param, const floating* grad, floating* momentum_buffer, Py_ssize_t n,
                  const SGDOptions* options, int num_threads) noexcept nogil:
    """sgd_range over all n elements, in parallel blocks when n is large enough."""
    cdef int threads = threads_for(n, num_threads)
    cdef Py_ssize_t block
    if threads == 1:  # no parallel region for small work
        sgd_range(param, grad, momentum_buffer, 0, n, options)
    else:
        for block in prange((n + BLOCK_ELEMENTS - 1) // BLOCK_ELEMENTS, schedule='static',
                            num_threads=threads):
            sgd_range(param, grad, momentum_buffer, block * BLOCK_ELEMENTS, block_end(block, n), options)


cdef SGDOptions sgd_options(double lr, double weight_decay, double momentum, double dampening,
                            bint nesterov, bint maximize, bint init_buffer) noexcept:
    return SGDOptions(grad_sign=-1.0 if maximize else 1.0, weight_decay=weight_decay, momentum=momentum,
                      one_minus_dampening=1.0 - dampening, neg_lr=-lr, nesterov=nesterov,
                      init_buffer=init_buffer)


def sgd_update(param, grad, momentum_buffer, double lr, double weight_decay, double momentum, double dampening,
               bint nesterov, bint maximize, bint init_buffer, int num_threads):
    """One torch.optim.SGD step for one parameter (flat arrays), in place.

    momentum_buffer is None when momentum == 0; with init_buffer it is filled
    with the (decayed) gradient, as torch does on the first step.
    """
    cdef SGDOptions options = sgd_options(lr, weight_decay, momentum, dampening, nesterov, maximize, init_buffer)
    if float64_call(param, "sgd_update"):
        sgd_update_as(<double> 0, param, grad, momentum_buffer, &options, num_threads)
    else:
        sgd_update_as(<float> 0, param, grad, momentum_buffer, &options, num_threads)


cdef sgd_update_as(floating kind, param_array, grad_array, buffer_array, const SGDOptions* options,
                   int num_threads):
    cdef int typenum = numpy_type(kind)
    cdef cnp.ndarray pa = array_arg(param_array, typenum, 1, True, "sgd_update", "param")
    cdef cnp.ndarray ga = array_arg(grad_array, typenum, 1, False, "sgd_update", "grad")
    cdef cnp.ndarray ba = optional_arg(buffer_array, typenum, 1, True, "sgd_update", "momentum_buffer")
    cdef Py_ssize_t n = dim(pa, 0)
    check_length("sgd_update", "grad", dim(ga, 0), n)
    if ba is not None:
        check_length("sgd_update", "momentum_buffer", dim(ba, 0), n)
    cdef floating* param = <floating*> data(pa)
    cdef const floating* grad = <const floating*> data(ga)
    cdef floating* buffer = <floating*> data(ba)
    if n == 0:
        return
    with nogil:
        sgd_run(param, grad, buffer, n, options, num_threads)


cdef bint updatable(object array, int dtype, Py_ssize_t size, bint written):
    """array is a C-contiguous ndarray of dtype and size (writeable if written): the kernels may use its memory."""
    if type(array) is not cnp.ndarray:
        return False
    cdef cnp.ndarray a = <cnp.ndarray> array
    return (cnp.PyArray_TYPE(a) == dtype and cnp.PyArray_SIZE(a) == size and cnp.PyArray_IS_C_CONTIGUOUS(a)
            and (not written or cnp.PyArray_ISWRITEABLE(a)))


ctypedef struct SGDTask:
    void* param
    const void* grad
    void* momentum_buffer     # NULL without momentum
    Py_ssize_t size
    Py_ssize_t first_block    # the task's blocks are first_block .. first_block + blocks(size) - 1
    bint float32
    const SGDOptions* options


cdef void sgd_blocks(const SGDTask* tasks, Py_ssize_t count, Py_ssize_t first, Py_ssize_t end) noexcept nogil:
    """Blocks first..end-1 of the tasks' blocks, numbered across the tasks in order."""
    cdef Py_ssize_t t = 0, block, start
    for block in range(first, end):
        while t + 1 < count and tasks[t + 1].first_block <= block:
            t += 1
        start = (block - tasks[t].first_block) * BLOCK_ELEMENTS
        if tasks[t].float32:
            sgd_range(<float*> tasks[t].param, <const float*> tasks[t].grad, <float*> tasks[t].momentum_buffer,
                      start, block_end(block - tasks[t].first_block, tasks[t].size), tasks[t].options)
        else:
            sgd_range(<double*> tasks[t].param, <const double*> tasks[t].grad, <double*> tasks[t].momentum_buffer,
                      start, block_end(block - tasks[t].first_block, tasks[t].size), tasks[t].options)


def sgd_foreach(list params, list grads, list momentum_buffers, list fresh_buffers, double lr,
                double weight_decay, double momentum, double dampening, bint nesterov, bint maximize,
                int num_threads):
    """sgd_update for every parameter of a group in one call (like torch's foreach kernels).

    params, grads and (when momentum != 0, else None) momentum_buffers are lists of ndarrays of
    any shape; fresh_buffers is None, or one bool per parameter: that buffer starts as the gradient.
    Returns False, having changed nothing, unless every array is C-contiguous, float32 or float64
    as its parameter, and of its parameter's size (the caller then updates parameter by parameter).

    Every parameter's blocks of BLOCK_ELEMENTS go into one list that one parallel region shares
    out: a model's many small parameters no longer run serially one by one, and one region
    replaces one per large parameter (LeNet's ten parameters).  Each element is updated alone,
    so the split changes nothing in the results.
    """
    cdef Py_ssize_t count = len(params), i, n, total_blocks = 0, total_size = 0
    cdef int dtype, threads, member
    cdef SGDOptions plain = sgd_options(lr, weight_decay, momentum, dampening, nesterov, maximize, False)
    cdef SGDOptions first = sgd_options(lr, weight_decay, momentum, dampening, nesterov, maximize, True)
    cdef cnp.ndarray param
    cdef SGDTask* tasks
    if (len(grads) != count or (momentum_buffers is not None and len(momentum_buffers) != count)
            or (fresh_buffers is not None and len(fresh_buffers) != count)):
        return False
    for i in range(count):
        if type(params[i]) is not cnp.ndarray:
            return False
        param = <cnp.ndarray> params[i]
        dtype = cnp.PyArray_TYPE(param)
        n = cnp.PyArray_SIZE(param)
        if ((dtype != cnp.NPY_FLOAT32 and dtype != cnp.NPY_FLOAT64) or not updatable(param, dtype, n, True)
                or not updatable(grads[i], dtype, n, False)
                or (momentum_buffers is not None and not updatable(momentum_buffers[i], dtype, n, True))):
            return False
    tasks = <SGDTask*> malloc(max(count, 1) * sizeof(SGDTask))
    if tasks == NULL:
        raise MemoryError("sgd_foreach: could not allocate the task list")
    for i in range(count):
        param = <cnp.ndarray> params[i]
        n = cnp.PyArray_SIZE(param)
        tasks[i].param = cnp.PyArray_DATA(param)
        tasks[i].grad = cnp.PyArray_DATA(<cnp.ndarray> grads[i])
        tasks[i].momentum_buffer = (NULL if momentum_buffers is None
                                    else cnp.PyArray_DATA(<cnp.ndarray> momentum_buffers[i]))
        tasks[i].size = n
        tasks[i].first_block = total_blocks
        tasks[i].float32 = cnp.PyArray_TYPE(param) == cnp.NPY_FLOAT32
        tasks[i].options = &first if fresh_buffers is not None and fresh_buffers[i] else &plain
        total_blocks += (n + BLOCK_ELEMENTS - 1) // BLOCK_ELEMENTS
        total_size += n
    threads = threads_for(total_size, num_threads)
    if threads == 1:  # no parallel region for small work
        with nogil:
            sgd_blocks(tasks, count, 0, total_blocks)
    else:
        for member in prange(threads, nogil=True, schedule='static', num_threads=threads):
            sgd_blocks(tasks, count, total_blocks * member // threads, total_blocks * (member + 1) // threads)
    free(tasks)
    return True


# ----------------------------------------------------------------------- Adam

ctypedef struct AdamOptions:
    double grad_sign                  # -1 to maximize
    double l2_weight_decay            # added to the gradient (Adam)
    double decoupled_decay_factor     # 1 - lr * weight_decay (AdamW), else 1
    double beta1
    double beta2
    double bias_correction2_sqrt
    double eps
    double neg_step_size


cdef inline void adam_element(floating* param, const floating* grad, floating* exp_avg,
                              floating* exp_avg_sq, floating* max_exp_avg_sq, Py_ssize_t i,
                              floating grad_sign, floating l2_weight_decay,
                              floating decoupled_decay_factor, floating lerp_coefficient,
                              bint lerp_from_start, floating beta2, floating one_minus_beta2,
                              floating bias_correction2_sqrt, floating eps,
                              floating neg_step_size) noexcept nogil:
    cdef floating p = param[i]
    cdef floating g = grad_sign * grad[i]
    cdef floating m = exp_avg[i]
    cdef floating decayed = fused_multiply_add(p, l2_weight_decay, g)
    cdef floating v, denom
    g = decayed if l2_weight_decay != 0 else g
    p = rounded_product(p, decoupled_decay_factor)
    # exp_avg.lerp_(g, w): ATen's vectorised lerp is fmadd(w, g - m, m) for |w| < 0.5
    # and fmadd(w - 1, g - m, g) otherwise.
    m = fused_multiply_add(lerp_coefficient, g - m, m if lerp_from_start else g)
    exp_avg[i] = m
    # exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2); ATen's vectorised
    # addcmul compiles to fmadd(value * t1, t2, self).
    v = fused_multiply_add(one_minus_beta2 * g, g, exp_avg_sq[i] * beta2)
    exp_avg_sq[i] = v
    if max_exp_avg_sq != NULL:
        v = nan_propagating_max(max_exp_avg_sq[i], v)
        max_exp_avg_sq[i] = v
    denom = square_root(v) / bias_correction2_sqrt + eps
    param[i] = p + neg_step_size * m / denom


cdef void adam_range(floating* param, const floating* grad, floating* exp_avg,
                     floating* exp_avg_sq, floating* max_exp_avg_sq,
                     Py_ssize_t start, Py_ssize_t end, const AdamOptions* o) noexcept nogil:
    # Scalars are rounded to the parameter dtype first, as ATen does.
    cdef floating lerp_weight = <floating>(1.0 - o.beta1)
    cdef bint lerp_from_start = (lerp_weight if lerp_weight >= 0 else -lerp_weight) < 0.5
    cdef floating lerp_coefficient = lerp_weight if lerp_from_start else lerp_weight - 1
    cdef floating grad_sign = <floating>o.grad_sign
    cdef floating l2_weight_decay = <floating>o.l2_weight_decay
    cdef floating decoupled_decay_factor = <floating>o.decoupled_decay_factor
    cdef floating beta2 = <floating>o.beta2
    cdef floating one_minus_beta2 = <floating>(1.0 - o.beta2)
    cdef floating bias_correction2_sqrt = <floating>o.bias_correction2_sqrt
    cdef floating eps = <floating>o.eps
    cdef floating neg_step_size = <floating>o.neg_step_size
    cdef Py_ssize_t i
    if max_exp_avg_sq == NULL:
        for i in range(start, end):
            adam_element(param, grad, exp_avg, exp_avg_sq, <floating*>NULL, i, grad_sign,
                         l2_weight_decay, decoupled_decay_factor, lerp_coefficient,
                         lerp_from_start, beta2, one_minus_beta2, bias_correction2_sqrt, eps,
                         neg_step_size)
    else:
        for i in range(start, end):
            adam_element(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, i, grad_sign,
                         l2_weight_decay, decoupled_decay_factor, lerp_coefficient,
                         lerp_from_start, beta2, one_minus_beta2, bias_correction2_sqrt, eps,
                         neg_step_size)


def adam_update(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, double step_size, double bias_correction2_sqrt,
                double beta1, double beta2, double eps, double weight_decay, double lr, bint decoupled_weight_decay,
                bint maximize, int num_threads):
    """One torch.optim.Adam step for one parameter (flat arrays), in place.

    step_size = lr / (1 - beta1**step) and bias_correction2_sqrt =
    (1 - beta2**step)**0.5 are computed by the caller in double, as torch does.
    max_exp_avg_sq is None unless amsgrad.  With decoupled_weight_decay (AdamW)
    the parameter is first multiplied by 1 - lr * weight_decay.
    """
    cdef bint decoupled = decoupled_weight_decay and weight_decay != 0
    cdef AdamOptions options = AdamOptions(
        grad_sign=-1.0 if maximize else 1.0,
        l2_weight_decay=0.0 if decoupled else weight_decay,
        decoupled_decay_factor=1.0 - lr * weight_decay if decoupled else 1.0,
        beta1=beta1, beta2=beta2, bias_correction2_sqrt=bias_correction2_sqrt, eps=eps,
        neg_step_size=-step_size)
    if float64_call(param, "adam_update"):
        adam_update_as(<double> 0, param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, &options, num_threads)
    else:
        adam_update_as(<float> 0, param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, &options, num_threads)


cdef adam_update_as(floating kind, param_array, grad_array, exp_avg_array, exp_avg_sq_array, max_array,
                    const AdamOptions* options, int num_threads):
    cdef int typenum = numpy_type(kind)
    cdef cnp.ndarray pa = array_arg(param_array, typenum, 1, True, "adam_update", "param")
    cdef cnp.ndarray ga = array_arg(grad_array, typenum, 1, False, "adam_update", "grad")
    cdef cnp.ndarray ea = array_arg(exp_avg_array, typenum, 1, True, "adam_update", "exp_avg")
    cdef cnp.ndarray sa = array_arg(exp_avg_sq_array, typenum, 1, True, "adam_update", "exp_avg_sq")
    cdef cnp.ndarray ma = optional_arg(max_array, typenum, 1, True, "adam_update", "max_exp_avg_sq")
    cdef Py_ssize_t n = dim(pa, 0), block
    check_length("adam_update", "grad", dim(ga, 0), n)
    check_length("adam_update", "exp_avg", dim(ea, 0), n)
    check_length("adam_update", "exp_avg_sq", dim(sa, 0), n)
    if ma is not None:
        check_length("adam_update", "max_exp_avg_sq", dim(ma, 0), n)
    cdef floating* param = <floating*> data(pa)
    cdef const floating* grad = <const floating*> data(ga)
    cdef floating* exp_avg = <floating*> data(ea)
    cdef floating* exp_avg_sq = <floating*> data(sa)
    cdef floating* max_ptr = <floating*> data(ma)
    if n == 0:
        return
    cdef int threads = threads_for(n, num_threads)
    with nogil:
        if threads == 1:
            adam_range(param, grad, exp_avg, exp_avg_sq, max_ptr, 0, n, options)
        else:
            for block in prange((n + BLOCK_ELEMENTS - 1) // BLOCK_ELEMENTS, schedule='static',
                                num_threads=threads):
                adam_range(param, grad, exp_avg, exp_avg_sq, max_ptr, block * BLOCK_ELEMENTS, block_end(block, n),
                           options)
