"""F.conv2d and nn.Conv2d against torch: values, gradients, init, errors, threads."""
import math
import warnings

import numpy as np
import pytest
import torch

import cnncy
import cnncy.nn as nn
import cnncy.nn.functional as F
from torch_compare import assert_close, assert_results_close, numerical_gradient, to_torch

# (N, C, H, W, O, kernel, stride, padding, bias): odd and non-square inputs and kernels,
# stride 1-3, padding 0-2, batch 0/1/7, channels 1/3/16, O not a multiple of the gemm tile.
CASES = [
    (1, 1, 5, 5, 1, (3, 3), 1, 0, True),
    (7, 3, 11, 9, 16, (3, 3), 1, 1, True),
    (7, 16, 8, 13, 3, (2, 5), 2, (1, 2), False),
    (1, 3, 28, 28, 16, (5, 5), 1, 2, True),
    (7, 1, 28, 28, 16, (3, 3), 2, 1, True),
    (2, 16, 7, 7, 16, (3, 3), 3, 2, True),
    (3, 3, 10, 6, 5, (1, 1), 1, 0, True),
    (2, 3, 6, 10, 4, (6, 10), 1, 0, True),
    (2, 3, 4, 4, 4, (3, 3), 3, 2, True),
    (0, 3, 8, 8, 4, (3, 3), 1, 1, True),
    (7, 16, 15, 17, 33, (3, 3), (1, 2), (2, 0), True),
    (1, 3, 3, 3, 2, (5, 5), 1, 1, True),
    (5, 16, 14, 14, 35, (3, 3), 1, 1, True),
]


def random_conv(rng, dtype, n, c, h, w, o, kernel, bias=True):
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    weight = rng.standard_normal((o, c) + tuple(kernel)).astype(dtype)
    b = rng.standard_normal(o).astype(dtype) if bias else None
    return x, weight, b


def conv_both(x, weight, bias, grad_seed=0, x_requires_grad=True, **kwargs):
    """Run conv2d forward and backward in cnncy and torch on the same data; return both sides."""
    def run(lib, functional, make):
        tx = make(x, x_requires_grad)
        tw = make(weight, True)
        tb = None if bias is None else make(bias, True)
        out = functional.conv2d(tx, tw, tb, **kwargs)
        grad = np.random.default_rng(grad_seed).standard_normal(tuple(out.shape)).astype(x.dtype)
        out.backward(make(grad, False))
        return out, tx.grad, tw.grad, None if tb is None else tb.grad

    ours = run(cnncy, F, lambda a, g: cnncy.tensor(a, requires_grad=g))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns about padding='same' with even kernels
        theirs = run(torch, torch.nn.functional, lambda a, g: to_torch(a, requires_grad=g))
    return ours, theirs


def assert_conv_matches_torch(ours, theirs, dtype):
    assert_results_close(ours, theirs, ("output", "grad input", "grad weight", "grad bias"), dtype)


@pytest.mark.parametrize("n, c, h, w, o, kernel, stride, padding, bias", CASES)
def test_forward_and_backward_match_torch(rng, dtype, n, c, h, w, o, kernel, stride, padding, bias):
    x, weight, b = random_conv(rng, dtype, n, c, h, w, o, kernel, bias)
    ours, theirs = conv_both(x, weight, b, stride=stride, padding=padding)
    assert_conv_matches_torch(ours, theirs, dtype)


@pytest.mark.parametrize("padding, kernel", [("same", (3, 3)), ("same", (2, 4)), ("same", (1, 5)),
                                             ("valid", (3, 2))])
def test_padding_strings_match_torch(rng, dtype, padding, kernel):
    x, weight, b = random_conv(rng, dtype, 3, 3, 9, 8, 4, kernel)
    ours, theirs = conv_both(x, weight, b, padding=padding)
    assert_conv_matches_torch(ours, theirs, dtype)


def test_unbatched_input_gives_unbatched_output(rng, dtype):
    x, weight, b = random_conv(rng, dtype, 1, 3, 9, 7, 5, (3, 3))
    ours, theirs = conv_both(x[0], weight, b, padding=1)
    assert ours[0].shape == (5, 9, 7)
    assert_conv_matches_torch(ours, theirs, dtype)


