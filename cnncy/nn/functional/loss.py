"""cross_entropy and nll_loss, as torch.nn.functional, on the kernels in cnncy._loss.

Class-index targets without label smoothing take a fused path: one kernel does
log_softmax and picks -log_prob[target], and the backward is (softmax - onehot)
times each sample's share of the loss.  Label smoothing and class-probability
targets are composed from log_softmax and tensor ops, with torch's formulas.
The class axis is 1 (0 for an unbatched 1-D input); extra axes (N, C, d1, ...)
are handled by moving the class axis last and flattening.
"""
import warnings

import numpy as np

from ... import _loss
from ..._frames import user_stacklevel
from ..._threads import get_num_threads
from ...autograd import Function
from ...tensor import Tensor
from ._validation import _FLOAT_DTYPES, check_tensor
from .activation import log_softmax

_REDUCTIONS = ("none", "mean", "sum")
_INT64 = np.dtype(np.int64)
_TARGET_DTYPES = (_INT64, np.dtype(np.uint8))
# torch's scalar type names, as its messages print them.
_TORCH_TYPE_NAMES = {"float32": "Float", "float64": "Double", "float16": "Half", "int64": "Long",
                     "int32": "Int", "int16": "Short", "int8": "Char", "uint8": "Byte", "bool": "Bool"}


def _type_name(dtype):
    return _TORCH_TYPE_NAMES.get(np.dtype(dtype).name, np.dtype(dtype).name)


def legacy_reduction(size_average, reduce):
    """torch's mapping of the deprecated size_average/reduce arguments to a reduction string."""
    warnings.warn("size_average and reduce args will be deprecated, please use reduction='mean' "
                  "instead.", stacklevel=user_stacklevel())
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    if size_average and reduce:
        return "mean"
    return "sum" if reduce else "none"


def _divide(total, count):
    """total / count; 0 / 0 is nan (every target ignored), as torch gives, without numpy's warning."""
    if count != 0:  # the usual case, without the cost of an errstate block
        return total / count
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / count


def _rows(input):
    """The input as a C-contiguous [samples, classes] array (class axis moved last)."""
    if input.ndim == 1:
        return np.ascontiguousarray(input[None])
    if input.ndim == 2:
        return np.ascontiguousarray(input)
    classes = input.shape[1]
    return np.ascontiguousarray(np.moveaxis(input, 1, -1)).reshape(-1, classes)


def _unrows(rows, shape):
    """Inverse of _rows for an input of `shape`."""
    if len(shape) <= 2:
        return rows.reshape(shape)
    moved = (shape[0],) + shape[2:] + (shape[1],)
    return np.ascontiguousarray(np.moveaxis(rows.reshape(moved), -1, 1))


class _ClassIndexLoss(Function):
    """nll_loss (or cross_entropy, in subclass) over class-index targets, with weights and reduction.

    forward(input, target, weight, ignore_index, reduction): `target` is the validated int64
    target flattened to one entry per sample, `weight` a per-class array or None.  The kernels
    weigh, reduce and differentiate in one call each (see src/loss.pyx).
    """

    fresh_input_grads = True  # backward allocates every gradient it returns

    @staticmethod
    def kernel_forward(ctx, rows, target, weight, losses, ignore_index, mean):
        """(loss, total weight) from the kernel; fills losses unless it is None."""
        raise NotImplementedError

    @staticmethod
    def kernel_backward(ctx, target, weight, grad_losses, scale, ignore_index):
        """The gradient of the [samples, classes] rows."""
        raise NotImplementedError

    @classmethod
    def forward(cls, ctx, input, target, weight, ignore_index, reduction):
        rows = _rows(input)
        losses = np.empty(rows.shape[0], dtype=rows.dtype) if reduction == "none" else None
        loss, total_weight = cls.kernel_forward(ctx, rows, target, weight, losses, ignore_index,
                                                reduction == "mean")
        ctx.input_shape, ctx.dtype, ctx.reduction = input.shape, rows.dtype, reduction
        ctx.target, ctx.weight, ctx.ignore_index = target, weight, ignore_index
        if losses is not None:
            return losses.reshape(() if input.ndim == 1 else (input.shape[0],) + input.shape[2:])
        ctx.total_weight = rows.dtype.type(total_weight)
        return np.array(loss, dtype=rows.dtype)

    @classmethod
    def backward(cls, ctx, grad_out):
        if ctx.reduction == "none":
            grad_losses, scale = np.ascontiguousarray(grad_out.reshape(-1), dtype=ctx.dtype), 1.0
        else:
            # In the dtype, as torch: grad_out / total_weight for a mean.
            grad_losses, scale = None, ctx.dtype.type(grad_out)
            if ctx.reduction == "mean":
                scale = _divide(scale, ctx.total_weight)
        grad_rows = cls.kernel_backward(ctx, ctx.target, ctx.weight, grad_losses, scale,
                                        ctx.ignore_index)
        return _unrows(grad_rows, ctx.input_shape), None, None, None, None


