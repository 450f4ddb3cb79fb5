"""F.relu / F.softmax / F.log_softmax and nn.ReLU / nn.Softmax / nn.LogSoftmax against torch."""
import warnings

import numpy as np
import pytest
import torch

import cnncy
import cnncy.nn as nn
import cnncy.nn.functional as F
from torch_compare import assert_close, numerical_gradient, to_torch

SHAPES = [(), (1,), (7,), (3, 5), (0, 4), (4, 0), (7, 3, 5, 5), (2, 16, 9, 11), (70000,)]


def run(lib, functional, op, x, grad_seed=0, **kwargs):
    """(output, input gradient) of op on a fresh copy of x."""
    tx = cnncy.tensor(x, requires_grad=True) if lib is cnncy else to_torch(x, requires_grad=True)
    out = getattr(functional, op)(tx, **kwargs)
    grad = np.random.default_rng(grad_seed).standard_normal(tuple(out.shape)).astype(x.dtype)
    out.backward(cnncy.tensor(grad) if lib is cnncy else torch.from_numpy(grad))
    return out, tx.grad


def assert_matches_torch(op, x, **kwargs):
    ours = run(cnncy, F, op, x, **kwargs)
    theirs = run(torch, torch.nn.functional, op, x, **kwargs)
    assert_close(ours[0], theirs[0], what="output")
    # A softmax gradient is a difference of terms as large as the upstream gradient (standard
    # normal), so judge its rounding at that scale, not at the scale of the (maybe tiny) result.
    rtol = 1e-5 if x.dtype == np.float32 else 1e-10
    assert_close(ours[1], theirs[1], atol=4 * rtol, what="grad input")
    return ours, theirs


def special_values(rng, shape, dtype):
    x = np.asarray(rng.standard_normal(shape), dtype=dtype)
    flat = x.reshape(-1)
    specials = np.array([np.nan, -0.0, 0.0, np.inf, -np.inf], dtype=dtype)
    flat[:min(flat.size, specials.size)] = specials[:flat.size]
    return x


# ------------------------------------------------------------------ relu

@pytest.mark.parametrize("shape", SHAPES)
def test_relu_matches_torch_bitwise(rng, dtype, shape):
    x = special_values(rng, shape, dtype)
    (out, grad), (torch_out, torch_grad) = assert_matches_torch("relu", x)
    # -0.0 and NaN pass through unchanged, as in torch.
    np.testing.assert_array_equal(np.signbit(out.detach().numpy()), np.signbit(torch_out.detach().numpy()))
    np.testing.assert_array_equal(grad.numpy(), torch_grad.numpy())


def test_relu_of_non_contiguous_input(rng, dtype):
    x = rng.standard_normal((6, 8)).astype(dtype)
    assert_close(F.relu(cnncy.tensor(x).T), torch.relu(to_torch(x).T))


def test_inplace_relu_returns_its_input_and_backpropagates_like_torch(rng, dtype):
    x = rng.standard_normal((3, 4, 5)).astype(dtype)
    grads = []
    for lib, functional in ((cnncy, F), (torch, torch.nn.functional)):
        leaf = cnncy.tensor(x, requires_grad=True) if lib is cnncy else to_torch(x, requires_grad=True)
        hidden = leaf * 2
        out = functional.relu(hidden, inplace=True)
        assert out is hidden
        (out * out).sum().backward()
        grads.append(leaf.grad)
        assert_close(hidden, functional.relu(leaf * 2))
    assert_close(*grads)


def test_inplace_relu_on_non_contiguous_tensor_writes_through(rng):
    base = cnncy.tensor(rng.standard_normal((4, 6)).astype(np.float32))
    view = base.T
    expected = np.maximum(base.numpy().T, 0)
    assert F.relu(view, inplace=True) is view
    np.testing.assert_array_equal(view.numpy(), expected)


def test_inplace_relu_on_leaf_that_requires_grad_raises():
    x = cnncy.randn(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="a leaf Variable that requires grad"):
        F.relu(x, inplace=True)
    with torch.no_grad(), cnncy.no_grad():
        assert F.relu(x, inplace=True) is x
    assert x.requires_grad and x.is_leaf


def test_relu_of_integers_matches_torch_and_booleans_raise():
    x = np.array([-3, 0, 2, -1, 7], dtype=np.int64)
    assert_close(F.relu(cnncy.tensor(x)), torch.relu(torch.from_numpy(x)))
    with pytest.raises(RuntimeError, match="relu: Boolean inputs not supported"):
        F.relu(cnncy.tensor([True, False]))


