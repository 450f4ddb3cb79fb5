"""Tensor construction, dtypes, conversion and shape ops against torch."""
import numpy as np
import pytest
import torch

import cnncy
from torch_compare import assert_close


@pytest.mark.parametrize("data", [[1.0, 2.5], [[1, 2], [3, 4]], 3.0, 7, [True, False]])
def test_tensor_infers_dtype_like_torch(data):
    ours, theirs = cnncy.tensor(data), torch.tensor(data)
    assert str(ours.dtype) == str(theirs.dtype).replace("torch.", "")
    assert tuple(ours.shape) == tuple(theirs.shape)


def test_tensor_from_ndarray_keeps_dtype_and_copies():
    array = np.arange(6, dtype=np.float64).reshape(2, 3)
    t = cnncy.tensor(array)
    assert t.dtype == cnncy.float64
    array[0, 0] = 100
    assert t[0, 0].item() == 0


def test_from_numpy_and_numpy_share_memory():
    array = np.zeros(3, dtype=np.float32)
    t = cnncy.from_numpy(array)
    t.numpy()[1] = 5
    assert array[1] == 5


def test_numpy_of_tensor_requiring_grad_raises():
    with pytest.raises(RuntimeError, match="detach"):
        cnncy.ones(2, requires_grad=True).numpy()


def test_integer_tensor_cannot_require_grad():
    with pytest.raises(RuntimeError, match="floating point"):
        cnncy.tensor([1, 2], requires_grad=True)


def test_shape_size_ndim_numel_item():
    t = cnncy.zeros(2, 3, 4)
    assert t.shape == (2, 3, 4) and t.size() == (2, 3, 4) and t.size(1) == 3 and t.size(-1) == 4
    assert t.ndim == 3 and t.dim() == 3 and t.numel() == 24
    assert cnncy.tensor([2.5]).item() == 2.5
    with pytest.raises(RuntimeError, match="cannot be converted to Scalar"):
        t.item()


@pytest.mark.parametrize("shape", [(4, -1), (-1,), (2, 2, 6), (24,)])
def test_view_matches_torch(shape, rng):
    array = rng.standard_normal((2, 3, 4)).astype(np.float32)
    assert_close(cnncy.tensor(array).view(*shape), torch.from_numpy(array).view(*shape))


@pytest.mark.parametrize("shape", [(5, -1), (7,), (-1, -1)])
def test_view_to_incompatible_size_raises(shape):
    with pytest.raises(RuntimeError):
        cnncy.zeros(2, 3, 4).view(*shape)
    with pytest.raises(RuntimeError):
        torch.zeros(2, 3, 4).view(*shape)


def test_view_of_non_contiguous_raises_but_reshape_copies():
    t = cnncy.zeros(3, 4).t()
    with pytest.raises(RuntimeError, match="reshape"):
        t.view(12)
    assert t.reshape(12).shape == (12,)


@pytest.mark.parametrize("start,end", [(0, -1), (1, -1), (1, 2), (2, 3)])
def test_flatten_matches_torch(start, end, rng):
    array = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    assert_close(cnncy.tensor(array).flatten(start, end), torch.from_numpy(array).flatten(start, end))


def test_reductions_and_argmax_match_torch(rng):
    array = rng.standard_normal((5, 7)).astype(np.float32)
    ours, theirs = cnncy.tensor(array), torch.from_numpy(array)
    assert_close(ours.sum(), theirs.sum())
    assert_close(ours.mean(dim=0), theirs.mean(dim=0))
    assert_close(ours.argmax(dim=1), theirs.argmax(dim=1))
    assert ours.argmax().item() == theirs.argmax().item()
    labels = cnncy.tensor([0, 1, 2, 3, 4])
    assert (ours.argmax(dim=1) == labels).sum().item() == (theirs.argmax(dim=1) == torch.arange(5)).sum().item()


def test_scalar_arithmetic_keeps_float32():
    t = cnncy.ones(3)
    assert (t * 2.5 + 1).dtype == cnncy.float32
    assert (2 / t).dtype == cnncy.float32
    assert (t.double() + t).dtype == cnncy.float64


def test_manual_seed_makes_randn_reproducible():
    cnncy.manual_seed(7)
    a = cnncy.randn(4, 1, 28, 28)
    cnncy.manual_seed(7)
    b = cnncy.randn(4, 1, 28, 28)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert a.dtype == cnncy.float32 and a.shape == (4, 1, 28, 28)


def test_leaf_requiring_grad_refuses_in_place_ops():
    with pytest.raises(RuntimeError, match="in-place"):
        cnncy.ones(2, requires_grad=True).add_(1.0)
    with cnncy.no_grad():
        p = cnncy.ones(2, requires_grad=True)
        p.sub_(0.5)
    np.testing.assert_array_equal(p.detach().numpy(), [0.5, 0.5])