def test_first_layer_input_without_grad(rng, dtype):
    x, weight, b = random_conv(rng, dtype, 4, 1, 12, 12, 8, (3, 3))
    ours, theirs = conv_both(x, weight, b, x_requires_grad=False, padding=1)
    assert ours[1] is None
    assert_conv_matches_torch(ours, theirs, dtype)


def test_non_contiguous_input_weight_and_gradient(rng, dtype):
    x_t = rng.standard_normal((3, 4, 10, 9)).astype(dtype).transpose(0, 1, 3, 2)  # (3, 4, 9, 10)
    w_t = rng.standard_normal((6, 4, 3, 5)).astype(dtype).transpose(0, 1, 3, 2)   # (6, 4, 5, 3)
    probe = rng.standard_normal((3, 6, 5, 4)).astype(dtype)  # out is (3, 6, 4, 5)
    ours_x = cnncy.from_numpy(x_t).requires_grad_()
    ours_w = cnncy.from_numpy(w_t).requires_grad_()
    out = F.conv2d(ours_x, ours_w, stride=2, padding=1)
    # The gradient reaching conv2d comes back through a transpose: a non-contiguous array.
    (out.transpose(2, 3) * cnncy.tensor(probe)).sum().backward()
    theirs_x, theirs_w = to_torch(x_t, True), to_torch(w_t, True)
    expected = torch.nn.functional.conv2d(theirs_x, theirs_w, stride=2, padding=1)
    (expected.transpose(2, 3) * to_torch(probe)).sum().backward()
    assert_close(out, expected)
    assert_close(ours_x.grad, theirs_x.grad)
    assert_close(ours_w.grad, theirs_w.grad)


def test_nan_propagates_like_torch(rng):
    x, weight, b = random_conv(rng, np.float64, 2, 3, 8, 8, 4, (3, 3))
    x[1, 2, 4, 5] = np.nan
    ours = F.conv2d(cnncy.tensor(x), cnncy.tensor(weight), cnncy.tensor(b), padding=1)
    theirs = torch.nn.functional.conv2d(to_torch(x), to_torch(weight), to_torch(b), padding=1)
    assert_close(ours, theirs)
    assert np.isnan(ours.numpy()).sum() == 4 * 9



@pytest.mark.parametrize("stride, padding", [(1, 0), (2, 1), ((1, 2), (2, 1))])
def test_gradients_match_finite_differences(rng, stride, padding):
    x, weight, b = random_conv(rng, np.float64, 2, 2, 5, 6, 3, (3, 2))
    probe = rng.standard_normal(F.conv2d(cnncy.tensor(x), cnncy.tensor(weight), cnncy.tensor(b),
                                         stride=stride, padding=padding).shape)

    def loss():
        out = F.conv2d(cnncy.tensor(x), cnncy.tensor(weight), cnncy.tensor(b), stride=stride,
                       padding=padding)
        return float((out.numpy() * probe).sum())

    tx, tw, tb = (cnncy.tensor(a, requires_grad=True) for a in (x, weight, b))
    (F.conv2d(tx, tw, tb, stride=stride, padding=padding) * cnncy.tensor(probe)).sum().backward()
    for what, tensor, array in (("input", tx, x), ("weight", tw, weight), ("bias", tb, b)):
        assert_close(tensor.grad, numerical_gradient(loss, array), rtol=1e-7, what=what)


def test_batch_of_zero_gives_empty_output_and_zero_weight_grads(dtype):
    x = cnncy.zeros(0, 3, 8, 8, dtype=dtype, requires_grad=True)
    layer = nn.Conv2d(3, 4, 3, dtype=dtype)
    out = layer(x)
    assert out.shape == (0, 4, 6, 6)
    out.sum().backward()
    assert x.grad.shape == (0, 3, 8, 8)
    assert not layer.weight.grad.numpy().any() and not layer.bias.grad.numpy().any()


@pytest.mark.parametrize("n", [7, 40])
def test_one_and_two_threads_are_bitwise_identical(rng, threads, n):
    x, weight, b = random_conv(rng, np.float32, n, 3, 16, 15, 16, (3, 3))

    def run(num_threads):
        threads(num_threads)
        ours, _ = conv_both(x, weight, b, stride=(1, 2), padding=1)
        return [t.detach().numpy() for t in ours]

    for one, two in zip(run(1), run(2)):
        np.testing.assert_array_equal(one, two)


