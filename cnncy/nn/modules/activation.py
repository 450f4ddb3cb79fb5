"""ReLU, Softmax and LogSoftmax, as torch.nn."""
from .. import functional as F
from .module import Module


class ReLU(Module):
    """max(x, 0) elementwise.

    Args:
        inplace: overwrite the input with the result. Default: False.

    Shape:
        Input: any shape. Output: the same shape.
    """

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = inplace

    def forward(self, input):
        return F.relu(input, inplace=self.inplace)

    def extra_repr(self):
        return "inplace=True" if self.inplace else ""


class Softmax(Module):
    """exp(x_i) / sum_j exp(x_j) along `dim`, so that slices along dim sum to 1.

    Args:
        dim: the dimension to normalize over. None uses torch's deprecated implicit choice.

    Shape:
        Input: any shape. Output: the same shape.
    """

    def __init__(self, dim=None):
        super().__init__()
        self.dim = dim

    def forward(self, input):
        return F.softmax(input, self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"


class LogSoftmax(Module):
    """log(softmax(x)) along `dim`, computed stably.

    Args:
        dim: the dimension to normalize over. None uses torch's deprecated implicit choice.

    Shape:
        Input: any shape. Output: the same shape.
    """

    def __init__(self, dim=None):
        super().__init__()
        self.dim = dim

    def forward(self, input):
        return F.log_softmax(input, self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"
