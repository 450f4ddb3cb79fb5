"""F.max_pool2d / F.avg_pool2d and nn.MaxPool2d / nn.AvgPool2d against torch."""
import numpy as np
import pytest
import torch

import cnncy
import cnncy.nn as nn
import cnncy.nn.functional as F
from torch_compare import assert_close, numerical_gradient, to_torch

# (N, C, H, W, kernel, stride, padding, dilation, ceil_mode): odd and non-square inputs and
# kernels, stride 1-3, padding 0..k/2, batch 0/1/7, channels 1/3/16, ceil_mode windows that
# hang past the input, and rows long enough for the vectorised interior.
CASES = [
    (1, 1, 5, 5, 2, None, 0, 1, False),
    (7, 3, 11, 9, 3, 1, 1, 1, False),
    (7, 16, 8, 13, (2, 5), 2, (1, 2), 1, False),
    (1, 3, 28, 28, 2, 2, 0, 1, False),
    (2, 16, 28, 28, 3, 2, 1, 1, True),
    (3, 3, 7, 10, (3, 2), (3, 1), (1, 1), 1, True),
    (2, 3, 6, 6, 2, 3, 1, 1, True),
    (1, 3, 5, 8, 3, 3, 0, 1, True),
    (0, 3, 8, 8, 2, 2, 0, 1, False),
    (2, 1, 9, 40, (1, 3), (2, 1), (0, 1), 1, False),
    (2, 3, 37, 45, 3, 2, 1, 1, False),
    (2, 2, 10, 11, 3, 1, 1, 2, False),
    (1, 3, 13, 12, (2, 3), (2, 3), (1, 0), (2, 3), True),
    (7, 3, 4, 4, 4, 1, 2, 1, False),
]


def run_pool(lib, functional, op, x, grad_seed, **kwargs):
    """(output, input gradient, indices or None) of one pooling op and its backward."""
    tx = cnncy.tensor(x, requires_grad=True) if lib is cnncy else to_torch(x, requires_grad=True)
    result = getattr(functional, op)(tx, **kwargs)
    out, indices = result if isinstance(result, tuple) else (result, None)
    grad = np.random.default_rng(grad_seed).standard_normal(tuple(out.shape)).astype(x.dtype)
    out.backward(cnncy.tensor(grad) if lib is cnncy else torch.from_numpy(grad))
    return out, tx.grad, indices


def assert_pool_matches_torch(op, x, grad_seed=0, **kwargs):
    """Compare with torch; torch's input tracks gradients, so its CPU kernel with indices runs."""
    ours = run_pool(cnncy, F, op, x, grad_seed, **kwargs)
    theirs = run_pool(torch, torch.nn.functional, op, x, grad_seed, **kwargs)
    for what, a, b in zip(("output", "grad input", "indices"), ours, theirs):
        if b is not None:
            assert_close(a, b, what=what)
    return ours, theirs


def pool_kwargs(kernel, stride, padding, dilation, ceil_mode):
    return dict(kernel_size=kernel, stride=stride, padding=padding, dilation=dilation,
                ceil_mode=ceil_mode)


@pytest.mark.parametrize("n, c, h, w, kernel, stride, padding, dilation, ceil_mode", CASES)
def test_max_pool_matches_torch(rng, dtype, n, c, h, w, kernel, stride, padding, dilation, ceil_mode):
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    assert_pool_matches_torch("max_pool2d", x, return_indices=True,
                              **pool_kwargs(kernel, stride, padding, dilation, ceil_mode))


@pytest.mark.parametrize("n, c, h, w, kernel, stride, padding, dilation, ceil_mode",
                         [case for case in CASES if case[7] == 1])
@pytest.mark.parametrize("count_include_pad, divisor_override", [(True, None), (False, None),
                                                                 (True, 3), (False, -2)])
def test_avg_pool_matches_torch(rng, dtype, n, c, h, w, kernel, stride, padding, dilation, ceil_mode,
                                count_include_pad, divisor_override):
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    assert_pool_matches_torch("avg_pool2d", x, kernel_size=kernel, stride=stride, padding=padding,
                              ceil_mode=ceil_mode, count_include_pad=count_include_pad,
                              divisor_override=divisor_override)


@pytest.mark.parametrize("kernel, stride, padding", [(2, 2, 0), (3, 1, 1), ((3, 2), (1, 2), (1, 1)),
                                                     (3, 2, 1)])
