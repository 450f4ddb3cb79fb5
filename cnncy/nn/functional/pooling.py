"""max_pool2d and avg_pool2d, as torch.nn.functional, on the kernels in cnncy._pooling.

Argument checks follow torch's (ATen's pooling_output_shape and pool2d_shape_check)
in torch's order, with torch's exception types and wording, prefixed by the op name.
"""
import numbers

import numpy as np

from ... import _pooling
from ..._threads import get_num_threads
from ...autograd import Function
from ...tensor import Tensor
from . import fusion
from ._validation import _FLOAT_DTYPES, check_tensor


def _as_batch(x):
    """A C-contiguous (N, C, H, W) array for a 3-D (unbatched) or 4-D array."""
    return np.ascontiguousarray(x[None] if x.ndim == 3 else x)


class MaxPool2dFunction(Function):
    """max_pool2d of a validated (N, C, H, W) or (C, H, W) input.

    `geometry` is (kh, kw, sh, sw, ph, pw, dh, dw, out_h, out_w); `indices_sink` is a
    list that receives the argmax array (shaped like the output), for return_indices.
    """

    fresh_input_grads = True  # backward allocates every gradient it returns

    @staticmethod
    def forward(ctx, input, geometry, indices_sink):
        *window, out_h, out_w = geometry
        x = _as_batch(input)
        out = np.empty(x.shape[:2] + (out_h, out_w), dtype=x.dtype)
        argmax = np.empty(out.shape, dtype=np.int64)
        _pooling.max_pool2d_forward(x, out, argmax, *window, get_num_threads())
        ctx.save_for_backward(argmax)
        ctx.input_shape, ctx.dtype, ctx.window = input.shape, input.dtype, window
        unbatched = input.ndim == 3
        indices_sink.append(argmax[0] if unbatched else argmax)
        return out[0] if unbatched else out

    @staticmethod
    def backward(ctx, grad_out):
        (argmax,) = ctx.saved_tensors
        grad_x = np.empty(argmax.shape[:2] + ctx.input_shape[-2:], dtype=ctx.dtype)
        _pooling.max_pool2d_backward(_as_batch(grad_out.astype(ctx.dtype, copy=False)), argmax,
                                     grad_x, *ctx.window, get_num_threads())
        return grad_x.reshape(ctx.input_shape), None, None


class AvgPool2dFunction(Function):
    """avg_pool2d of a validated (N, C, H, W) or (C, H, W) input.

    `geometry` is (kh, kw, sh, sw, ph, pw, out_h, out_w).
    """

    fresh_input_grads = True  # backward allocates every gradient it returns

    @staticmethod
    def forward(ctx, input, geometry, count_include_pad, divisor_override):
        *window, out_h, out_w = geometry
        x = _as_batch(input)
        out = np.empty(x.shape[:2] + (out_h, out_w), dtype=x.dtype)
        # The kernels take 0 for "no divisor_override" (an explicit 0 was rejected).
        ctx.kernel_args = (*window, count_include_pad, divisor_override or 0)
        ctx.input_shape, ctx.dtype = input.shape, input.dtype
        _pooling.avg_pool2d_forward(x, out, *ctx.kernel_args, get_num_threads())
        return out[0] if input.ndim == 3 else out

    @staticmethod
    def backward(ctx, grad_out):
        grad_out = _as_batch(grad_out.astype(ctx.dtype, copy=False))
        grad_x = np.empty(grad_out.shape[:2] + ctx.input_shape[-2:], dtype=ctx.dtype)
        _pooling.avg_pool2d_backward(grad_out, grad_x, *ctx.kernel_args, get_num_threads())
        return grad_x.reshape(ctx.input_shape), None, None, None


# ----------------------------------------------------------------- argument checks

def _is_int(value):
    # `type is int` first: the ABC check is slow and this runs on every call.
    return type(value) is int or (isinstance(value, numbers.Integral) and not isinstance(value, bool))


def _pair(op, name, value, position, default=None):
    """An int or a sequence of 1 or 2 ints -> (a, b), with torch's errors; None/() -> default."""
    if type(value) is int:  # what most calls pass (nn.MaxPool2d keeps its arguments as given)
        return value, value
    if default is not None and (value is None or (isinstance(value, (tuple, list)) and not value)):
        return default
    if _is_int(value):
        return int(value), int(value)
    if not (isinstance(value, (tuple, list)) and all(_is_int(v) for v in value)):
        where = f" (position {position})" if position else ""
        raise TypeError(f"{op}(): argument '{name}'{where} must be tuple of ints, "
                        f"not {type(value).__name__}")
    if len(value) == 1:
        return int(value[0]), int(value[0])
    if len(value) == 2:
        return int(value[0]), int(value[1])
    either = "either be omitted, a single int," if name == "stride" else "either be a single int,"
    raise RuntimeError(f"{op}: {name} must {either} or a tuple of two ints")


