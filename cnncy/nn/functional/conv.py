"""conv2d, as torch.nn.functional.conv2d (groups=1 and dilation=1), on the kernels in cnncy._conv."""
import numbers

import numpy as np

from ... import _conv
from ..._threads import get_num_threads
from ...autograd import Function
from . import fusion
from ._validation import check_float_dtypes, check_tensor


class Conv2dFunction(Function):
    """conv2d of a validated (C, H, W) or (N, C, H, W) input.

    `padding` is applied on both sides; `extra_padding` adds rows/columns of zeros at the
    bottom/right only, for padding='same' with an even kernel (as torch pads).
    """

    fresh_input_grads = True  # backward allocates every gradient it returns

    @staticmethod
    def forward(ctx, input, weight, bias, stride, padding, extra_padding):
        unbatched = input.ndim == 3
        x = np.ascontiguousarray(input[None] if unbatched else input)
        if extra_padding != (0, 0):
            x = np.pad(x, ((0, 0), (0, 0), (0, extra_padding[0]), (0, extra_padding[1])))
        weight = np.ascontiguousarray(weight)
        bias = None if bias is None else np.ascontiguousarray(bias)
        n, _, height, width = x.shape
        out_channels, _, kernel_h, kernel_w = weight.shape
        out_h = (height + 2 * padding[0] - kernel_h) // stride[0] + 1
        out_w = (width + 2 * padding[1] - kernel_w) // stride[1] + 1
        out = np.empty((n, out_channels, out_h, out_w), dtype=x.dtype)
        _conv.conv2d_forward(x, weight, bias, out, *stride, *padding, get_num_threads())
        ctx.save_for_backward(x, weight)
        ctx.input_shape = input.shape
        ctx.conv_args = (*stride, *padding)
        return out[0] if unbatched else out

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        unbatched = len(ctx.input_shape) == 3
        grad_out = np.ascontiguousarray(grad_out[None] if unbatched else grad_out, dtype=x.dtype)
        wants_input, wants_weight, wants_bias = ctx.needs_input_grad[:3]
        grad_x = np.empty_like(x) if wants_input else None
        grad_weight = np.empty_like(weight)
        grad_bias = np.empty(weight.shape[0], dtype=x.dtype) if wants_bias else None
        _conv.conv2d_backward(x, weight, grad_out, grad_x, grad_weight, grad_bias, *ctx.conv_args,
                              get_num_threads())
        if grad_x is not None:
            # Drop the gradient of the extra 'same' padding, and the batch axis of an unbatched input.
            height, width = ctx.input_shape[-2:]
            grad_x = grad_x[:, :, :height, :width]
            grad_x = np.ascontiguousarray(grad_x[0] if unbatched else grad_x)
        return grad_x, grad_weight if wants_weight else None, grad_bias, None, None, None


fusion.RELU_POOL_PRODUCERS.add(Conv2dFunction)


def _pair(name, value):
    """An int or a sequence of 1 or 2 ints -> a pair of ints, with torch's errors."""
    # The exact types first: what nn.Conv2d (a pair) and most functional calls (an int) pass.
    if type(value) is tuple and len(value) == 2 and type(value[0]) is int and type(value[1]) is int:
        return value
    if type(value) is int:
        return value, value
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value), int(value)
    if isinstance(value, (tuple, list)) and all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value):
        if len(value) == 1:
            return int(value[0]), int(value[0])
        if len(value) == 2:
            return int(value[0]), int(value[1])
        raise RuntimeError(f"conv2d: expected {name} to be a single integer value or a list of 2 values "
                           f"to match the convolution dimensions, but got {name}={list(value)}")
    raise TypeError(f"conv2d(): argument '{name}' must be an int or a tuple of 2 ints, "
                    f"not {type(value).__name__}")