class NLLLossFunction(_ClassIndexLoss):
    """-weight[t] * input[i, t] per sample."""

    @staticmethod
    def kernel_forward(ctx, rows, target, weight, losses, ignore_index, mean):
        ctx.rows_shape = rows.shape
        return _loss.nll_forward(rows, target, weight, losses, ignore_index, mean)

    @staticmethod
    def kernel_backward(ctx, target, weight, grad_losses, scale, ignore_index):
        grad = np.empty(ctx.rows_shape, dtype=ctx.dtype)
        _loss.nll_backward(grad, target, weight, grad_losses, scale, ignore_index)
        return grad


class CrossEntropyFunction(_ClassIndexLoss):
    """-weight[t] * log_softmax(input)[i, t] per sample, fused."""

    @staticmethod
    def kernel_forward(ctx, rows, target, weight, losses, ignore_index, mean):
        log_probs = np.empty_like(rows)
        ctx.save_for_backward(log_probs)
        return _loss.cross_entropy_forward(rows, target, weight, log_probs, losses, ignore_index, mean,
                                           get_num_threads())

    @staticmethod
    def kernel_backward(ctx, target, weight, grad_losses, scale, ignore_index):
        (log_probs,) = ctx.saved_tensors
        grad = np.empty_like(log_probs)
        _loss.cross_entropy_backward(log_probs, target, weight, grad_losses, scale, grad, ignore_index,
                                     get_num_threads())
        return grad


# ----------------------------------------------------------------- argument checks

def _check_reduction(op, reduction):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{op}: {reduction} is not a valid value for reduction")


def _check_class_targets(op, input, target, weight, ignore_index):
    """torch's nll_loss_nd checks, in its order; returns the int64 target flattened per sample."""
    input_shape, target_shape = input.shape, target.shape
    input_ndim, target_ndim = len(input_shape), len(target_shape)
    if input_ndim < 1:
        raise ValueError(f"{op}: Expected 1 or more dimensions (got 0)")
    target_batch = target_shape[0] if target_ndim else 0
    if input_ndim != 1 and input_shape[0] != target_batch:
        raise ValueError(f"{op}: Expected input batch_size ({input_shape[0]}) to match target "
                         f"batch_size ({target_batch}).")
    if input_ndim == 1 and target_ndim == 1 and target_shape[0] != 1:
        raise ValueError(f"{op}: For 1D input, 1D target must have size 1, but got target size: "
                         f"{target_shape[0]}")
    if input_ndim <= 2 and target_ndim > 1:
        raise RuntimeError(f"{op}: 0D or 1D target tensor expected, multi-target not supported")
    if input_ndim > 2 and target_shape[1:] != input_shape[2:]:
        expected = [input_shape[0], *input_shape[2:]]
        raise RuntimeError(f"{op}: Expected target size {expected}, got {list(target_shape)}")
    classes = input_shape[0] if input_ndim == 1 else input_shape[1]
    if weight is not None and (weight.ndim != 1 or weight.shape[0] != classes):
        raise RuntimeError(f"{op}: weight tensor should be defined either for all {classes} classes "
                           f"or no classes but got weight tensor of shape: {list(weight.shape)}")
    target_dtype = target.dtype
    if target_dtype not in _TARGET_DTYPES:
        raise RuntimeError(f"{op}: expected target dtype to be Long or Byte, but got "
                           f"{_type_name(target_dtype)}")
    if weight is not None and weight.dtype != input.dtype:
        raise RuntimeError(f"{op}: expected scalar type {_type_name(input.dtype)} but found "
                           f"{_type_name(weight.dtype)}")
    flat = target._array
    if target_ndim != 1 or target_dtype != _INT64 or not flat.flags.c_contiguous:
        flat = np.ascontiguousarray(flat.reshape(-1), dtype=_INT64)
    bad = _loss.first_bad_target(flat, classes, int(ignore_index))
    if bad >= 0:
        raise IndexError(f"{op}: Target {flat[bad]} is out of bounds.")
    return flat


def _check_float_input(op, input):
    if input.dtype not in _FLOAT_DTYPES:
        raise NotImplementedError(f"{op}: only float32 and float64 inputs are supported, "
                                  f"got {input.dtype}")


def _weight_array(weight):
    return None if weight is None else np.ascontiguousarray(weight._array)


# ----------------------------------------------------------------- composed paths

class _ZeroWhere(Function):
    """x with the entries under `mask` set to zero (torch's masked_fill_(mask, 0))."""

    @staticmethod
    def forward(ctx, x, mask):
        ctx.mask = mask
        return np.where(mask, x.dtype.type(0), x)

    @staticmethod
    def backward(ctx, grad_out):
        return np.where(ctx.mask, grad_out.dtype.type(0), grad_out), None


def _mean_over(total, count):
    """total / count as a differentiable tensor; nan (without numpy's 0/0 warning) when count is 0."""
    if count == 0:
        return total * Tensor._wrap(np.asarray(np.nan, dtype=total.dtype))
    return total / Tensor._wrap(np.asarray(count, dtype=total.dtype))


def _class_weights_like(weight, input, class_dim):
    """weight shaped to broadcast along the class axis of input."""
    shape = [1] * input.ndim
    shape[class_dim] = weight.shape[0]
    return weight.reshape(shape)