@pytest.mark.parametrize("width", [5, 40])
def test_max_pool_ties_go_to_the_first_element_like_torch(dtype, kernel, stride, padding, width):
    x = np.ones((2, 3, 7, width), dtype=dtype)
    (_, grad, indices), (_, torch_grad, torch_indices) = assert_pool_matches_torch(
        "max_pool2d", x, kernel_size=kernel, stride=stride, padding=padding, return_indices=True)
    np.testing.assert_array_equal(indices.numpy(), torch_indices.numpy())
    np.testing.assert_array_equal(grad.numpy(), torch_grad.numpy())


# Every input in a window; a row and a column in none; rows of several vector blocks (35 outputs).
@pytest.mark.parametrize("height, width", [(6, 8), (7, 9), (6, 70), (33, 71)])
def test_max_pool_2x2_gradient_is_torchs_bit_for_bit(rng, dtype, height, width):
    """The 2x2 pool's one-pass backward against torch's zero-then-add: signed zeros and NaNs included."""
    x = rng.standard_normal((2, 3, height, width)).astype(dtype)
    grad = rng.standard_normal((2, 3, height // 2, width // 2)).astype(dtype)
    grad[0, 0, 0, :] = -0.0
    grad[1, 2, 1, 1] = np.nan
    grad[1, 1, 2, :] = -np.inf
    grads = []
    for lib, functional in ((cnncy, F), (torch, torch.nn.functional)):
        tx = cnncy.tensor(x, requires_grad=True) if lib is cnncy else to_torch(x, requires_grad=True)
        functional.max_pool2d(tx, 2).backward(cnncy.tensor(grad) if lib is cnncy else torch.from_numpy(grad))
        grads.append(tx.grad.numpy())
    np.testing.assert_array_equal(grads[0], grads[1])
    np.testing.assert_array_equal(np.signbit(grads[0]), np.signbit(grads[1]))


@pytest.mark.parametrize("width", [6, 40])
def test_nan_and_infinities_propagate_like_torch(rng, dtype, width):
    x = rng.standard_normal((2, 3, 9, width)).astype(dtype)
    x[0, 0, 1, 1] = x[0, 0, 1, 2] = x[0, 0, 2, 1] = np.nan  # several NaNs in one window: the last wins
    x[0, 1, 4, :] = np.nan
    x[1, 2, :4, :4] = -np.inf
    x[1, 0, 5, 5] = np.inf
    x[1, 1, ::2, ::3] = np.nan
    for kwargs in (dict(kernel_size=2), dict(kernel_size=3, stride=1, padding=1),
                   dict(kernel_size=(3, 2), stride=(2, 1), ceil_mode=True)):
        (out, _, indices), (torch_out, _, torch_indices) = assert_pool_matches_torch(
            "max_pool2d", x, return_indices=True, **kwargs)
        np.testing.assert_array_equal(out.detach().numpy(), torch_out.detach().numpy())
        np.testing.assert_array_equal(indices.numpy(), torch_indices.numpy())
        assert_pool_matches_torch("avg_pool2d", x, **kwargs)



@pytest.mark.parametrize("op, kwargs", [
    ("max_pool2d", dict(kernel_size=2)),
    ("max_pool2d", dict(kernel_size=3, stride=(1, 2), padding=1, ceil_mode=True)),
    ("avg_pool2d", dict(kernel_size=3, stride=2, padding=1)),
    ("avg_pool2d", dict(kernel_size=(2, 3), stride=1, padding=(1, 0), count_include_pad=False,
                        ceil_mode=True)),
])
def test_gradients_match_finite_differences(rng, op, kwargs):
    # A permutation keeps the values well apart, so no max window is near a tie.
    x = rng.permutation(2 * 2 * 5 * 6).reshape(2, 2, 5, 6).astype(np.float64) / 7
    probe = rng.standard_normal(tuple(getattr(F, op)(cnncy.tensor(x), **kwargs).shape))

    def loss():
        return float((getattr(F, op)(cnncy.tensor(x), **kwargs).numpy() * probe).sum())

    tx = cnncy.tensor(x, requires_grad=True)
    (getattr(F, op)(tx, **kwargs) * cnncy.tensor(probe)).sum().backward()
    assert_close(tx.grad, numerical_gradient(loss, x), rtol=1e-7)


@pytest.mark.parametrize("op", ["max_pool2d", "avg_pool2d"])
def test_unbatched_and_non_contiguous_inputs(rng, dtype, op):
    x = rng.standard_normal((3, 9, 8)).astype(dtype)
    assert_pool_matches_torch(op, x, kernel_size=3, stride=2, padding=1)
    wide = rng.standard_normal((2, 3, 9, 16)).astype(dtype)
    ours = getattr(F, op)(cnncy.tensor(wide)[:, :, :, ::2], 2)
    assert_close(ours, getattr(torch.nn.functional, op)(to_torch(wide)[:, :, :, ::2], 2))


def test_batch_of_zero_gives_empty_output_and_gradient(dtype):
    x = cnncy.zeros(0, 3, 8, 8, dtype=dtype, requires_grad=True)
    out = F.max_pool2d(x, 2) + F.avg_pool2d(x, 2)
    assert out.shape == (0, 3, 4, 4)
    out.sum().backward()
    assert x.grad.shape == (0, 3, 8, 8)


@pytest.mark.parametrize("op", ["max_pool2d", "avg_pool2d"])
@pytest.mark.parametrize("n", [2, 40])
def test_one_and_two_threads_are_bitwise_identical(rng, threads, op, n):
    x = rng.standard_normal((n, 8, 28, 28)).astype(np.float32)

    def run(num_threads):
        threads(num_threads)
        out, grad_x, _ = run_pool(cnncy, F, op, x, 0, kernel_size=3, stride=2, padding=1,
                                  ceil_mode=True)
        return out.detach().numpy(), grad_x.numpy()

    for one, two in zip(run(1), run(2)):
        np.testing.assert_array_equal(one, two)


# ------------------------------------------------------------------ layers

@pytest.mark.parametrize("layer, args, kwargs", [
    ("MaxPool2d", (2,), {}),
    ("MaxPool2d", (3, 2, 1), dict(ceil_mode=True)),
    ("MaxPool2d", ((2, 3),), dict(dilation=(1, 2))),
    ("AvgPool2d", (3,), {}),
    ("AvgPool2d", ((3, 2),), dict(stride=1, padding=1, count_include_pad=False, divisor_override=2)),
])
def test_layers_match_torch_layers(rng, layer, args, kwargs):
    ours, theirs = getattr(nn, layer)(*args, **kwargs), getattr(torch.nn, layer)(*args, **kwargs)
    assert repr(ours) == repr(theirs)
    x = rng.standard_normal((2, 3, 11, 12)).astype(np.float32)
    assert_close(ours(cnncy.tensor(x)), theirs(to_torch(x)))


def test_max_pool_layer_returns_indices():
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    out, indices = nn.MaxPool2d(2, return_indices=True)(cnncy.tensor(x))
    _, torch_indices = torch.nn.MaxPool2d(2, return_indices=True)(to_torch(x))
    assert indices.dtype == np.int64
    np.testing.assert_array_equal(indices.numpy(), torch_indices.numpy())


# ------------------------------------------------------------------ errors

def bad_calls(lib):
    """name -> (call, expected exception, message fragment), run against cnncy and torch alike."""
    functional = lib.nn.functional

    def x(*shape, dtype="float32"):
        return lib.ones(*shape, dtype=getattr(lib, dtype))

    return {
        "2-D input": (lambda: functional.max_pool2d(x(5, 5), 2), RuntimeError,
                      "3D or 4D (batch mode) tensor expected"),
        "5-D input": (lambda: functional.max_pool2d(x(1, 1, 1, 5, 5), 2), RuntimeError, "3D or 4D"),
        "avg 2-D input": (lambda: functional.avg_pool2d(x(5, 5), 2), IndexError, "Dimension out of range"),
        "avg 5-D input": (lambda: functional.avg_pool2d(x(1, 1, 1, 5, 5), 2), RuntimeError,
                          "Expected 3D or 4D (batch mode) tensor with optional 0 dim batch size"),
        "zero channels": (lambda: functional.max_pool2d(x(1, 0, 4, 4), 2), RuntimeError, "[1, 0, 4, 4]"),
        "zero height": (lambda: functional.avg_pool2d(x(1, 3, 0, 4), 2), RuntimeError, "[1, 3, 0, 4]"),
        "stride 0": (lambda: functional.max_pool2d(x(1, 1, 5, 5), 2, 0), RuntimeError,
                     "stride should not be zero"),
        "stride (0, 1)": (lambda: functional.avg_pool2d(x(1, 1, 5, 5), 2, (0, 1)), RuntimeError,
                          "stride should not be zero"),
        "negative stride": (lambda: functional.max_pool2d(x(1, 1, 5, 5), 2, -1), RuntimeError,
                            "stride should be greater than zero, but got dH: -1 dW: -1"),
        "kernel 0": (lambda: functional.max_pool2d(x(1, 1, 5, 5), 0, 1), RuntimeError,
                     "kernel size should be greater than zero, but got kH: 0 kW: 0"),
        "kernel 0 default stride": (lambda: functional.avg_pool2d(x(1, 1, 5, 5), 0), RuntimeError,
                                    "stride should not be zero"),
        "dilation 0": (lambda: functional.max_pool2d(x(1, 1, 5, 5), 2, dilation=0), RuntimeError,
                       "dilation should be greater than zero"),
        "pad too big": (lambda: functional.max_pool2d(x(1, 1, 5, 5), 3, 1, 2), RuntimeError,
                        "pad should be at most half of effective kernel size, but got pad=2, "
                        "kernel_size=3 and dilation=1"),
        "pad too big for width": (lambda: functional.max_pool2d(x(1, 1, 8, 8), (3, 1), 1, 1),
                                  RuntimeError, "pad=1, kernel_size=1"),
        "pad too big with dilation": (lambda: functional.max_pool2d(x(1, 1, 8, 8), 3, 1, 2, dilation=2),
                                      RuntimeError, "pad should be smaller than or equal to half of "
                                      "kernel size, but got padW = 2, padH = 2, kW = 3, kH = 3"),
        "avg pad too big": (lambda: functional.avg_pool2d(x(1, 1, 5, 5), 2, 1, 2), RuntimeError,
                            "pad should be at most half"),
        "negative pad": (lambda: functional.avg_pool2d(x(1, 1, 5, 5), 3, 1, -1), RuntimeError,
                         "pad must be non-negative, but got pad: -1"),
        "output too small": (lambda: functional.max_pool2d(x(1, 3, 2, 2), 3), RuntimeError,
                             "Given input size: (3x2x2). Calculated output size: (3x0x0). "
                             "Output size is too small"),
        "avg output too small": (lambda: functional.avg_pool2d(x(3, 2, 5), 3), RuntimeError,
                                 "Given input size: (3x2x5)"),
        "3 kernel sizes": (lambda: functional.max_pool2d(x(1, 1, 5, 5), (2, 2, 2)), RuntimeError,
                           "kernel_size must either be a single int, or a tuple of two ints"),
        "float kernel": (lambda: functional.max_pool2d(x(1, 1, 5, 5), 2.0), TypeError, "kernel_size"),
        "divisor 0": (lambda: functional.avg_pool2d(x(1, 1, 4, 4), 2, divisor_override=0), RuntimeError,
                      "divisor must be not zero"),
        "float divisor": (lambda: functional.avg_pool2d(x(1, 1, 4, 4), 2, divisor_override=1.5),
                          TypeError, "divisor_override"),
    }


@pytest.mark.parametrize("case", bad_calls(cnncy))
def test_bad_arguments_raise_like_torch(case):
    call, error, message = bad_calls(cnncy)[case]
    with pytest.raises(error) as info:
        call()
    op = "avg_pool2d" if "avg" in case or "avg_pool2d" in str(info.value) else "max_pool2d"
    assert op in str(info.value) and message in str(info.value)
    torch_call, _, _ = bad_calls(torch)[case]
    with pytest.raises(error):
        torch_call()


def test_window_entirely_in_padding_is_refused():
    # torch reads out of bounds here; cnncy refuses the geometry.
    with pytest.raises(RuntimeError, match="max_pool2d: the pooling window of output 0"):
        F.max_pool2d(cnncy.ones(1, 1, 2, 2), 2, 1, 1, dilation=3)


def test_integer_input_is_not_supported():
    with pytest.raises(NotImplementedError, match="max_pool2d: only float32 and float64"):
        F.max_pool2d(cnncy.ones(1, 1, 4, 4, dtype=cnncy.int64), 2)