# ------------------------------------------------------------------ nn.Conv2d

def test_layer_parameters_and_default_init(dtype):
    layer = nn.Conv2d(16, 32, (3, 5), dtype=dtype)
    assert layer.weight.shape == (32, 16, 3, 5) and layer.bias.shape == (32,)
    assert layer.weight.dtype == dtype and layer.bias.dtype == dtype
    assert [name for name, _ in layer.named_parameters()] == ["weight", "bias"]
    # torch: kaiming_uniform_(a=sqrt(5)) -> U(-b, b) with b = gain * sqrt(3 / fan_in) = 1 / sqrt(fan_in).
    fan_in = 16 * 3 * 5
    bound = math.sqrt(2.0 / (1 + 5)) * math.sqrt(3.0 / fan_in)
    assert bound == pytest.approx(1 / math.sqrt(fan_in))
    weight, bias = layer.weight.detach().numpy(), layer.bias.detach().numpy()
    assert np.abs(weight).max() <= bound and np.abs(bias).max() <= bound
    assert weight.max() > 0.98 * bound and weight.min() < -0.98 * bound
    assert abs(weight.std() - bound / math.sqrt(3)) < 0.05 * bound
    assert abs(weight.mean()) < 0.05 * bound


def test_layer_without_bias():
    layer = nn.Conv2d(3, 4, 3, bias=False)
    assert layer.bias is None
    assert [name for name, _ in layer.named_parameters()] == ["weight"]


def test_layer_forward_backward_matches_torch_layer(rng):
    ours = nn.Conv2d(3, 8, (3, 5), stride=2, padding=(1, 2))
    theirs = torch.nn.Conv2d(3, 8, (3, 5), stride=2, padding=(1, 2))
    with torch.no_grad():
        theirs.weight.copy_(to_torch(ours.weight))
        theirs.bias.copy_(to_torch(ours.bias))
    x = rng.standard_normal((5, 3, 11, 12)).astype(np.float32)
    ours_x, theirs_x = cnncy.tensor(x, requires_grad=True), to_torch(x, True)
    out, expected = ours(ours_x), theirs(theirs_x)
    assert_close(out, expected)
    out.sum().backward()
    expected.sum().backward()
    assert_close(ours_x.grad, theirs_x.grad)
    assert_close(ours.weight.grad, theirs.weight.grad)
    assert_close(ours.bias.grad, theirs.bias.grad)


@pytest.mark.parametrize("args, kwargs", [
    ((1, 32, 3), dict(padding=1)),
    ((3, 8, (3, 5)), dict(stride=2, bias=False)),
    ((3, 8, 3), dict(padding="same")),
    ((3, 8, 3), dict(padding="valid")),
    ((16, 32, 5), dict(stride=(1, 2), padding=(2, 0))),
])
def test_layer_repr_matches_torch(args, kwargs):
    assert repr(nn.Conv2d(*args, **kwargs)) == repr(torch.nn.Conv2d(*args, **kwargs))


# ------------------------------------------------------------------ errors

def t(*shape, dtype=np.float32):
    return cnncy.tensor(np.ones(shape, dtype=dtype))


W = t(4, 3, 3, 3)

