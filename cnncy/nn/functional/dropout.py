"""dropout, as torch.nn.functional.dropout: a Bernoulli mask keyed by a seed from cnncy's generator."""
import numbers

import numpy as np

from ..._dropout import dropout_apply
from ..._threads import get_num_threads
from ...autograd import Function
from ...creation import default_generator
from ._inplace import apply_inplace
from ._validation import _FLOAT_DTYPES, check_tensor


class DropoutFunction(Function):
    """x * noise, noise[i] = 0 or 1 / (1 - p) from (seed, i); with `inplace` the product goes into x's array.

    Backward regenerates the mask from the seed, so nothing but the seed is saved.
    """

    fresh_input_grads = True  # backward allocates every gradient it returns

    @staticmethod
    def forward(ctx, x, seed, keep_below, scale, inplace):
        ctx.mask = (seed, keep_below, scale)
        if inplace and x.flags.c_contiguous:
            return _apply_mask(x, x, ctx.mask)
        out = _apply_mask(np.ascontiguousarray(x), np.empty(x.shape, x.dtype), ctx.mask)
        if inplace:  # a strided view: the mask follows its logical (C) order, like every other input
            x[...] = out
            return x
        return out

    @staticmethod
    def backward(ctx, grad_out):
        grad_out = np.ascontiguousarray(grad_out)
        return _apply_mask(grad_out, np.empty(grad_out.shape, grad_out.dtype), ctx.mask), None, None, None, None


def _apply_mask(src, dst, mask):
    """dst = src * noise in one parallel pass over flat views (src and dst are C-contiguous)."""
    seed, keep_below, scale = mask
    dropout_apply(src.reshape(-1), dst.reshape(-1), seed, keep_below, scale, get_num_threads())
    return dst


def _mask(dtype, p):
    """(seed, keep_below, scale): a fresh seed from cnncy's generator, keep below (1 - p) * 2**53,
    and 1 / (1 - p) computed in `dtype` as torch does (0 for p == 1, where torch multiplies by zero)."""
    seed = int(default_generator().bit_generator.random_raw())
    keep_below = int((1 - p) * 2.0**53)
    scale = dtype.type(1) / dtype.type(1 - p) if p < 1 else dtype.type(0)
    return seed, keep_below, scale


def dropout(input, p=0.5, training=True, inplace=False):
    """Zero each element with probability p and scale the others by 1 / (1 - p), in training.

    Args:
        input: float32 or float64 tensor of any shape.
        p: probability of zeroing an element, in [0, 1]. Default: 0.5.
        training: apply dropout; when False (or p == 0) input itself is returned. Default: True.
        inplace: write the result into input and return input. Default: False.

    The mask comes from a seed drawn from cnncy's global generator (cnncy.manual_seed), not torch's
    stream; it is the same for any thread count.
    """
    if not isinstance(p, numbers.Real) or not 0 <= p <= 1:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    check_tensor("dropout", "input", input)
    if not training or p == 0 or input.numel() == 0:
        return input
    if input.dtype not in _FLOAT_DTYPES:
        raise RuntimeError(f"dropout: expected a float32 or float64 input, got {input.dtype}")
    mask = _mask(input.dtype, float(p))
    if inplace:
        return apply_inplace("dropout_", DropoutFunction, input, *mask, True)
    return DropoutFunction.apply(input, *mask, False)
