"""F.dropout and nn.Dropout: mask statistics, scaling like torch, eval identity, gradients."""
import numpy as np
import pytest
import torch

import cnncy
import cnncy.nn as nn
import cnncy.nn.functional as F
from torch_compare import assert_close, to_torch


def torch_scale(p, dtype):
    """The value torch gives a kept element of 1 (its 1 / (1 - p), computed in dtype)."""
    torch.manual_seed(0)
    out = torch.nn.functional.dropout(torch.ones(1000, dtype=getattr(torch, dtype.name)), p)
    return out[out != 0][0].item()


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9, 1 / 3])
def test_mask_statistics_and_scale(rng, dtype, p):
    cnncy.manual_seed(7)
    x = np.asarray(rng.uniform(1.0, 2.0, (200, 1000)), dtype=dtype)
    out = F.dropout(cnncy.tensor(x), p).numpy()
    kept = out != 0
    # 200k Bernoulli draws: the dropped fraction is within 5 standard deviations of p.
    assert abs((1 - kept.mean()) - p) < 5 * np.sqrt(p * (1 - p) / x.size)
    # Kept elements are x * scale exactly, with torch's scale.
    scale = dtype.type(torch_scale(p, dtype))
    np.testing.assert_array_equal(out[kept], x[kept] * scale)


def test_masks_are_independent_of_position(rng):
    cnncy.manual_seed(3)
    kept = F.dropout(cnncy.ones(400, 500), 0.5).numpy() != 0
    for axis in (0, 1):
        fractions = kept.mean(axis=axis)
        assert abs(fractions.mean() - 0.5) < 0.01 and fractions.std() < 0.05


def test_gradient_is_the_mask_times_the_scale(rng, dtype):
    cnncy.manual_seed(11)
    x = cnncy.tensor(np.asarray(rng.uniform(1.0, 2.0, (30, 40)), dtype=dtype), requires_grad=True)
    out = F.dropout(x, 0.3)
    grad = np.asarray(rng.standard_normal((30, 40)), dtype=dtype)
    out.backward(cnncy.tensor(grad))
    noise = (out.detach().numpy() != 0) * dtype.type(torch_scale(0.3, dtype))
    np.testing.assert_array_equal(x.grad.numpy(), grad * noise)


def test_same_seed_gives_the_same_mask():
    cnncy.manual_seed(5)
    first = F.dropout(cnncy.ones(100), 0.5).numpy()
    cnncy.manual_seed(5)
    np.testing.assert_array_equal(F.dropout(cnncy.ones(100), 0.5).numpy(), first)


@pytest.mark.parametrize("p, training", [(0.5, False), (0.0, True), (0, False)])
def test_identity_returns_the_input_itself_like_torch(p, training):
    x = cnncy.randn(3, 4, requires_grad=True)
    assert F.dropout(x, p, training=training) is x
    tx = torch.randn(3, 4, requires_grad=True)
    assert torch.nn.functional.dropout(tx, p, training=training) is tx


def test_p_one_zeros_everything_and_keeps_nan_like_torch(dtype):
    x = np.array([1.0, -2.0, np.nan, np.inf], dtype=dtype)
    tx = cnncy.tensor(x, requires_grad=True)
    out = F.dropout(tx, 1.0)
    assert_close(out, torch.nn.functional.dropout(to_torch(x), 1.0))
    out.sum().backward()
    np.testing.assert_array_equal(tx.grad.numpy(), np.zeros(4, dtype=dtype))


def test_zero_dimensional_and_empty_inputs():
    assert F.dropout(cnncy.tensor(2.0), 0.5).shape == ()
    empty = cnncy.ones(0, 3)
    assert F.dropout(empty, 0.5) is empty


def test_inplace_dropout_writes_into_its_input_and_backpropagates(rng):
    cnncy.manual_seed(2)
    leaf = cnncy.tensor(np.asarray(rng.uniform(1.0, 2.0, (5, 6)), dtype=np.float32), requires_grad=True)
    hidden = leaf * 1
    out = F.dropout(hidden, 0.5, inplace=True)
    assert out is hidden
    out.sum().backward()
    noise = (hidden.detach().numpy() != 0) * np.float32(torch_scale(0.5, np.dtype(np.float32)))
    np.testing.assert_array_equal(leaf.grad.numpy(), noise)
    with pytest.raises(RuntimeError, match="a leaf Variable that requires grad"):
        F.dropout(leaf, 0.5, inplace=True)


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_probability_outside_zero_one_raises_like_torch(p):
    with pytest.raises(ValueError, match=f"dropout probability has to be between 0 and 1, but got {p}"):
        F.dropout(cnncy.ones(3), p)
    with pytest.raises(ValueError):
        torch.nn.functional.dropout(torch.ones(3), p)
    with pytest.raises(ValueError, match="dropout probability"):
        nn.Dropout(p)
    with pytest.raises(ValueError):
        torch.nn.Dropout(p)


def test_integer_input_raises_like_torch():
    with pytest.raises(RuntimeError, match="dropout: expected a float32 or float64 input"):
        F.dropout(cnncy.ones(3, dtype=cnncy.int64), 0.5)
    with pytest.raises(RuntimeError):
        torch.nn.functional.dropout(torch.ones(3, dtype=torch.int64), 0.5)


@pytest.mark.parametrize("args, kwargs", [((), {}), ((0.2,), {}), ((), dict(inplace=True))])
def test_layer_repr_matches_torch(args, kwargs):
    assert repr(nn.Dropout(*args, **kwargs)) == repr(torch.nn.Dropout(*args, **kwargs))


def test_layer_follows_training_mode():
    layer = nn.Dropout(0.5)
    x = cnncy.ones(1000)
    assert (layer(x).numpy() == 0).any()
    layer.eval()
    assert layer(x) is x
    layer.train()
    assert (layer(x).numpy() == 0).any()


def test_mask_is_the_same_for_any_thread_count(dtype, threads):
    x = cnncy.tensor(np.ones((64, 32, 12, 12), dtype=dtype), requires_grad=True)
    results = []
    for count in (1, 2, 3):
        threads(count)
        cnncy.manual_seed(9)
        out = F.dropout(x, 0.25)
        out.sum().backward()
        results.append((out.detach().numpy().copy(), x.grad.numpy().copy()))
        x.grad = None
    for out, grad in results[1:]:
        np.testing.assert_array_equal(out, results[0][0])
        np.testing.assert_array_equal(grad, results[0][1])
    # the gradient is the mask: forward and backward regenerate the same one
    np.testing.assert_array_equal(results[0][1], results[0][0])


@pytest.mark.parametrize("inplace", [False, True])
def test_strided_input_gets_the_mask_of_its_contiguous_copy(inplace):
    base = np.arange(1, 601, dtype=np.float32).reshape(20, 30)
    cnncy.manual_seed(4)
    expected = F.dropout(cnncy.tensor(np.ascontiguousarray(base.T)), 0.5).numpy()
    cnncy.manual_seed(4)
    strided = cnncy.tensor(base).t()
    out = F.dropout(strided, 0.5, inplace=inplace)
    np.testing.assert_array_equal(out.numpy(), expected)
    if inplace:
        assert out is strided