# ------------------------------------------------------------------ softmax / log_softmax

SOFTMAX_CASES = [((), 0), ((1,), 0), ((7,), -1), ((3, 5), 1), ((3, 5), 0), ((2, 3, 4), 1),
                 ((2, 3, 4), -1), ((0, 4), 1), ((4, 0), 1), ((5, 0, 3), 2), ((64, 10), 1),
                 ((2, 16, 9, 11), 1), ((3, 2000), 1), ((600, 64), 1)]


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
@pytest.mark.parametrize("shape, dim", SOFTMAX_CASES)
def test_softmax_matches_torch(rng, dtype, op, shape, dim):
    x = np.asarray(rng.standard_normal(shape) * 5, dtype=dtype)
    assert_matches_torch(op, x, dim=dim)


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_softmax_is_stable_for_large_logits(dtype, op):
    x = np.array([[1000.0, 1001.0, 999.0], [-1000.0, -1002.0, -1001.0]], dtype=dtype)
    (out, _), _ = assert_matches_torch(op, x, dim=1)
    assert np.isfinite(out.detach().numpy()).all()


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_nan_and_infinities_propagate_like_torch(dtype, op):
    x = np.array([[np.inf, 1.0, 2.0], [-np.inf, -np.inf, -np.inf], [np.nan, 1.0, 2.0],
                  [-np.inf, 0.0, 1.0], [1.0, 2.0, 3.0]], dtype=dtype)
    out = getattr(F, op)(cnncy.tensor(x), dim=1)
    assert_close(out, getattr(torch.nn.functional, op)(to_torch(x), dim=1))


def wide_range_rows(dtype):
    """Rows whose entries run from their maximum down to 110 below it (and -inf): exp of the
    shifted entries spans 1, the denormals and 0, every row with a different spread of offsets."""
    offsets = -np.concatenate([np.linspace(0, 110, 4000), np.geomspace(1e-8, 1e-1, 95), [np.inf]])
    rows = np.random.default_rng(7).permutation(offsets).reshape(256, 16)
    rows[:, 0] = 0.0  # each row's maximum
    return np.asarray(rows + np.arange(256)[:, None] * 0.37, dtype=dtype)


def softmax_reference(x):
    """(entries minus their row maximum, softmax) of rows of x: the subtraction in x's dtype, as
    every softmax kernel rounds it (torch's too), the rest in float64."""
    shifted = (x - x.max(axis=1, keepdims=True)).astype(np.float64)
    exps = np.exp(shifted)
    return shifted, exps / exps.sum(axis=1, keepdims=True)


def assert_softmax_accurate(actual, expected, dtype):
    """Each entry within a few units in its last place (float64 expected values); denormal ones
    within a few units of the smallest denormal, so a sloppy exp anywhere in its range fails."""
    eps, tiny = np.finfo(dtype).eps, np.finfo(dtype).tiny
    normal = expected >= tiny
    assert (np.abs(actual[normal] - expected[normal]) / expected[normal]).max() < 32 * eps
    assert np.abs(actual[~normal] - expected[~normal]).max(initial=0) <= 4 * tiny * eps


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_exponentials_are_accurate_entry_by_entry_across_their_range(dtype, op):
    # The float32 kernels compute exp with their own vector code: each entry is checked against a
    # float64 reference on its own scale (assert_close would judge tiny entries at the scale of
    # the largest), as well as against torch.
    x = wide_range_rows(dtype)
    out = getattr(F, op)(cnncy.tensor(x), dim=1).numpy().astype(np.float64)
    shifted, softmax = softmax_reference(x)
    if op == "softmax":
        assert_softmax_accurate(out, softmax, dtype)
    else:  # exp enters only through log(sum(exp)): an error there shifts a whole row
        expected = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        finite = np.isfinite(expected)
        assert np.array_equal(out[~finite], expected[~finite])
        error = np.abs(out[finite] - expected[finite]) / np.maximum(1, np.abs(expected[finite]))
        assert error.max() < 8 * np.finfo(dtype).eps
    assert_close(getattr(F, op)(cnncy.tensor(x), dim=1), getattr(torch.nn.functional, op)(to_torch(x), dim=1))


