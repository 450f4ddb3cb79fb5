"""F.linear and nn.Linear against torch: values, gradients, init, errors, threads."""
import math

import numpy as np
import pytest
import torch

import cnncy
import cnncy.nn as nn
import cnncy.nn.functional as F
from torch_compare import assert_close, assert_results_close, numerical_gradient, to_torch

# (input shape, weight shape, bias shape or None)
CASES = [
    ((7, 33), (19, 33), (19,)),
    ((1, 1), (1, 1), (1,)),
    ((0, 5), (3, 5), (3,)),
    ((64, 300), (10, 300), (10,)),
    ((5, 130), (257, 130), None),
    ((6,), (10, 6), (10,)),
    ((2, 3, 6), (10, 6), (10,)),
    ((4, 0), (3, 0), (3,)),
    ((4, 6), (0, 6), (0,)),
    ((3, 6), (6,), None),
    ((3, 6), (4, 6), ()),
    ((3, 6), (4, 6), (1,)),
    ((7, 1030), (11, 1030), (11,)),  # long rows: the forward's dot tiles, with partial tiles and tail
    ((33, 2050), (12, 2050), (12,)),  # a head's weight gradient in halves of the batch: odd rows, column tail
    ((19, 1100), (37, 1100), (37,)),  # long rows, many outputs: weight rows in place, partial tiles and k-block
    ((64, 400), (120, 400), (120,)),  # LeNet's first fully connected layer: weight rows in place too
    ((3, 257), (33, 257), (33,)),  # the smallest such layer, with a tail of features
    ((9, 300), (40, 300), None),  # weight rows in place without a bias
]


def linear_both(x, weight, bias, x_requires_grad=True):
    """Run linear forward and backward in cnncy and torch on the same data; return both sides."""
    def run(lib, functional, make):
        tx = make(x, x_requires_grad)
        tw = make(weight, True)
        tb = None if bias is None else make(bias, True)
        out = functional.linear(tx, tw, tb)
        grad = np.random.default_rng(0).standard_normal(tuple(out.shape)).astype(x.dtype)
        out.backward(make(grad, False))
        return out, tx.grad, tw.grad, None if tb is None else tb.grad

    ours = run(cnncy, F, lambda a, g: cnncy.tensor(a, requires_grad=g))
    theirs = run(torch, torch.nn.functional, lambda a, g: to_torch(a, requires_grad=g))
    return ours, theirs


def assert_linear_matches_torch(ours, theirs, dtype):
    assert_results_close(ours, theirs, ("output", "grad input", "grad weight", "grad bias"), dtype)


@pytest.mark.parametrize("input_shape, weight_shape, bias_shape", CASES)
def test_forward_and_backward_match_torch(rng, dtype, input_shape, weight_shape, bias_shape):
    x = rng.standard_normal(input_shape).astype(dtype)
    weight = rng.standard_normal(weight_shape).astype(dtype)
    bias = None if bias_shape is None else np.asarray(rng.standard_normal(bias_shape), dtype=dtype)
    ours, theirs = linear_both(x, weight, bias)
    assert_linear_matches_torch(ours, theirs, dtype)


def test_input_without_grad(rng, dtype):
    x, weight, bias = (rng.standard_normal(s).astype(dtype) for s in ((8, 20), (5, 20), (5,)))
    ours, theirs = linear_both(x, weight, bias, x_requires_grad=False)
    assert ours[1] is None
    assert_linear_matches_torch(ours, theirs, dtype)


def test_non_contiguous_input_weight_and_gradient(rng, dtype):
    x_t = rng.standard_normal((12, 9)).astype(dtype).T        # (9, 12)
    w_t = rng.standard_normal((12, 5)).astype(dtype).T        # (5, 12)
    probe = rng.standard_normal((5, 9)).astype(dtype)
    ours_x = cnncy.from_numpy(x_t).requires_grad_()
    ours_w = cnncy.from_numpy(w_t).requires_grad_()
    out = F.linear(ours_x, ours_w)
    # The gradient reaching linear comes back through a transpose: a non-contiguous array.
    (out.T * cnncy.tensor(probe)).sum().backward()
    theirs_x, theirs_w = to_torch(x_t, True), to_torch(w_t, True)
    expected = torch.nn.functional.linear(theirs_x, theirs_w)
    (expected.T * to_torch(probe)).sum().backward()
    assert_close(out, expected)
    assert_close(ours_x.grad, theirs_x.grad)
    assert_close(ours_w.grad, theirs_w.grad)



def test_gradients_match_finite_differences(rng):
    x, weight, bias = (rng.standard_normal(s) for s in ((2, 3, 7), (5, 7), (5,)))
    probe = rng.standard_normal((2, 3, 5))

    def loss():
        out = F.linear(cnncy.tensor(x), cnncy.tensor(weight), cnncy.tensor(bias))
        return float((out.numpy() * probe).sum())

    tx, tw, tb = (cnncy.tensor(a, requires_grad=True) for a in (x, weight, bias))
    (F.linear(tx, tw, tb) * cnncy.tensor(probe)).sum().backward()
    for what, tensor, array in (("input", tx, x), ("weight", tw, weight), ("bias", tb, bias)):
        assert_close(tensor.grad, numerical_gradient(loss, array), rtol=1e-7, what=what)


