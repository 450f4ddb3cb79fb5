"""Lazy fusion of conv2d -> relu -> max_pool2d into one kernel (cnncy._fused).

Small CNNs spend most of their time in this chain, and most of that moving the conv
output through memory three times.  Models call the three ops separately, so the
fusion is lazy:

1. conv2d (stride 1; in training a kernel with few taps) returns a `DeferredConv2d`:
   a Tensor that knows its inputs, shape, dtype and requires_grad but has computed
   nothing.
2. relu of a DeferredConv2d returns another DeferredConv2d that also applies ReLU
   (in place: the same object starts applying ReLU).
3. max_pool2d of a DeferredConv2d, with kernel == stride, no padding, dilation 1,
   no ceil_mode and no return_indices, runs `ConvReluPool2dFunction`: one graph node
   whose inputs are (input, weight, bias).

Where conv2d computes at once (a kernel with many taps, in training), the chain still
fuses its second half: relu of a conv2d output returns a `DeferredReLU`, and max_pool2d
of it runs `ReluMaxPool2dFunction`, which pools the conv output and applies ReLU to the
pooled values (for a 2x2 pool a quarter of them), never writing the ReLU output.

Anything else that touches a deferred tensor (reading its values, its grad_fn, using it
in any other op) computes it the ordinary way, with the ordinary Conv2d (and ReLU)
graph nodes, so the results and gradients are exactly those of the unfused ops: an
intermediate that is also used elsewhere is simply computed as well.  Deferred values
are also computed before any array is changed in place and at the start of backward
(see cnncy.tensor.DeferredTensor), so a late read sees the values of the moment of the
call.  Ops only fuse within one grad mode.
"""
import numpy as np

from ... import _activation, _fused, _pooling
from ..._threads import get_num_threads
from ...autograd import Function, is_grad_enabled
from ...tensor import DeferredTensor, Tensor

# In training, above this many taps per output channel (C_in * kH * kW) conv2d's GEMM beats
# the fused kernel's direct convolution and the gradients it needs, so conv2d computes at once
# there.  Measured at batch 64, fused / unfused time: 0.17 at 9 taps (SimpleCNN), 0.39 at 25
# (LeNet's first layer), 0.41-0.47 at 27, 1.26 at 36, 1.8 at 72, 2.1 at 150.  Without a graph
# the fused kernel is never slower.
MAX_FUSED_TAPS = 32
_MAX_WINDOW = _fused.max_window()


def _records_graph(input, weight, bias):
    return is_grad_enabled() and (input._requires_grad or weight._requires_grad
                                  or (bias is not None and bias._requires_grad))


class DeferredConv2d(DeferredTensor):
    """conv2d(input, weight, bias, padding) with stride 1, and ReLU after it if `relu`, not computed yet."""

    def __init__(self, compute, input, weight, bias, padding, relu, shape, requires_grad):
        super().__init__(compute, shape, input.dtype, requires_grad)
        self.conv_args = (input, weight, bias, padding)
        self.relu = relu


def defer_conv2d(compute, input, weight, bias, stride, padding, extra_padding):
    """A DeferredConv2d for a validated conv2d call, or None where the fused kernel cannot take it.

    `compute()` runs the conv2d."""
    if stride != (1, 1) or extra_padding != (0, 0) or isinstance(input, DeferredTensor):
        return None
    out_channels, channels, kernel_h, kernel_w = weight._array.shape
    records_graph = _records_graph(input, weight, bias)
    if channels * kernel_h * kernel_w > MAX_FUSED_TAPS and records_graph:
        return None
    input_shape = input._array.shape
    shape = input_shape[:-3] + (out_channels, input_shape[-2] + 2 * padding[0] - kernel_h + 1,
                                input_shape[-1] + 2 * padding[1] - kernel_w + 1)
    return DeferredConv2d(compute, input, weight, bias, padding, False, shape, records_graph)


