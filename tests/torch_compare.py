"""The one helper every test uses to compare cnncy with torch (or another reference).

Tolerances: float32 rtol 1e-5, float64 rtol 1e-10, with an absolute floor of
rtol * max|expected| so that entries near zero in a sum of many terms are
judged at the scale of the tensor, not of the single entry.
"""
import numpy as np
import torch

import cnncy

RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-10}
TORCH_DTYPE = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}


def to_numpy(value):
    """An ndarray from a cnncy tensor, a torch tensor, an array or a number."""
    if isinstance(value, cnncy.Tensor):
        return value.detach().numpy()
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def to_torch(value, requires_grad=False):
    """A torch tensor holding a copy of a cnncy tensor or array's values."""
    t = torch.from_numpy(np.array(to_numpy(value), copy=True))
    return t.requires_grad_(requires_grad)


def assert_close(actual, expected, dtype=None, rtol=None, atol=None, what=""):
    """Assert that actual (cnncy) matches expected (torch / reference) in shape, dtype and values."""
    actual, expected = to_numpy(actual), to_numpy(expected)
    label = f"{what}: " if what else ""
    assert actual.shape == expected.shape, f"{label}shape {actual.shape} != expected {expected.shape}"
    dtype = np.dtype(dtype) if dtype is not None else expected.dtype
    if expected.dtype.kind in "fc":
        assert actual.dtype == expected.dtype, f"{label}dtype {actual.dtype} != expected {expected.dtype}"
        rtol = RTOL.get(dtype, 1e-5) if rtol is None else rtol
        if atol is None:
            finite = np.abs(expected[np.isfinite(expected)])
            atol = rtol * (finite.max() if finite.size else 0.0)
        np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, equal_nan=True,
                                   err_msg=label)
    else:
        np.testing.assert_array_equal(actual, expected, err_msg=label)


def numerical_gradient(loss, array, eps=1e-6):
    """Central differences of loss() with respect to every entry of array (changed in place, then restored).

    The independent reference for gradient checks in float64."""
    grad = np.zeros_like(array)
    for index in np.ndindex(array.shape):
        saved = array[index]
        array[index] = saved + eps
        plus = loss()
        array[index] = saved - eps
        minus = loss()
        array[index] = saved
        grad[index] = (plus - minus) / (2 * eps)
    return grad


def assert_results_close(actual, expected, names, dtype=None):
    """assert_close over parallel sequences of results (e.g. output, grad input, grad weight, grad bias);
    where torch gives None (no such gradient), cnncy must too."""
    for what, a, b in zip(names, actual, expected, strict=True):
        if b is None:
            assert a is None, what
        else:
            assert_close(a, b, dtype=dtype, what=what)