# Every forward path on enough work for threads: gemm tiles (300, 800 features), dot tiles (1600 and
# 1030 features, 13 and 12 outputs), weight rows in place (1100 features, 40 outputs); the backward
# runs gemm tiles for 70 rows (the weight gradient of 12 outputs: partial products of the batch's
# halves) and the streamed few-rows sums (split over the team by weight rows and feature blocks) for 3.
@pytest.mark.parametrize("rows", [70, 3])
@pytest.mark.parametrize("out_features, in_features", [(200, 300), (40, 800), (13, 1600), (12, 1030), (40, 1100)])
def test_one_two_and_three_threads_are_bitwise_identical(rng, threads, rows, out_features, in_features):
    shapes = ((rows, in_features), (out_features, in_features), (out_features,))
    x, weight, bias = (rng.standard_normal(s).astype(np.float32) for s in shapes)

    def run(num_threads):
        threads(num_threads)
        ours, _ = linear_both(x, weight, bias)
        return [t.detach().numpy() for t in ours]

    one = run(1)
    for num_threads in (2, 3):
        for a, b in zip(one, run(num_threads)):
            np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------ nn.Linear

def test_layer_parameters_and_default_init(dtype):
    layer = nn.Linear(200, 30, dtype=dtype)
    assert layer.weight.shape == (30, 200) and layer.bias.shape == (30,)
    assert layer.weight.dtype == dtype and layer.bias.dtype == dtype
    assert [name for name, _ in layer.named_parameters()] == ["weight", "bias"]
    # torch: kaiming_uniform_(a=sqrt(5)) -> U(-b, b) with b = gain * sqrt(3 / fan_in) = 1 / sqrt(fan_in).
    bound = math.sqrt(2.0 / (1 + 5)) * math.sqrt(3.0 / 200)
    assert bound == pytest.approx(1 / math.sqrt(200))
    weight, bias = layer.weight.detach().numpy(), layer.bias.detach().numpy()
    assert np.abs(weight).max() <= bound and np.abs(bias).max() <= bound
    assert weight.max() > 0.98 * bound and weight.min() < -0.98 * bound
    assert abs(weight.std() - bound / math.sqrt(3)) < 0.05 * bound
    assert abs(weight.mean()) < 0.05 * bound


def test_layer_without_bias_and_on_any_leading_shape(rng):
    layer = nn.Linear(6, 4, bias=False)
    assert layer.bias is None
    x = rng.standard_normal((2, 3, 6)).astype(np.float32)
    out = layer(cnncy.tensor(x))
    expected = torch.nn.functional.linear(to_torch(x), to_torch(layer.weight))
    assert_close(out, expected)


def test_layer_forward_backward_matches_torch_layer(rng):
    ours, theirs = nn.Linear(50, 7), torch.nn.Linear(50, 7)
    with torch.no_grad():
        theirs.weight.copy_(to_torch(ours.weight))
        theirs.bias.copy_(to_torch(ours.bias))
    x = rng.standard_normal((9, 50)).astype(np.float32)
    ours_x, theirs_x = cnncy.tensor(x, requires_grad=True), to_torch(x, True)
    out, expected = ours(ours_x), theirs(theirs_x)
    assert_close(out, expected)
    out.sum().backward()
    expected.sum().backward()
    assert_close(ours_x.grad, theirs_x.grad)
    assert_close(ours.weight.grad, theirs.weight.grad)
    assert_close(ours.bias.grad, theirs.bias.grad)


@pytest.mark.parametrize("bias", [True, False])
def test_layer_repr_matches_torch(bias):
    assert repr(nn.Linear(3, 4, bias=bias)) == repr(torch.nn.Linear(3, 4, bias=bias))


# ------------------------------------------------------------------ errors

def t(*shape, dtype=np.float32):
    return cnncy.tensor(np.ones(shape, dtype=dtype))


ERRORS = {
    "shapes": (lambda: F.linear(t(4, 100), t(10, 6272)), RuntimeError,
               "mat1 and mat2 shapes cannot be multiplied (4x100 and 6272x10)"),
    "3-D input": (lambda: F.linear(t(2, 3, 6), t(10, 7)), RuntimeError,
                  "mat1 and mat2 shapes cannot be multiplied (6x6 and 7x10)"),
    "1-D input": (lambda: F.linear(t(6), t(10, 7)), RuntimeError, "(1x6 and 7x10)"),
    "0-D input": (lambda: F.linear(cnncy.tensor(1.0), t(10, 1)), RuntimeError, "at least 1D"),
    "3-D weight": (lambda: F.linear(t(3, 6), t(2, 3, 6)), RuntimeError, "weight of size [2, 3, 6]"),
    "long input": (lambda: F.linear(t(3, 6, dtype=np.int64), t(4, 6)), RuntimeError,
                   "Input type (long) and weight type (float) should be the same"),
    "double input": (lambda: F.linear(t(3, 6, dtype=np.float64), t(4, 6)), RuntimeError,
                     "Input type (double) and weight type (float)"),
    "bias dtype": (lambda: F.linear(t(3, 6), t(4, 6), t(4, dtype=np.float64)), RuntimeError,
                   "bias type (double)"),
    "bias shape": (lambda: F.linear(t(3, 6), t(4, 6), t(5)), RuntimeError, "bias of size [5]"),
    "numpy weight": (lambda: F.linear(t(3, 6), np.ones((4, 6), np.float32)), TypeError, "must be Tensor"),
}


@pytest.mark.parametrize("case", ERRORS)
def test_bad_arguments_raise_like_torch(case):
    call, error, message = ERRORS[case]
    with pytest.raises(error) as info:
        call()
    assert "linear" in str(info.value) and message in str(info.value)


def test_layer_rejects_integer_dtype():
    with pytest.raises(TypeError, match="Linear"):
        nn.Linear(3, 4, dtype=np.int64)