def defer_relu(input, inplace, relu_of):
    """relu of a DeferredConv2d (not yet with ReLU) as a DeferredConv2d, or None for any other input.

    `relu_of(tensor)` applies the ordinary relu."""
    if type(input) is not DeferredConv2d or input.relu or input._grad_mode != is_grad_enabled():
        return None
    if inplace:  # nothing has seen the conv output yet: from now on it means its relu
        compute_conv = input._compute
        input._compute = lambda: relu_of(compute_conv())
        input.relu = True
        return input
    return DeferredConv2d(lambda: relu_of(input), *input.conv_args, True, input.shape, input._requires_grad)


def fused_max_pool2d(input, kernel, stride, padding, dilation, ceil_mode, return_indices):
    """max_pool2d of a DeferredConv2d in one fused node, or None where the fused kernel does not apply."""
    if (type(input) is not DeferredConv2d or input._grad_mode != is_grad_enabled() or stride != kernel
            or padding != (0, 0) or dilation != (1, 1) or ceil_mode or return_indices
            or kernel[0] * kernel[1] > _MAX_WINDOW):
        return None
    return ConvReluPool2dFunction.apply(*input.conv_args, kernel, input.relu)


# The Functions whose outputs relu defers for a max_pool2d to fuse (conv.py adds Conv2dFunction).
RELU_POOL_PRODUCERS = set()


class DeferredReLU(DeferredTensor):
    """relu(input) of a computed conv2d output, not computed yet."""

    def __init__(self, compute, input):
        super().__init__(compute, input.shape, input.dtype, input._requires_grad)
        self.relu_input = input


def defer_relu_of_conv(input, compute):
    """relu of a conv2d output (in training) as a DeferredReLU, or None for any other input.

    `compute()` applies the ordinary relu."""
    if type(input) is not Tensor or not is_grad_enabled():
        return None
    node = input.grad_fn
    if node is None or node.function not in RELU_POOL_PRODUCERS:
        return None
    return DeferredReLU(compute, input)


def fused_relu_max_pool2d(input, geometry, return_indices):
    """max_pool2d of a DeferredReLU as one ReluMaxPool2dFunction node, or None for any other input.

    `geometry` is MaxPool2dFunction's (kh, kw, sh, sw, ph, pw, dh, dw, out_h, out_w)."""
    if type(input) is not DeferredReLU or input._grad_mode != is_grad_enabled() or return_indices:
        return None
    return ReluMaxPool2dFunction.apply(input.relu_input, geometry)


def _contiguous(array):
    return array if array.flags.c_contiguous else np.ascontiguousarray(array)


def _as_batch(x):
    return np.ascontiguousarray(x[None] if x.ndim == 3 else x)


class ReluMaxPool2dFunction(Function):
    """max_pool2d(relu(input), ...) computed as relu(max_pool2d(input, ...)).

    ReLU never decreases, so both give the same maximum: where a window's maximum is positive it
    is the first one in window order either way (ReLU makes no new ties above zero), a NaN wins
    either way, and where the maximum is <= 0 both give zero and pass no gradient (ReLU's backward
    reads its output).  One difference, in the sign of a zero only: where a window's maximum is
    -0.0 after a negative value, torch's order gives +0.0 and this one -0.0 (they compare equal).
    Saves the ReLU pass over the conv output and its backward: the ReLU runs on the pooled values.
    """

    fresh_input_grads = True  # backward allocates every gradient it returns

    @staticmethod
    def forward(ctx, input, geometry):
        *window, out_h, out_w = geometry
        x = _as_batch(input)
        out = np.empty(x.shape[:2] + (out_h, out_w), dtype=x.dtype)
        argmax = np.empty(out.shape, dtype=np.int64)
        threads = get_num_threads()
        _pooling.max_pool2d_forward(x, out, argmax, *window, threads)
        flat = out.reshape(-1)
        _activation.relu_forward(flat, flat, threads)
        ctx.save_for_backward(argmax, out)
        ctx.input_shape, ctx.window = input.shape, window
        return out[0] if input.ndim == 3 else out

    @staticmethod
    def backward(ctx, grad_out):
        argmax, out = ctx.saved_tensors
        threads = get_num_threads()
        grad_out = _contiguous(grad_out.astype(out.dtype, copy=False))
        grad_pooled = np.empty_like(out)
        _activation.relu_backward(grad_out.reshape(-1), out.reshape(-1), grad_pooled.reshape(-1), threads)
        grad_x = np.empty(out.shape[:2] + ctx.input_shape[-2:], dtype=out.dtype)
        _pooling.max_pool2d_backward(grad_pooled, argmax, grad_x, *ctx.window, threads)
        return grad_x.reshape(ctx.input_shape), None


