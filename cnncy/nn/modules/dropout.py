"""Dropout, as torch.nn.Dropout."""
import numbers

from .. import functional as F
from .module import Module


class Dropout(Module):
    """In training, zero each element with probability p and scale the rest by 1 / (1 - p).

    In eval mode (module.eval()) it is the identity.  The mask comes from cnncy's global
    generator (cnncy.manual_seed).

    Args:
        p: probability of zeroing an element. Default: 0.5.
        inplace: overwrite the input with the result. Default: False.

    Shape:
        Input: any shape. Output: the same shape.
    """

    def __init__(self, p=0.5, inplace=False):
        super().__init__()
        if not isinstance(p, numbers.Real) or not 0 <= p <= 1:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p = p
        self.inplace = inplace

    def forward(self, input):
        return F.dropout(input, self.p, self.training, self.inplace)

    def extra_repr(self):
        return f"p={self.p}, inplace={self.inplace}"
