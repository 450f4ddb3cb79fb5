"""dropout, as torch.nn.functional.dropout: a Bernoulli mask from cnncy's generator."""
import numbers

import numpy as np

from ...autograd import Function
from ...creation import default_generator
from ._inplace import apply_inplace
from ._validation import _FLOAT_DTYPES, check_tensor


class DropoutFunction(Function):
    """x * noise, where noise holds 0 or 1 / (1 - p); with `inplace` the product goes into x's array."""

    fresh_input_grads = True  # backward allocates every gradient it returns

    @staticmethod
    def forward(ctx, x, noise, inplace):
        ctx.save_for_backward(noise)
        with np.errstate(invalid="ignore"):  # inf * 0 is nan, silently, as in torch
            return np.multiply(x, noise, out=x if inplace else None)

    @staticmethod
    def backward(ctx, grad_out):
        (noise,) = ctx.saved_tensors
        return grad_out * noise, None, None


def _noise(shape, dtype, p):
    """Zeros with probability p, else 1 / (1 - p) computed in `dtype` as torch does."""
    if p == 1:
        return np.zeros(shape, dtype=dtype)  # torch multiplies by zero: NaN and inf stay NaN
    keep = default_generator().random(shape, dtype=np.float32) < np.float32(1 - p)
    scale = dtype.type(1) / dtype.type(1 - p)
    return np.multiply(keep, scale, dtype=dtype)


def dropout(input, p=0.5, training=True, inplace=False):
    """Zero each element with probability p and scale the others by 1 / (1 - p), in training.

    Args:
        input: float32 or float64 tensor of any shape.
        p: probability of zeroing an element, in [0, 1]. Default: 0.5.
        training: apply dropout; when False (or p == 0) input itself is returned. Default: True.
        inplace: write the result into input and return input. Default: False.

    The mask comes from cnncy's global generator (cnncy.manual_seed), not torch's stream.
    """
    if not isinstance(p, numbers.Real) or not 0 <= p <= 1:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    check_tensor("dropout", "input", input)
    if not training or p == 0 or input.numel() == 0:
        return input
    if input.dtype not in _FLOAT_DTYPES:
        raise RuntimeError(f"dropout: expected a float32 or float64 input, got {input.dtype}")
    noise = _noise(input._array.shape, input.dtype, float(p))
    if inplace:
        return apply_inplace("dropout_", DropoutFunction, input, noise, True)
    return DropoutFunction.apply(input, noise, False)