class ConvReluPool2dFunction(Function):
    """max_pool2d(relu(conv2d(input, weight, bias, padding=padding)), pool), without storing the conv output.

    The forward saves, per pooled value, which window position won (-1 where ReLU blocked the
    gradient); without a graph to record it saves nothing.
    """

    fresh_input_grads = True  # backward allocates every gradient it returns

    @staticmethod
    def forward(ctx, input, weight, bias, padding, pool, relu):
        unbatched = input.ndim == 3
        x = _contiguous(input[None] if unbatched else input)
        weight = _contiguous(weight)
        bias = None if bias is None else _contiguous(bias)
        n, _, height, width = x.shape
        out_channels, _, kernel_h, kernel_w = weight.shape
        out_h = (height + 2 * padding[0] - kernel_h + 1) // pool[0]
        out_w = (width + 2 * padding[1] - kernel_w + 1) // pool[1]
        out = np.empty((n, out_channels, out_h, out_w), dtype=x.dtype)
        argmax = None
        if ctx.edges:  # a graph is recorded: backward needs the winners
            argmax = np.empty(_fused.argmax_shape(out.shape, x.itemsize), dtype=np.int8)
            ctx.save_for_backward(x, weight, argmax)
            ctx.geometry = (*padding, *pool)
            ctx.unbatched = unbatched
        _fused.conv_relu_pool_forward(x, weight, bias, out, argmax, *padding, *pool, relu, get_num_threads())
        return out[0] if unbatched else out

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, argmax = ctx.saved_tensors
        grad_out = _contiguous(grad_out[None] if ctx.unbatched else grad_out).astype(x.dtype, copy=False)
        wants_input, wants_weight, wants_bias = ctx.needs_input_grad[:3]
        grad_x = np.empty_like(x) if wants_input else None
        grad_weight = np.empty_like(weight) if wants_weight else None
        grad_bias = np.empty(weight.shape[0], dtype=x.dtype) if wants_bias else None
        _fused.conv_relu_pool_backward(x, weight, grad_out, argmax, grad_x, grad_weight, grad_bias,
                                       *ctx.geometry, get_num_threads())
        _zero_times_nonfinite(x, weight, ctx.geometry, grad_weight)
        if grad_x is not None and ctx.unbatched:
            grad_x = grad_x[0]
        return grad_x, grad_weight, grad_bias, None, None, None


def _zero_times_nonfinite(x, weight, geometry, grad_weight):
    """The NaN that torch's unfused backward gets from the conv outputs that the pool drops.

    Rows and columns of the conv output past the last whole pool window get a zero gradient, and
    torch's conv backward still multiplies it by the inputs those outputs read: 0 * inf and 0 * NaN
    are NaN, so a non-finite input there makes NaN in the weight gradient of the taps that read it,
    where the fused kernel, which never computes those outputs, would give a number.  Only then
    (rare: dropped outputs and a non-finite input) is anything done."""
    pad_h, pad_w, pool_h, pool_w = geometry
    height, width = x.shape[2:]
    kernel_h, kernel_w = weight.shape[2:]
    out_h, out_w = height + 2 * pad_h - kernel_h + 1, width + 2 * pad_w - kernel_w + 1
    kept_h, kept_w = out_h // pool_h * pool_h, out_w // pool_w * pool_w
    if grad_weight is None or (kept_h, kept_w) == (out_h, out_w) or np.isfinite(x).all():
        return
    dropped = np.ones((out_h, out_w), dtype=bool)
    dropped[:kept_h, :kept_w] = False
    nonfinite = np.pad(~np.isfinite(x), ((0, 0), (0, 0), (pad_h, pad_h), (pad_w, pad_w)))
    for i in range(kernel_h):
        for j in range(kernel_w):
            read = nonfinite[:, :, i:i + out_h, j:j + out_w] & dropped  # what tap (i, j) reads there
            grad_weight[:, read.any(axis=(0, 2, 3)), i, j] = np.nan