def _half(value):
    """value / 2 rounded toward zero, as C++ integer division does."""
    return value // 2 if value >= 0 else -((-value) // 2)


def _output_size(op, size, kernel, pad, stride, dilation, ceil_mode):
    """ATen's pooling_output_shape: the last window must start inside the input or left padding."""
    if stride == 0:
        raise RuntimeError(f"{op}: stride should not be zero")
    if pad < 0:
        raise RuntimeError(f"{op}: pad must be non-negative, but got pad: {pad}")
    if pad > _half((kernel - 1) * dilation + 1):
        raise RuntimeError(f"{op}: pad should be at most half of effective kernel size, but got "
                           f"pad={pad}, kernel_size={kernel} and dilation={dilation}")
    out = (size + 2 * pad - dilation * (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _check_shape(op, shape, kernel, stride, pad, dilation, out_size):
    """ATen's pool2d_shape_check."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, pad, dilation
    if kh <= 0 or kw <= 0:
        raise RuntimeError(f"{op}: kernel size should be greater than zero, but got kH: {kh} kW: {kw}")
    if sh <= 0 or sw <= 0:
        raise RuntimeError(f"{op}: stride should be greater than zero, but got dH: {sh} dW: {sw}")
    if dh <= 0 or dw <= 0:
        raise RuntimeError(f"{op}: dilation should be greater than zero, but got "
                           f"dilationH: {dh} dilationW: {dw}")
    if len(shape) not in (3, 4) or 0 in shape[-3:]:
        raise RuntimeError(f"{op}: Expected 3D or 4D (batch mode) tensor with optional 0 dim batch "
                           f"size for input, but got: {list(shape)}")
    if kw // 2 < pw or kh // 2 < ph:
        raise RuntimeError(f"{op}: pad should be smaller than or equal to half of kernel size, but got "
                           f"padW = {pw}, padH = {ph}, kW = {kw}, kH = {kh}")
    channels, height, width = shape[-3:]
    if out_size[0] < 1 or out_size[1] < 1:
        raise RuntimeError(f"{op}: Given input size: ({channels}x{height}x{width}). Calculated output "
                           f"size: ({channels}x{out_size[0]}x{out_size[1]}). Output size is too small")


def _check_no_empty_window(op, size, kernel, pad, stride, dilation, out):
    """Every window must hold a real tap (torch reads out of bounds when one does not).

    Only a dilated window that starts in the padding can skip over the whole input.
    """
    for o in range(out):
        start = o * stride - pad
        if not any(0 <= start + m * dilation < size for m in range(kernel)):
            raise RuntimeError(f"{op}: the pooling window of output {o} (kernel {kernel}, dilation "
                               f"{dilation}, padding {pad}) covers no input element of the {size} "
                               f"along its axis; reduce the padding or the dilation")


def _check_float(op, input):
    if input.dtype not in _FLOAT_DTYPES:
        raise NotImplementedError(f"{op}: only float32 and float64 inputs are supported, "
                                  f"got {input.dtype}")


def _geometry(op, input, kernel, stride, pad, dilation, ceil_mode):
    """Validated (output height, output width) for a 3-D or 4-D input."""
    shape = input.shape
    height, width = shape[-2:]
    out_h = _output_size(op, height, kernel[0], pad[0], stride[0], dilation[0], ceil_mode)
    out_w = _output_size(op, width, kernel[1], pad[1], stride[1], dilation[1], ceil_mode)
    _check_shape(op, shape, kernel, stride, pad, dilation, (out_h, out_w))
    _check_float(op, input)
    if dilation != (1, 1) and pad != (0, 0):
        _check_no_empty_window(op, height, kernel[0], pad[0], stride[0], dilation[0], out_h)
        _check_no_empty_window(op, width, kernel[1], pad[1], stride[1], dilation[1], out_w)
    return out_h, out_w


# ----------------------------------------------------------------- public ops

_VALIDATED_ENTRIES = 256
_validated_max_pool = {}


def _validate_max_pool2d(op, input, kernel_size, stride, padding, dilation, ceil_mode):
    """(kernel, stride, padding, dilation, out_h, out_w) of a valid max_pool2d call, else torch's error."""
    kernel = _pair(op, "kernel_size", kernel_size, 2)
    stride = _pair(op, "stride", stride, 3, default=kernel)
    pad = _pair(op, "padding", padding, 4)
    dilation = _pair(op, "dilation", dilation, 5)
    if input.ndim not in (3, 4):
        raise RuntimeError(f"{op}: non-empty 3D or 4D (batch mode) tensor expected for input, "
                           f"got shape {tuple(input.shape)}")
    out_h, out_w = _geometry(op, input, kernel, stride, pad, dilation, ceil_mode)
    return kernel, stride, pad, dilation, out_h, out_w


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """2-D max pooling over an input of shape (N, C, H, W) or (C, H, W).

    Args:
        input: float32 or float64 tensor.
        kernel_size: int or (kH, kW).
        stride: int or (sH, sW). Default: kernel_size.
        padding: int or (pH, pW), implicit -inf padding on both sides, at most half the
            effective kernel size. Default: 0.
        dilation: int or (dH, dW), spacing of the window's taps. Default: 1.
        ceil_mode: round the output size up instead of down; the last window must still
            start inside the input or the left padding. Default: False.
        return_indices: also return the argmax indices (flat h * W + w per plane, int64).

    Ties go to the first maximum in row-major window order and a NaN in a window wins, as in torch.

    Shape:
        Output: (N, C, H_out, W_out) or (C, H_out, W_out), with
        H_out = floor_or_ceil((H + 2 * pH - dH * (kH - 1) - 1) / sH) + 1, likewise W_out.
    """
    op = "max_pool2d"
    check_tensor(op, "input", input)
    # A layer sees the same arguments and input shape step after step: their validated geometry is
    # remembered (for plain int arguments, so that 2.0 or True never match a cached 2 or 1).
    key = None
    if (type(kernel_size) is int and (stride is None or type(stride) is int) and type(padding) is int
            and type(dilation) is int and type(ceil_mode) is bool):
        key = (input.shape, input.dtype, kernel_size, stride, padding, dilation, ceil_mode)
        validated = _validated_max_pool.get(key)
    if key is None or validated is None:
        validated = _validate_max_pool2d(op, input, kernel_size, stride, padding, dilation, ceil_mode)
        if key is not None:
            if len(_validated_max_pool) >= _VALIDATED_ENTRIES:
                _validated_max_pool.clear()
            _validated_max_pool[key] = validated
    kernel, stride, pad, dilation, out_h, out_w = validated
    fused = fusion.fused_max_pool2d(input, kernel, stride, pad, dilation, ceil_mode, return_indices)
    if fused is not None:  # of a conv2d (+ relu) that is not computed yet: one kernel (see fusion.py)
        return fused
    geometry = (*kernel, *stride, *pad, *dilation, out_h, out_w)
    fused = fusion.fused_relu_max_pool2d(input, geometry, return_indices)
    if fused is not None:  # of the relu of a computed conv2d output: relu after pooling (see fusion.py)
        return fused
    sink = []
    out = MaxPool2dFunction.apply(input, geometry, sink)
    return (out, Tensor._wrap(sink[0])) if return_indices else out


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """2-D average pooling over an input of shape (N, C, H, W) or (C, H, W).

    Args:
        input: float32 or float64 tensor.
        kernel_size: int or (kH, kW).
        stride: int or (sH, sW). Default: kernel_size.
        padding: int or (pH, pW), implicit zero padding on both sides, at most half the
            kernel size. Default: 0.
        ceil_mode: round the output size up instead of down. Default: False.
        count_include_pad: count the zero padding in the divisor (not the part of a ceil_mode
            window past the padding). Default: True.
        divisor_override: a nonzero int used as the divisor of every window. Default: None.

    Shape:
        Output: (N, C, H_out, W_out) or (C, H_out, W_out), with
        H_out = floor_or_ceil((H + 2 * pH - kH) / sH) + 1, likewise W_out.
    """
    op = "avg_pool2d"
    check_tensor(op, "input", input)
    kernel = _pair(op, "kernel_size", kernel_size, 2)
    stride = _pair(op, "stride", stride, 3, default=kernel)
    pad = _pair(op, "padding", padding, 4)
    if divisor_override is not None and not _is_int(divisor_override):
        raise TypeError(f"{op}(): argument 'divisor_override' must be int, "
                        f"not {type(divisor_override).__name__}")
    if divisor_override == 0:
        raise RuntimeError(f"{op}: divisor must be not zero")
    if input.ndim < 3:
        # torch reads input.size(-3) before checking the rank.
        if input.ndim == 0:
            raise IndexError(f"{op}: dimension specified as -3 but tensor has no dimensions")
        raise IndexError(f"{op}: Dimension out of range (expected to be in range of "
                         f"[{-input.ndim}, {input.ndim - 1}], but got -3)")
    out_h, out_w = _geometry(op, input, kernel, stride, pad, (1, 1), ceil_mode)
    return AvgPool2dFunction.apply(input, (*kernel, *stride, *pad, out_h, out_w),
                                   bool(count_include_pad), divisor_override)