def _resolve_padding(padding, stride, kernel_size):
    """(symmetric padding, extra bottom/right padding) for an int, pair or 'valid'/'same'."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0), (0, 0)
        if padding == "same":
            if stride != (1, 1):
                raise RuntimeError("conv2d: padding='same' is not supported for strided convolutions")
            totals = [k - 1 for k in kernel_size]
            return tuple(t // 2 for t in totals), tuple(t % 2 for t in totals)
        raise RuntimeError(f"conv2d: Invalid padding string: '{padding}' (expected 'valid' or 'same')")
    pair = _pair("padding", padding)
    if pair[0] < 0 or pair[1] < 0:
        raise RuntimeError(f"conv2d: negative padding is not supported, got padding={list(pair)}")
    return pair, (0, 0)


def _check_groups(groups):
    """torch's errors for any groups but the int 1."""
    if isinstance(groups, bool) or not isinstance(groups, numbers.Integral):
        raise TypeError(f"conv2d(): argument 'groups' must be int, not {type(groups).__name__}")
    if groups <= 0:
        raise RuntimeError("conv2d: non-positive groups is not supported")
    if groups != 1:
        raise NotImplementedError(f"conv2d: only groups=1 is supported, got groups={groups}")


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution (cross-correlation) over an input of shape (N, C, H, W) or (C, H, W).

    Args:
        input: tensor of shape (N, C_in, H, W), or (C_in, H, W) unbatched.
        weight: tensor of shape (C_out, C_in, kH, kW).
        bias: optional tensor of shape (C_out,).
        stride: int or (sH, sW), positive.
        padding: int, (pH, pW), 'valid' or 'same' (stride 1 only): zeros added on each side.
        dilation: only 1 is supported.
        groups: only 1 is supported.

    Shape:
        Output: (N, C_out, H_out, W_out) with H_out = (H + 2 * pH - kH) // sH + 1, likewise W_out;
        (C_out, H_out, W_out) for an unbatched input.
    """
    check_tensor("conv2d", "input", input)
    check_tensor("conv2d", "weight", weight)
    check_tensor("conv2d", "bias", bias, optional=True)
    # The arrays' own shapes and dtypes: a deferred input is computed here, as the conv needs it anyway.
    input_array, weight_array = input._array, weight._array
    bias_array = None if bias is None else bias._array
    input_shape, weight_shape = input_array.shape, weight_array.shape
    if len(input_shape) not in (3, 4):
        raise RuntimeError(f"conv2d: Expected 3D (unbatched) or 4D (batched) input to conv2d, "
                           f"but got input of size: {list(input_shape)}")
    if len(weight_shape) != 4:
        raise RuntimeError(f"conv2d: expected weight to be 4-dimensional (out_channels, in_channels, "
                           f"kH, kW), but got weight of size {list(weight_shape)}")
    if type(groups) is not int or groups != 1:
        _check_groups(groups)
    dilation = _pair("dilation", dilation)
    if dilation != (1, 1):
        if dilation[0] <= 0 or dilation[1] <= 0:
            raise RuntimeError("conv2d: dilation should be greater than zero")
        raise NotImplementedError(f"conv2d: only dilation=1 is supported, got dilation={list(dilation)}")
    stride = _pair("stride", stride)
    if stride[0] <= 0 or stride[1] <= 0:
        raise RuntimeError(f"conv2d: non-positive stride is not supported, got stride={list(stride)}")
    kernel_size = weight_shape[2:]
    padding, extra_padding = _resolve_padding(padding, stride, kernel_size)
    if input_shape[-3] != weight_shape[1]:
        batched_shape = list(input_shape) if len(input_shape) == 4 else [1, *input_shape]
        raise RuntimeError(f"conv2d: Given groups=1, weight of size {list(weight_shape)}, expected "
                           f"input{batched_shape} to have {weight_shape[1]} channels, but got "
                           f"{batched_shape[1]} channels instead")
    check_float_dtypes("conv2d", input_array.dtype, weight_array.dtype, None if bias is None else bias_array.dtype)
    if bias is not None and bias_array.shape != (weight_shape[0],):
        raise RuntimeError(f"conv2d: Given weight of size {list(weight_shape)}, expected bias to be "
                           f"1-dimensional with {weight_shape[0]} elements, but got bias of size "
                           f"{list(bias_array.shape)} instead")
    padded_h = input_shape[-2] + 2 * padding[0] + extra_padding[0]
    padded_w = input_shape[-1] + 2 * padding[1] + extra_padding[1]
    if padded_h < kernel_size[0] or padded_w < kernel_size[1]:
        raise RuntimeError(f"conv2d: Calculated padded input size per channel: ({padded_h} x "
                           f"{padded_w}). Kernel size: ({kernel_size[0]} x {kernel_size[1]}). "
                           f"Kernel size can't be greater than actual input size")
    compute = lambda: Conv2dFunction.apply(input, weight, bias, stride, padding, extra_padding)  # noqa: E731
    # Computed when first needed, unless a relu/max_pool2d fuses it first (see fusion.py).
    deferred = fusion.defer_conv2d(compute, input, weight, bias, stride, padding, extra_padding)
    return deferred if deferred is not None else compute()
