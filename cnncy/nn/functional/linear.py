"""linear, as torch.nn.functional.linear, on the kernels in cnncy._linear."""
import math

import numpy as np

from ... import _linear
from ..._threads import get_num_threads
from ...autograd import Function
from ._validation import check_float_dtypes, check_tensor


class LinearFunction(Function):
    """input @ weight^T + bias over the last axis of a validated input; weight is (O, I) or (I,)."""

    fresh_input_grads = True  # backward allocates every gradient it returns

    @staticmethod
    def forward(ctx, input, weight, bias):
        in_features = input.shape[-1]
        # The usual (N, I) input and (O, I) weight need no reshaping.
        x = input if input.ndim == 2 else input.reshape(math.prod(input.shape[:-1]), in_features)
        weight_2d = weight if weight.ndim == 2 else weight.reshape(1, in_features)
        x = x if x.flags.c_contiguous else np.ascontiguousarray(x)
        weight_2d = weight_2d if weight_2d.flags.c_contiguous else np.ascontiguousarray(weight_2d)
        out_features = weight_2d.shape[0]
        if bias is None or bias.shape == (out_features,):
            bias_full = bias if bias is None or bias.flags.c_contiguous else np.ascontiguousarray(bias)
        else:  # one value for every output (shape () or (1,))
            bias_full = np.ascontiguousarray(np.broadcast_to(bias, (out_features,)))
        out = np.empty((x.shape[0], out_features), dtype=x.dtype)
        _linear.linear_forward(x, weight_2d, bias_full, out, get_num_threads())
        ctx.save_for_backward(x, weight_2d)
        ctx.shapes = (input.shape, weight.shape, None if bias is None else bias.shape)
        if input.ndim == 2 and weight.ndim == 2:
            return out
        # A 1-D weight maps each input row to a scalar, as torch does.
        return out.reshape(input.shape[:-1] + weight.shape[:-1])

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        input_shape, weight_shape, bias_shape = ctx.shapes
        if grad_out.shape != (x.shape[0], weight.shape[0]):
            grad_out = grad_out.reshape(x.shape[0], weight.shape[0])
        if not grad_out.flags.c_contiguous or grad_out.dtype != x.dtype:
            grad_out = np.ascontiguousarray(grad_out, dtype=x.dtype)
        wants_input, wants_weight, wants_bias = ctx.needs_input_grad
        grad_x = np.empty_like(x) if wants_input else None
        grad_weight = np.empty_like(weight)
        grad_bias = np.empty(weight.shape[0], dtype=x.dtype) if wants_bias else None
        _linear.linear_backward(x, weight, grad_out, grad_x, grad_weight, grad_bias, get_num_threads())
        if grad_x is not None and grad_x.shape != input_shape:
            grad_x = grad_x.reshape(input_shape)
        if grad_bias is not None and grad_bias.shape != bias_shape:  # a broadcast bias: () or (1,)
            grad_bias = np.asarray(grad_bias.sum(), dtype=x.dtype).reshape(bias_shape)
        if not wants_weight:
            grad_weight = None
        elif grad_weight.shape != weight_shape:
            grad_weight = grad_weight.reshape(weight_shape)
        return grad_x, grad_weight, grad_bias


def linear(input, weight, bias=None):
    """Applies y = x W^T + b over the last dimension of the input.

    Args:
        input: tensor of shape (*, in_features), at least 1-D.
        weight: tensor of shape (out_features, in_features), or (in_features,).
        bias: optional tensor of shape (out_features,), or one value (shape () or (1,)) for all.

    Shape:
        Output: (*, out_features); (*) for a 1-D weight.
    """
    check_tensor("linear", "input", input)
    check_tensor("linear", "weight", weight)
    check_tensor("linear", "bias", bias, optional=True)
    # The arrays' own shapes and dtypes: a deferred input is computed here, as linear needs it anyway.
    input_array, weight_array = input._array, weight._array
    bias_array = None if bias is None else bias._array
    input_shape, weight_shape = input_array.shape, weight_array.shape
    if not input_shape or not weight_shape:
        raise RuntimeError(f"linear: both arguments to linear need to be at least 1D, but they are "
                           f"{len(input_shape)}D and {len(weight_shape)}D")
    if len(weight_shape) > 2:
        raise RuntimeError(f"linear: expected weight to be 2-D (out_features, in_features), but got "
                           f"weight of size {list(weight_shape)}")
    in_features = weight_shape[-1]
    out_features = weight_shape[0] if len(weight_shape) == 2 else 1
    if input_shape[-1] != in_features:
        rows = math.prod(input_shape[:-1])
        raise RuntimeError(f"linear: mat1 and mat2 shapes cannot be multiplied ({rows}x{input_shape[-1]} "
                           f"and {in_features}x{out_features})")
    check_float_dtypes("linear", input_array.dtype, weight_array.dtype, None if bias is None else bias_array.dtype)
    if bias is not None and bias_array.shape not in ((out_features,), (1,), ()):
        raise RuntimeError(f"linear: expected bias of size [{out_features}] (out_features), but got "
                           f"bias of size {list(bias_array.shape)}")
    return LinearFunction.apply(input, weight, bias)