def _label_smoothing_loss(input, target, weight, ignore_index, reduction, label_smoothing):
    """torch's cross_entropy_loss_label_smoothing, composed from differentiable ops."""
    class_dim = 0 if input.ndim == 1 else 1
    classes = input.shape[class_dim]
    log_probs = log_softmax(input, class_dim)
    nll = nll_loss(log_probs, target, weight, ignore_index=ignore_index, reduction=reduction)
    weighted = log_probs if weight is None else log_probs * _class_weights_like(weight, input, class_dim)
    keep = target._array != ignore_index
    smooth = _ZeroWhere.apply(-weighted.sum(class_dim), ~keep)
    if reduction == "sum":
        smooth = smooth.sum()
    elif reduction == "mean":
        kept = target._array[keep].astype(np.int64)
        total = weight._array[kept].sum() if weight is not None else keep.sum()
        smooth = _mean_over(smooth.sum(), total)
    return nll * (1 - label_smoothing) + smooth * (label_smoothing / classes)


def _probability_target_loss(op, input, target, weight, reduction, label_smoothing):
    """torch's cross_entropy_loss_prob_target: -sum(weight * target * log_softmax(input))."""
    class_dim = 0 if input.ndim == 1 else 1
    classes = input.shape[class_dim]
    if weight is not None and (weight.ndim != 1 or weight.shape[0] != classes):
        raise RuntimeError(f"{op}: weight tensor should be defined either for all {classes} classes "
                           f"or no classes but got weight tensor of shape: {list(weight.shape)}")
    if label_smoothing > 0:
        target = target * (1 - label_smoothing) + label_smoothing / classes
    terms = log_softmax(input, class_dim) * target
    if weight is not None:
        terms = terms * _class_weights_like(weight, input, class_dim)
    if reduction == "none":
        return -terms.sum(class_dim)
    total = -terms.sum()
    if reduction == "sum":
        return total
    return _mean_over(total, input.numel() // classes)


# ----------------------------------------------------------------- public ops

def nll_loss(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
             reduction="mean"):
    """Negative log-likelihood of class-index targets: -weight[t] * input[i, t] per sample.

    Args:
        input: (N, C) log-probabilities, (C,) unbatched, or (N, C, d1, ...).
        target: int64 (or uint8) class indices, shape (N,), () or (N, d1, ...).
        weight: optional per-class weights, shape (C,), same dtype as input.
        ignore_index: target value that contributes neither loss nor gradient. Default: -100.
        reduction: 'none' | 'mean' (divided by the summed weights of the kept targets) | 'sum'.
    """
    op = "nll_loss"
    check_tensor(op, "input", input)
    check_tensor(op, "target", target)
    check_tensor(op, "weight", weight, optional=True)
    if size_average is not None or reduce is not None:
        reduction = legacy_reduction(size_average, reduce)
    _check_reduction(op, reduction)
    _check_float_input(op, input)
    flat_target = _check_class_targets(op, input, target, weight, ignore_index)
    return NLLLossFunction.apply(input, flat_target, _weight_array(weight), int(ignore_index),
                                 reduction)


def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
                  reduction="mean", label_smoothing=0.0):
    """Cross-entropy between logits and class-index or class-probability targets.

    Args:
        input: (N, C) logits, (C,) unbatched, or (N, C, d1, ...).
        target: int64 (or uint8) class indices shaped like input without the class axis, or
            float class probabilities shaped like input.
        weight: optional per-class weights, shape (C,), same dtype as input.
        ignore_index: class-index target value that contributes neither loss nor gradient.
        reduction: 'none' | 'mean' | 'sum'. For class indices 'mean' divides by the summed
            weights of the kept targets (nan when there are none), as torch does.
        label_smoothing: in [0, 1]; mixes the target with the uniform distribution.
    """
    op = "cross_entropy"
    check_tensor(op, "input", input)
    check_tensor(op, "target", target)
    check_tensor(op, "weight", weight, optional=True)
    if size_average is not None or reduce is not None:
        reduction = legacy_reduction(size_average, reduce)
    _check_reduction(op, reduction)
    if input.shape == target.shape:
        if target.dtype not in _FLOAT_DTYPES:
            raise RuntimeError(f"{op}: Expected floating point type for target with class "
                               f"probabilities, got {_type_name(target.dtype)}")
        if ignore_index >= 0:
            raise RuntimeError(f"{op}: ignore_index is not supported for floating point target")
        _check_float_input(op, input)
        if label_smoothing > 1:
            raise RuntimeError(f"{op}: label_smoothing must be between 0.0 and 1.0. "
                               f"Got: {label_smoothing}")
        return _probability_target_loss(op, input, target, weight, reduction, label_smoothing)
    if label_smoothing > 1:
        raise RuntimeError(f"{op}: label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}")
    _check_float_input(op, input)
    flat_target = _check_class_targets(op, input, target, weight, ignore_index)
    if label_smoothing > 0:
        return _label_smoothing_loss(input, target, weight, ignore_index, reduction, label_smoothing)
    return CrossEntropyFunction.apply(input, flat_target, _weight_array(weight), int(ignore_index),
                                      reduction)