def test_log_softmax_gradient_is_accurate_across_its_range(dtype):
    # Its backward takes exp of the saved output (down to -110 here): grad - exp(out) * sum(grad).
    x = wide_range_rows(dtype)
    grad = np.random.default_rng(8).standard_normal(x.shape).astype(dtype)
    t = cnncy.tensor(x, requires_grad=True)
    F.log_softmax(t, dim=1).backward(cnncy.tensor(grad))
    _, softmax = softmax_reference(x)
    expected = grad - softmax * grad.astype(np.float64).sum(axis=1, keepdims=True)
    assert np.abs(t.grad.numpy() - expected).max() <= 32 * np.finfo(dtype).eps * np.abs(grad).max()
    theirs = to_torch(x, requires_grad=True)
    torch.nn.functional.log_softmax(theirs, dim=1).backward(to_torch(grad))
    assert_close(t.grad, theirs.grad)


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
@pytest.mark.parametrize("dim", [0, 1, 2])
def test_softmax_gradients_match_finite_differences(rng, op, dim):
    x = rng.standard_normal((3, 4, 5))
    probe = rng.standard_normal((3, 4, 5))

    def loss():
        return float((getattr(F, op)(cnncy.tensor(x), dim).numpy() * probe).sum())

    tx = cnncy.tensor(x, requires_grad=True)
    (getattr(F, op)(tx, dim) * cnncy.tensor(probe)).sum().backward()
    assert_close(tx.grad, numerical_gradient(loss, x), rtol=1e-7)


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
@pytest.mark.parametrize("shape", [(), (5,), (2, 3), (2, 3, 4), (2, 3, 4, 5)])
def test_implicit_dim_warns_and_chooses_like_torch(rng, op, shape):
    x = rng.standard_normal(shape).astype(np.float32)
    with pytest.warns(UserWarning, match="Implicit dimension choice"):
        ours = getattr(F, op)(cnncy.tensor(x))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert_close(ours, getattr(torch.nn.functional, op)(to_torch(x)))


def test_dtype_argument_casts_first(rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    out = F.softmax(cnncy.tensor(x), 1, dtype=cnncy.float64)
    assert out.dtype == np.float64
    assert_close(out, torch.softmax(to_torch(x), 1, dtype=torch.float64))


def test_tensor_methods(rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    tx, ttorch = cnncy.tensor(x), to_torch(x)
    assert_close(tx.relu(), ttorch.relu())
    assert_close(tx.softmax(0), ttorch.softmax(0))
    assert_close(tx.log_softmax(-1), ttorch.log_softmax(-1))


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_bad_softmax_arguments_raise_like_torch(op):
    with pytest.raises(IndexError, match="Dimension out of range"):
        getattr(F, op)(cnncy.ones(2, 3), 2)
    with pytest.raises(IndexError):
        getattr(torch.nn.functional, op)(torch.ones(2, 3), 2)
    with pytest.raises(NotImplementedError, match=op):
        getattr(F, op)(cnncy.ones(3, dtype=cnncy.int64), 0)
    with pytest.raises(NotImplementedError):
        getattr(torch.nn.functional, op)(torch.ones(3, dtype=torch.int64), 0)
    with pytest.raises(TypeError, match=f"{op}\\(\\): argument 'input' must be Tensor"):
        getattr(F, op)(np.ones(3), 0)


# ------------------------------------------------------------------ threads and layers

@pytest.mark.parametrize("op, kwargs", [("relu", {}), ("softmax", dict(dim=1)),
                                        ("log_softmax", dict(dim=0))])
def test_one_and_two_threads_are_bitwise_identical(rng, threads, op, kwargs):
    x = rng.standard_normal((300, 257)).astype(np.float32)

    def outputs(num_threads):
        threads(num_threads)
        out, grad = run(cnncy, F, op, x, **kwargs)
        return out.detach().numpy(), grad.numpy()

    for one, two in zip(outputs(1), outputs(2)):
        np.testing.assert_array_equal(one, two)


@pytest.mark.parametrize("layer, args", [("ReLU", ()), ("ReLU", (True,)), ("Softmax", (1,)),
                                         ("Softmax", ()), ("LogSoftmax", (0,)), ("LogSoftmax", (-1,))])
def test_layers_match_torch_layers(rng, layer, args):
    ours, theirs = getattr(nn, layer)(*args), getattr(torch.nn, layer)(*args)
    assert repr(ours) == repr(theirs)
    x = rng.standard_normal((4, 6)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert_close(ours(cnncy.tensor(x)), theirs(to_torch(x)))


def test_softmax_layer_without_dim_warns_at_the_callers_line():
    with pytest.warns(UserWarning) as record:
        nn.Softmax()(cnncy.ones(2, 3))
    assert record[0].filename == __file__
