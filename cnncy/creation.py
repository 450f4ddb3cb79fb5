"""Tensor constructors and the global random generator (torch.* factory functions)."""
import numpy as np

from .tensor import Tensor, _as_array, _normalize_dtype, float32, int64

_generator = np.random.Generator(np.random.PCG64(0))


def manual_seed(seed):
    """Seed the generator behind randn/rand/randint/randperm and parameter initialisation."""
    global _generator
    _generator = np.random.Generator(np.random.PCG64(int(seed)))
    return _generator


def default_generator():
    return _generator


def get_rng_state():
    return _generator.bit_generator.state


def set_rng_state(state):
    _generator.bit_generator.state = state


def _shape(size):
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    shape = tuple(int(s) for s in size)
    if any(s < 0 for s in shape):
        raise RuntimeError(f"Trying to create tensor with negative dimension: {list(shape)}")
    return shape


def _float_dtype(dtype):
    dtype = _normalize_dtype(dtype) or float32
    if dtype.kind != "f":
        raise TypeError(f"expected a floating point dtype, got {dtype}")
    return dtype


def tensor(data, dtype=None, requires_grad=False):
    """A new tensor holding a copy of `data` (float data defaults to float32, ints to int64)."""
    return Tensor(_as_array(data, dtype), requires_grad=requires_grad)


def from_numpy(array):
    """A tensor sharing memory with `array` (no copy), like torch.from_numpy."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"from_numpy: expected np.ndarray (got {type(array).__name__})")
    return Tensor._wrap(array)


def zeros(*size, dtype=None, requires_grad=False):
    return Tensor(np.zeros(_shape(size), dtype=_normalize_dtype(dtype) or float32), requires_grad)


def ones(*size, dtype=None, requires_grad=False):
    return Tensor(np.ones(_shape(size), dtype=_normalize_dtype(dtype) or float32), requires_grad)


def empty(*size, dtype=None, requires_grad=False):
    return Tensor(np.empty(_shape(size), dtype=_normalize_dtype(dtype) or float32), requires_grad)


def full(size, fill_value, dtype=None, requires_grad=False):
    return Tensor(np.full(_shape((size,)), fill_value, dtype=_normalize_dtype(dtype) or float32),
                  requires_grad)


def zeros_like(t, dtype=None, requires_grad=False):
    return zeros(t.shape, dtype=dtype or t.dtype, requires_grad=requires_grad)


def ones_like(t, dtype=None, requires_grad=False):
    return ones(t.shape, dtype=dtype or t.dtype, requires_grad=requires_grad)


def randn(*size, dtype=None, requires_grad=False, generator=None):
    """Standard normal samples (deterministic after manual_seed; not torch's stream)."""
    dtype = _float_dtype(dtype)
    gen = generator or _generator
    return Tensor(gen.standard_normal(_shape(size), dtype=dtype), requires_grad)


def rand(*size, dtype=None, requires_grad=False, generator=None):
    dtype = _float_dtype(dtype)
    gen = generator or _generator
    return Tensor(gen.random(_shape(size), dtype=dtype), requires_grad)


def randint(low, high=None, size=(), dtype=None, generator=None):
    if high is None:
        low, high = 0, low
    gen = generator or _generator
    return Tensor(gen.integers(low, high, size=_shape((size,)), dtype=_normalize_dtype(dtype) or int64))


def randperm(n, generator=None):
    gen = generator or _generator
    return Tensor(gen.permutation(int(n)).astype(np.int64))


def arange(start, end=None, step=1, dtype=None):
    if end is None:
        start, end = 0, start
    array = np.arange(start, end, step)
    if dtype is not None:
        array = array.astype(_normalize_dtype(dtype))
    elif array.dtype.kind == "f":
        array = array.astype(np.float32)
    return Tensor(array)
