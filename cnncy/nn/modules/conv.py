"""Conv2d, as torch.nn.Conv2d (zero padding, groups=1, dilation=1)."""
import math
import numbers

import numpy as np

from .. import functional as F
from .. import init
from ..parameter import Parameter
from .linear import parameter_dtype
from .module import Module


def _pair(name, value):
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value), int(value)
    if (isinstance(value, (tuple, list)) and len(value) == 2
            and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value)):
        return int(value[0]), int(value[1])
    raise TypeError(f"Conv2d: {name} must be an int or a pair of ints, got {value!r}")


class Conv2d(Module):
    """2-D convolution over an input of shape (N, C_in, H, W) or (C_in, H, W).

    Args:
        in_channels: channels of the input image.
        out_channels: channels produced by the convolution.
        kernel_size: int or (kH, kW).
        stride: int or (sH, sW). Default: 1.
        padding: int, (pH, pW), 'valid' or 'same' (stride 1 only): zeros added to each side. Default: 0.
        dilation: only 1 is supported.
        groups: only 1 is supported.
        bias: if False, the layer learns no additive bias. Default: True.
        padding_mode: only 'zeros' is supported.
        dtype: float32 (default) or float64.

    Shape:
        Input: (N, C_in, H, W) or (C_in, H, W).
        Output: (N, C_out, H_out, W_out) or (C_out, H_out, W_out), where
        H_out = (H + 2 * pH - kH) // sH + 1 and W_out likewise.

    Attributes:
        weight: (out_channels, in_channels, kH, kW), initialised from U(-1/sqrt(k), 1/sqrt(k))
            with k = in_channels * kH * kW.
        bias: (out_channels,), initialised from the same distribution.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", device=None, dtype=None):
        super().__init__()
        dtype = parameter_dtype("Conv2d", device, dtype)
        if isinstance(groups, bool) or not isinstance(groups, numbers.Integral) or groups <= 0:
            raise ValueError("Conv2d: groups must be a positive integer")
        if groups != 1:
            raise NotImplementedError(f"Conv2d: only groups=1 is supported, got groups={groups}")
        if padding_mode not in ("zeros", "reflect", "replicate", "circular"):
            raise ValueError("Conv2d: padding_mode must be one of {'zeros', 'reflect', 'replicate', 'circular'}, "
                             f"but got padding_mode='{padding_mode}'")
        if padding_mode != "zeros":
            raise NotImplementedError(f"Conv2d: only padding_mode='zeros' is supported, got '{padding_mode}'")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair("kernel_size", kernel_size)
        self.stride = _pair("stride", stride)
        self.dilation = _pair("dilation", dilation)
        if min(self.kernel_size) <= 0 or min(self.stride) <= 0:
            raise ValueError(f"Conv2d: kernel_size and stride must be positive, got "
                             f"kernel_size={self.kernel_size}, stride={self.stride}")
        if self.dilation != (1, 1):
            raise NotImplementedError(f"Conv2d: only dilation=1 is supported, got dilation={self.dilation}")
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"Conv2d: Invalid padding string {padding!r}, should be one of {{'valid', 'same'}}")
            if padding == "same" and self.stride != (1, 1):
                raise ValueError("Conv2d: padding='same' is not supported for strided convolutions")
            self.padding = padding
        else:
            self.padding = _pair("padding", padding)
            if min(self.padding) < 0:
                raise ValueError(f"Conv2d: padding must be non-negative, got padding={self.padding}")
        self.groups = groups
        self.padding_mode = padding_mode
        # torch keeps these on every convolution; repr and code that inspects layers read them.
        self.output_padding = (0, 0)
        self.transposed = False
        self.weight = Parameter(np.empty((out_channels, in_channels) + self.kernel_size, dtype=dtype))
        if bias:
            self.bias = Parameter(np.empty(out_channels, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        # Exactly torch's initialisation: kaiming_uniform_ with a=sqrt(5) gives U(-1/sqrt(fan_in), ..).
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in, _ = init._calculate_fan_in_and_fan_out(self.weight)
            if fan_in != 0:
                bound = 1 / math.sqrt(fan_in)
                init.uniform_(self.bias, -bound, bound)

    def _conv_forward(self, input, weight, bias):
        return F.conv2d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def forward(self, input):
        return self._conv_forward(input, self.weight, self.bias)

    def extra_repr(self):
        # torch's text, including its rule for which arguments to show.
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0,) * len(self.padding):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        return s
