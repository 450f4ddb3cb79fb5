"""nn.Parameter: a leaf tensor that a Module registers as one of its parameters."""
import numpy as np

from ..tensor import Tensor


class Parameter(Tensor):
    """A Tensor that is a module parameter: assigning it to a Module attribute registers it."""

    def __init__(self, data=None, requires_grad=True):
        if data is None:
            array = np.empty(0, dtype=np.float32)
        elif isinstance(data, Tensor):
            array = data._array
        else:
            array = np.asarray(data)
        super().__init__(np.ascontiguousarray(array), requires_grad=requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()
