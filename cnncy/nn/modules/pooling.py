"""MaxPool2d and AvgPool2d, as torch.nn."""
from .. import functional as F
from .module import Module


class MaxPool2d(Module):
    """2-D max pooling over an input of shape (N, C, H, W) or (C, H, W).

    Args:
        kernel_size: int or (kH, kW), the window size.
        stride: int or (sH, sW). Default: kernel_size.
        padding: int or (pH, pW), implicit -inf padding on both sides, at most half the
            effective kernel size. Default: 0.
        dilation: int or (dH, dW), spacing of the window's taps. Default: 1.
        return_indices: also return the argmax indices (for backward-compatible unpooling).
        ceil_mode: round the output size up instead of down. Default: False.

    Shape:
        Input: (N, C, H, W) or (C, H, W).
        Output: (N, C, H_out, W_out) or (C, H_out, W_out), where
        H_out = floor_or_ceil((H + 2 * pH - dH * (kH - 1) - 1) / sH) + 1, likewise W_out.
    """

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False,
                 ceil_mode=False):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding
        self.dilation = dilation
        self.return_indices = return_indices
        self.ceil_mode = ceil_mode

    def forward(self, input):
        return F.max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation,
                            ceil_mode=self.ceil_mode, return_indices=self.return_indices)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class AvgPool2d(Module):
    """2-D average pooling over an input of shape (N, C, H, W) or (C, H, W).

    Args:
        kernel_size: int or (kH, kW), the window size.
        stride: int or (sH, sW). Default: kernel_size.
        padding: int or (pH, pW), implicit zero padding on both sides, at most half the
            kernel size. Default: 0.
        ceil_mode: round the output size up instead of down. Default: False.
        count_include_pad: count the zero padding in the divisor. Default: True.
        divisor_override: a nonzero int used as the divisor of every window. Default: None.

    Shape:
        Input: (N, C, H, W) or (C, H, W).
        Output: (N, C, H_out, W_out) or (C, H_out, W_out), where
        H_out = floor_or_ceil((H + 2 * pH - kH) / sH) + 1, likewise W_out.
    """

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                 divisor_override=None):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding
        self.ceil_mode = ceil_mode
        self.count_include_pad = count_include_pad
        self.divisor_override = divisor_override

    def forward(self, input):
        return F.avg_pool2d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad, self.divisor_override)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
