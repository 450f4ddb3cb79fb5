"""Image transforms with torchvision.transforms' names and numbers.

    from cnncy import transforms
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])

The transforms accept numpy arrays (what cnncy's datasets hand out in place of
PIL images) and cnncy Tensors.  Besides transforming one image, the built-in
transforms can transform a whole batch at once with `apply_batch`, which is
what lets a DataLoader over MNIST run an epoch without a Python loop per
sample; `supports_batch` says whether a transform can.
"""
import numbers

import numpy as np

from .tensor import Tensor, float32


def _array(x):
    return x._array if isinstance(x, Tensor) else np.asarray(x)


def _like_input(array, x):
    """Return `array` as the same kind of object (Tensor or ndarray) that `x` was."""
    return Tensor._wrap(array) if isinstance(x, Tensor) else array


def _to_float_image(array):
    """torchvision's rule: uint8 data is scaled to [0, 1]; other dtypes are converted as they are."""
    if array.dtype == np.uint8:
        return array.astype(float32, order="C") / np.float32(255)
    return np.ascontiguousarray(array)


class Compose:
    """Chains transforms: `Compose([t1, t2])(x) == t2(t1(x))`."""

    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, x):
        for transform in self.transforms:
            x = transform(x)
        return x

    @property
    def supports_batch(self):
        return all(getattr(t, "supports_batch", False) for t in self.transforms)

    def apply_batch(self, batch):
        for transform in self.transforms:
            batch = transform.apply_batch(batch)
        return batch

    def __repr__(self):
        lines = "".join(f"\n    {t!r}" for t in self.transforms)
        return f"{type(self).__name__}({lines}\n)"


class ToTensor:
    """Converts an image array to a float32 channel-first Tensor, like torchvision's ToTensor.

    A uint8 image of shape (H, W) or (H, W, C) becomes a float32 Tensor of shape
    (1, H, W) or (C, H, W) with values divided by 255; images of other dtypes
    are only reordered to channel-first.  `apply_batch` does the same to a
    batch (B, H, W) or (B, H, W, C), giving (B, 1, H, W) or (B, C, H, W).
    """

    supports_batch = True

    def __call__(self, pic):
        return self._convert(_array(pic), batched=False)

    def apply_batch(self, pics):
        return self._convert(_array(pics), batched=True)

    @staticmethod
    def _convert(array, batched):
        image_ndim = array.ndim - batched
        if image_ndim not in (2, 3):
            expected = "(B, H, W) or (B, H, W, C)" if batched else "(H, W) or (H, W, C)"
            raise ValueError(f"ToTensor: expected an image array of shape {expected}, "
                             f"got shape {array.shape}")
        if image_ndim == 2:
            array = array[..., None]
        channels_first = np.moveaxis(array, -1, -3)
        return Tensor._wrap(_to_float_image(channels_first))

    def __repr__(self):
        return f"{type(self).__name__}()"


class Normalize:
    """Normalizes each channel: `out[c] = (x[c] - mean[c]) / std[c]`, like torchvision's Normalize.

    Args:
        mean (sequence or number): per-channel means (one value is used for every channel).
        std (sequence or number): per-channel standard deviations; none may be zero.
        inplace (bool): overwrite the input instead of returning a new array.

    Shape:
        Input: (..., C, H, W), a single image (C, H, W) or a batch (B, C, H, W),
        float32 or float64.  Output: the same shape and dtype.
    """

    supports_batch = True

    def __init__(self, mean, std, inplace=False):
        self.mean = self._as_values(mean, "mean")
        self.std = self._as_values(std, "std")
        if any(s == 0 for s in self.std):
            raise ValueError(f"Normalize: std contains zero ({list(self.std)}), which would divide by zero")
        self.inplace = inplace

    @staticmethod
    def _as_values(values, name):
        if isinstance(values, numbers.Number):
            return (float(values),)
        values = tuple(float(v) for v in _array(values).reshape(-1))
        if not values:
            raise ValueError(f"Normalize: {name} must not be empty")
        return values

    def __call__(self, x):
        array = _array(x)
        if array.dtype.kind != "f":
            raise TypeError(f"Normalize: input should be a float tensor, got {array.dtype}")
        if array.ndim < 3:
            raise ValueError(f"Normalize: expected a tensor image of size (..., C, H, W), "
                             f"got shape {array.shape}")
        channels = array.shape[-3]
        for name, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, channels):
                raise ValueError(f"Normalize: {name} has {len(values)} values but the input has "
                                 f"{channels} channels (shape {array.shape})")
        # Like torchvision, mean and std take the input's dtype before the arithmetic.
        mean = np.asarray(self.mean, dtype=array.dtype).reshape(-1, 1, 1)
        std = np.asarray(self.std, dtype=array.dtype).reshape(-1, 1, 1)
        if np.any(std == 0):
            raise ValueError(f"Normalize: std evaluated to zero after conversion to {array.dtype}")
        if self.inplace:
            np.subtract(array, mean, out=array)
            np.divide(array, std, out=array)
            return x
        return _like_input((array - mean) / std, x)

    apply_batch = __call__

    def __repr__(self):
        return f"{type(self).__name__}(mean={list(self.mean)}, std={list(self.std)})"


class Lambda:
    """Wraps a function as a transform.

    Args:
        lambd (callable): the function, applied to one image.
        batched (bool): set True if the function also works on a whole batch
            (leading batch axis), so datasets may call it once per batch.
    """

    def __init__(self, lambd, batched=False):
        if not callable(lambd):
            raise TypeError(f"Lambda: argument should be callable, got {type(lambd).__name__}")
        self.lambd = lambd
        self.supports_batch = bool(batched)

    def __call__(self, x):
        return self.lambd(x)

    def apply_batch(self, batch):
        if not self.supports_batch:
            raise TypeError("Lambda: this function was not declared batched=True")
        return self.lambd(batch)

    def __repr__(self):
        return f"{type(self).__name__}()"
