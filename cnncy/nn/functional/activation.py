"""relu, softmax and log_softmax, as torch.nn.functional, on the kernels in cnncy._activation."""
import math
import warnings

import numpy as np

from ... import _activation
from ..._threads import get_num_threads
from ...autograd import Function
from ...tensor import Tensor, _normalize_dims, _normalize_dtype
from ..._frames import user_stacklevel
from . import fusion
from ._inplace import apply_inplace
from ._validation import _FLOAT_DTYPES, check_tensor


def _contiguous(array):
    """array itself when C-contiguous, else a C-contiguous copy (keeps 0-d arrays 0-d)."""
    return array if array.flags.c_contiguous else np.ascontiguousarray(array)


class ReLUFunction(Function):
    """max(x, 0); with `inplace` the result is written into x's array."""

    fresh_input_grads = True  # backward allocates every gradient it returns

    @staticmethod
    def forward(ctx, x, inplace):
        source = _contiguous(x)
        out = source if inplace and source is x else np.empty_like(source)
        _activation.relu_forward(source.reshape(-1), out.reshape(-1), get_num_threads())
        if inplace and out is not x:
            np.copyto(x, out)
            out = x
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        (out,) = ctx.saved_tensors
        out = _contiguous(out)
        grad_out = _contiguous(grad_out.astype(out.dtype, copy=False))
        grad_x = np.empty_like(out)
        _activation.relu_backward(grad_out.reshape(-1), out.reshape(-1), grad_x.reshape(-1),
                                  get_num_threads())
        return grad_x, None


def _rows(array, dim):
    """array with `dim` moved last, as a C-contiguous 2-D [rows, size of dim] array."""
    moved = np.moveaxis(array.reshape(1) if array.ndim == 0 else array, dim, -1)
    return np.ascontiguousarray(moved).reshape(math.prod(moved.shape[:-1]), moved.shape[-1])


def _unrows(rows, shape, dim):
    """Inverse of _rows: a C-contiguous array of `shape`."""
    if not shape:
        return rows.reshape(())
    moved_shape = shape[:dim] + shape[dim + 1:] + (shape[dim],)
    return np.ascontiguousarray(np.moveaxis(rows.reshape(moved_shape), -1, dim))


class SoftmaxFunction(Function):
    """softmax (or log_softmax when `log`) along the normalized dimension `dim`."""

    fresh_input_grads = True  # backward allocates every gradient it returns

    @staticmethod
    def forward(ctx, x, dim, log):
        rows = _rows(x, dim)
        out = np.empty_like(rows)
        kernel = _activation.log_softmax_forward if log else _activation.softmax_forward
        kernel(rows, out, get_num_threads())
        ctx.save_for_backward(out)
        ctx.shape, ctx.dim, ctx.log = x.shape, dim, log
        return _unrows(out, x.shape, dim)

    @staticmethod
    def backward(ctx, grad_out):
        (out,) = ctx.saved_tensors
        grad_rows = _rows(grad_out.astype(out.dtype, copy=False), ctx.dim)
        grad_x = np.empty_like(out)
        kernel = _activation.log_softmax_backward if ctx.log else _activation.softmax_backward
        kernel(grad_rows, out, grad_x, get_num_threads())
        return _unrows(grad_x, ctx.shape, ctx.dim), None, None


def relu(input, inplace=False):
    """max(input, 0) elementwise (NaN and -0.0 pass through, as in torch).

    Args:
        input: tensor of any shape; float32/float64 (with autograd) or an integer dtype.
        inplace: write the result into input and return input. Default: False.
    """
    check_tensor("relu", "input", input)
    dtype = input.dtype
    if dtype not in _FLOAT_DTYPES:
        if dtype == np.bool_:
            raise RuntimeError("relu: Boolean inputs not supported for relu")
        result = np.where(input._array < 0, input._array.dtype.type(0), input._array)
        if inplace:
            input._array[...] = result
            return input
        return Tensor._wrap(result)
    deferred = fusion.defer_relu(input, inplace, lambda conv: ReLUFunction.apply(conv, False))
    if deferred is not None:  # relu of a conv2d that is not computed yet (see fusion.py)
        return deferred
    if inplace:
        return apply_inplace("relu_", ReLUFunction, input, True)
    deferred = fusion.defer_relu_of_conv(input, lambda: ReLUFunction.apply(input, False))
    if deferred is not None:  # relu of a conv2d output: a max_pool2d may fuse it (see fusion.py)
        return deferred
    return ReLUFunction.apply(input, False)


def _softmax_dim(op, ndim):
    """torch's implicit choice of dim, with its deprecation warning at the user's line."""
    warnings.warn(f"Implicit dimension choice for {op} has been deprecated. "
                  "Change the call to include dim=X as an argument.", stacklevel=user_stacklevel())
    return 0 if ndim in (0, 1, 3) else 1


def _softmax(op, input, dim, dtype, log):
    check_tensor(op, "input", input)
    if dim is None:
        dim = _softmax_dim(op, input.ndim)
    if dtype is not None:
        input = input.to(_normalize_dtype(dtype))
    (dim,) = _normalize_dims(dim, input.ndim)
    if input.dtype not in _FLOAT_DTYPES:
        raise NotImplementedError(f"{op}: only float32 and float64 inputs are supported, "
                                  f"got {input.dtype}")
    return SoftmaxFunction.apply(input, dim, log)


def softmax(input, dim=None, _stacklevel=3, dtype=None):
    """exp(x) / sum(exp(x)) along `dim`, computed stably (the maximum is subtracted first).

    Args:
        input: float32 or float64 tensor.
        dim: the dimension to normalize over. None picks torch's deprecated implicit choice.
        dtype: if given, input is cast to it first.
        _stacklevel: accepted as torch does; the implicit-dim warning always points at the
            first line outside cnncy.
    """
    return _softmax("softmax", input, dim, dtype, False)


def log_softmax(input, dim=None, _stacklevel=3, dtype=None):
    """x - max - log(sum(exp(x - max))) along `dim`.

    Args:
        input: float32 or float64 tensor.
        dim: the dimension to normalize over. None picks torch's deprecated implicit choice.
        dtype: if given, input is cast to it first.
        _stacklevel: accepted as torch does (see softmax).
    """
    return _softmax("log_softmax", input, dim, dtype, True)