FUNCTIONAL_ERRORS = {
    "2-D input": (lambda: F.conv2d(t(28, 28), W), RuntimeError, "Expected 3D (unbatched) or 4D"),
    "5-D input": (lambda: F.conv2d(t(1, 1, 3, 8, 8), W), RuntimeError, "got input of size: [1, 1, 3, 8, 8]"),
    "channels": (lambda: F.conv2d(t(2, 5, 8, 8), W), RuntimeError,
                 "Given groups=1, weight of size [4, 3, 3, 3], expected input[2, 5, 8, 8] to have 3 "
                 "channels, but got 5 channels instead"),
    "unbatched channels": (lambda: F.conv2d(t(2, 8, 8), W), RuntimeError, "expected input[1, 2, 8, 8]"),
    "kernel too big": (lambda: F.conv2d(t(2, 3, 2, 8), W), RuntimeError,
                       "Calculated padded input size per channel: (2 x 8). Kernel size: (3 x 3)"),
    "empty image": (lambda: F.conv2d(t(2, 3, 0, 8), W), RuntimeError, "Kernel size can't be greater"),
    "stride 0": (lambda: F.conv2d(t(2, 3, 8, 8), W, stride=0), RuntimeError, "non-positive stride"),
    "stride -1": (lambda: F.conv2d(t(2, 3, 8, 8), W, stride=(1, -1)), RuntimeError, "non-positive stride"),
    "stride of 3": (lambda: F.conv2d(t(2, 3, 8, 8), W, stride=(1, 1, 1)), RuntimeError,
                    "expected stride to be a single integer value or a list of 2 values"),
    "negative padding": (lambda: F.conv2d(t(2, 3, 8, 8), W, padding=-1), RuntimeError, "negative padding"),
    "float padding": (lambda: F.conv2d(t(2, 3, 8, 8), W, padding=1.0), TypeError, "padding"),
    "padding string": (lambda: F.conv2d(t(2, 3, 8, 8), W, padding="full"), RuntimeError,
                       "Invalid padding string: 'full'"),
    "same with stride": (lambda: F.conv2d(t(2, 3, 8, 8), W, stride=2, padding="same"), RuntimeError,
                         "padding='same' is not supported for strided convolutions"),
    "long input": (lambda: F.conv2d(t(2, 3, 8, 8, dtype=np.int64), W), RuntimeError,
                   "Input type (long) and weight type (float) should be the same"),
    "double input": (lambda: F.conv2d(t(2, 3, 8, 8, dtype=np.float64), W), RuntimeError,
                     "Input type (double) and weight type (float)"),
    "bias dtype": (lambda: F.conv2d(t(2, 3, 8, 8), W, t(4, dtype=np.float64)), RuntimeError,
                   "Input type (float) and bias type (double) should be the same"),
    "integer weight and input": (lambda: F.conv2d(t(2, 3, 8, 8, dtype=np.int64), t(4, 3, 3, 3, dtype=np.int64)),
                                 RuntimeError, "expected floating point"),
    "bias shape": (lambda: F.conv2d(t(2, 3, 8, 8), W, t(5)), RuntimeError,
                   "expected bias to be 1-dimensional with 4 elements, but got bias of size [5]"),
    "3-D weight": (lambda: F.conv2d(t(2, 3, 8, 8), t(4, 3, 3)), RuntimeError, "weight of size [4, 3, 3]"),
    "dilation": (lambda: F.conv2d(t(2, 3, 8, 8), W, dilation=2), NotImplementedError, "dilation"),
    "groups": (lambda: F.conv2d(t(2, 3, 8, 8), t(3, 1, 3, 3), groups=3), NotImplementedError, "groups"),
    "groups 0": (lambda: F.conv2d(t(2, 3, 8, 8), W, groups=0), RuntimeError, "non-positive groups"),
    "numpy input": (lambda: F.conv2d(np.ones((2, 3, 8, 8), np.float32), W), TypeError, "must be Tensor"),
}


@pytest.mark.parametrize("case", FUNCTIONAL_ERRORS)
def test_bad_arguments_raise_like_torch(case):
    call, error, message = FUNCTIONAL_ERRORS[case]
    with pytest.raises(error) as info:
        call()
    assert "conv2d" in str(info.value) and message in str(info.value)


LAYER_ERRORS = {
    "padding string": (dict(padding="full"), ValueError, "Invalid padding string"),
    "same with stride": (dict(padding="same", stride=2), ValueError, "strided convolutions"),
    "groups 0": (dict(groups=0), ValueError, "groups must be a positive integer"),
    "groups 3": (dict(groups=3), NotImplementedError, "groups"),
    "dilation": (dict(dilation=2), NotImplementedError, "dilation"),
    "padding mode": (dict(padding_mode="reflect"), NotImplementedError, "padding_mode"),
    "bad padding mode": (dict(padding_mode="mirror"), ValueError, "padding_mode must be one of"),
    "negative padding": (dict(padding=-1), ValueError, "padding"),
    "integer dtype": (dict(dtype=np.int64), TypeError, "float32 or float64"),
}


@pytest.mark.parametrize("case", LAYER_ERRORS)
def test_bad_layer_arguments_raise(case):
    kwargs, error, message = LAYER_ERRORS[case]
    with pytest.raises(error) as info:
        nn.Conv2d(3, 6, 3, **kwargs)
    assert "Conv2d" in str(info.value) and message in str(info.value)
