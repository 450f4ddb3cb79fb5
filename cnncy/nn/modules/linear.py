"""Linear: the fully connected layer, as torch.nn.Linear."""
import math

import numpy as np

from ...tensor import _normalize_dtype
from .. import functional as F
from .. import init
from ..parameter import Parameter
from .module import Module


def parameter_dtype(layer, device, dtype):
    """The float dtype for a layer's parameters (float32 by default); only the CPU exists here."""
    if device is not None and str(device) != "cpu":
        raise RuntimeError(f"{layer}: cnncy runs on the CPU only, got device={device!r}")
    dtype = _normalize_dtype(dtype) or np.dtype(np.float32)
    if dtype.kind != "f" or dtype.itemsize < 4:
        raise TypeError(f"{layer}: parameters must be float32 or float64, got dtype={dtype}")
    return dtype


class Linear(Module):
    """Applies y = x W^T + b to the last dimension of the input.

    Args:
        in_features: size of each input sample.
        out_features: size of each output sample.
        bias: if False, the layer learns no additive bias. Default: True.
        dtype: float32 (default) or float64.

    Shape:
        Input: (*, in_features), any number of leading dimensions (including none).
        Output: (*, out_features).

    Attributes:
        weight: (out_features, in_features), initialised from U(-1/sqrt(in_features), 1/sqrt(in_features)).
        bias: (out_features,), initialised from the same distribution.
    """

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
        super().__init__()
        dtype = parameter_dtype("Linear", device, dtype)
        self.in_features = in_features
        self.out_features = out_features
        self.weight = Parameter(np.empty((out_features, in_features), dtype=dtype))
        if bias:
            self.bias = Parameter(np.empty(out_features, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        # Exactly torch's initialisation: kaiming_uniform_ with a=sqrt(5) gives U(-1/sqrt(fan_in), ..).
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in, _ = init._calculate_fan_in_and_fan_out(self.weight)
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            init.uniform_(self.bias, -bound, bound)

    def forward(self, input):
        return F.linear(input, self.weight, self.bias)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")
