"""Fused conv2d -> relu -> max_pool2d (cnncy.nn.functional.fusion, cnncy._fused) against torch's unfused ops."""
import numpy as np
import pytest
import torch

import cnncy
import cnncy.nn as nn
import cnncy.nn.functional as F
from cnncy.nn.functional.fusion import MAX_FUSED_TAPS
from torch_compare import assert_close, to_torch

FUSED_NODE = "ConvReluPool2dFunctionBackward"

# (N, C_in, H, W, C_out, kernel, padding, pool): batch 0/1/7/64, C_in 1/3, C_out 1/8/32 and odd ones,
# odd and non-square sizes, padding 0-2, pools 2, 3 and non-square, rows longer than one vector block.
CASES = [
    (1, 1, 28, 28, 32, 3, 1, 2),
    (64, 1, 28, 28, 32, 3, 1, 2),
    (7, 3, 13, 11, 8, 3, 0, 2),
    (7, 1, 17, 9, 1, 3, 2, 3),
    (1, 1, 10, 41, 5, 5, 2, 2),
    (2, 3, 12, 12, 6, (3, 2), (1, 0), (2, 3)),
    (3, 2, 9, 9, 11, 1, 0, 2),
    (0, 1, 8, 8, 8, 3, 1, 2),
    (2, 1, 7, 7, 3, 2, 1, 3),
]


def run_chain(lib, x, weight, bias, padding, pool, grad_seed=0, relu=True):
    """(pooled output, grad input, grad weight, grad bias) of max_pool2d(relu(conv2d(...))) and its backward."""
    if lib is cnncy:
        tensors = [cnncy.tensor(a, requires_grad=True) if a is not None else None for a in (x, weight, bias)]
    else:
        tensors = [to_torch(a, requires_grad=True) if a is not None else None for a in (x, weight, bias)]
    functional = F if lib is cnncy else torch.nn.functional
    out = functional.conv2d(*tensors, padding=padding)
    if relu:
        out = functional.relu(out)
    out = functional.max_pool2d(out, pool)
    if lib is cnncy and x.shape[-3] * np.prod(weight.shape[2:]) <= MAX_FUSED_TAPS:
        assert out.grad_fn.name() == FUSED_NODE
    grad = np.random.default_rng(grad_seed).standard_normal(tuple(out.shape)).astype(x.dtype)
    out.backward(cnncy.tensor(grad) if lib is cnncy else torch.from_numpy(grad))
    return [out] + [t.grad if t is not None else None for t in tensors]


def assert_chain_matches_torch(x, weight, bias, padding, pool, relu=True):
    ours = run_chain(cnncy, x, weight, bias, padding, pool, relu=relu)
    theirs = run_chain(torch, x, weight, bias, padding, pool, relu=relu)
    for what, a, b in zip(("output", "grad input", "grad weight", "grad bias"), ours, theirs):
        if b is not None:
            assert_close(a, b, what=what)


def conv_parameters(rng, dtype, c_in, c_out, kernel):
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    weight = rng.standard_normal((c_out, c_in, kh, kw)).astype(dtype)
    return weight, rng.standard_normal(c_out).astype(dtype)


@pytest.mark.parametrize("n, c_in, h, w, c_out, kernel, padding, pool", CASES)
def test_fused_chain_matches_torch(rng, dtype, n, c_in, h, w, c_out, kernel, padding, pool):
    x = rng.standard_normal((n, c_in, h, w)).astype(dtype)
    assert_chain_matches_torch(x, *conv_parameters(rng, dtype, c_in, c_out, kernel), padding, pool)


def test_conv_then_pool_without_relu_and_without_bias(rng, dtype):
    x = rng.standard_normal((3, 2, 11, 12)).astype(dtype)
    weight, _ = conv_parameters(rng, dtype, 2, 9, 3)
    assert_chain_matches_torch(x, weight, None, 1, 2, relu=False)


def test_ties_go_to_the_first_maximum_like_torch(rng, dtype):
    # Small integers make many exactly equal conv outputs, and many windows that relu clamps to 0.
    x = rng.integers(-1, 2, (4, 1, 10, 10)).astype(dtype)
    weight = rng.integers(-1, 2, (8, 1, 3, 3)).astype(dtype)
    bias = rng.integers(-1, 2, 8).astype(dtype)
    assert_chain_matches_torch(x, weight, bias, 1, 2)


def test_nan_and_infinity_propagate_like_torch(rng, dtype):
    x = rng.standard_normal((2, 1, 12, 12)).astype(dtype)
    x[0, 0, 3, 4] = np.nan
    x[1, 0, 7, 7] = np.inf
    x[1, 0, 2, 9] = -np.inf
    assert_chain_matches_torch(x, *conv_parameters(rng, dtype, 1, 8, 3), 1, 2)


@pytest.mark.parametrize("size, kernel, padding", [(9, 1, 0), (11, 3, 1), (10, 2, 0)])
def test_non_finite_values_under_dropped_outputs_like_torch(rng, dtype, size, kernel, padding):
    # Odd sizes: the last conv row and column fall outside every 2x2 window.  torch's backward still
    # multiplies their zero gradient by the inputs they read: an inf there makes the weight gradient
    # of the taps that read it NaN.  And the kernel's vector lanes past the last pooled column read
    # real inputs too (columns that other lanes read through other taps): they must add nothing.
    x = rng.standard_normal((2, 2, size, size)).astype(dtype)
    x[0, 1, 3, size - 1] = np.inf
    x[1, 0, size - 1, 2] = np.nan
    assert_chain_matches_torch(x, *conv_parameters(rng, dtype, 2, 3, kernel), padding, 2)


def forward_without_graph(lib, x, weight, bias, padding, pool, relu=True):
    """max_pool2d(relu(conv2d(...))) under no_grad: cnncy's inference path (no argmax recorded)."""
    functional = F if lib is cnncy else torch.nn.functional
    convert = cnncy.tensor if lib is cnncy else to_torch
    with lib.no_grad():
        out = functional.conv2d(convert(x), convert(weight), None if bias is None else convert(bias),
                                padding=padding)
        return functional.max_pool2d(functional.relu(out) if relu else out, pool)


@pytest.mark.parametrize("n, c_in, h, w, c_out, kernel, padding, pool", CASES)
def test_inference_matches_torch(rng, dtype, n, c_in, h, w, c_out, kernel, padding, pool):
    x = rng.standard_normal((n, c_in, h, w)).astype(dtype)
    weight, bias = conv_parameters(rng, dtype, c_in, c_out, kernel)
    for relu in (True, False):
        assert_close(forward_without_graph(cnncy, x, weight, bias, padding, pool, relu),
                     forward_without_graph(torch, x, weight, bias, padding, pool, relu), what=f"relu={relu}")


def test_inference_ties_nan_and_infinity_like_torch(rng, dtype):
    x = rng.integers(-1, 2, (4, 2, 10, 10)).astype(dtype)
    x[0, 0, 3, 4] = np.nan
    x[1, 1, 7, 7] = np.inf
    x[2, 0, 2, 9] = -np.inf
    weight = rng.integers(-1, 2, (8, 2, 3, 3)).astype(dtype)
    bias = rng.integers(-1, 2, 8).astype(dtype)
    for relu in (True, False):
        assert_close(forward_without_graph(cnncy, x, weight, bias, 1, 2, relu),
                     forward_without_graph(torch, x, weight, bias, 1, 2, relu), what=f"relu={relu}")


def direct_conv_relu_pool(x, weight, bias, padding, pool, relu, fused_multiply_add):
    """An independent reference in numpy: conv2d as bias plus one product per tap, then relu and a
    max-pool in which NaN wins.  Each step rounds to x's dtype, so sums overflow as the kernels' do;
    with fused_multiply_add the products are not rounded on their own (as with an FMA instruction:
    long double holds a float32 product exactly), else they are (a build without FMA)."""
    n, c_in, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    wide = np.longdouble if fused_multiply_add else x.dtype
    padded = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding))).astype(wide)
    oh, ow = h + 2 * padding - kh + 1, w + 2 * padding - kw + 1
    out = np.broadcast_to(bias[None, :, None, None], (n, c_out, oh, ow)).copy()
    with np.errstate(over="ignore", invalid="ignore"):
        for c in range(c_in):
            for i in range(kh):
                for j in range(kw):
                    product = weight[None, :, c, i, j, None, None].astype(wide) * padded[:, None, c, i:i + oh, j:j + ow]
                    out = (out + product).astype(x.dtype)
        if relu:
            out = np.where(out > 0, out, np.where(np.isnan(out), out, 0)).astype(x.dtype)
    ph, pw = oh // pool, ow // pool
    windows = out[:, :, :ph * pool, :pw * pool].reshape(n, c_out, ph, pool, pw, pool)
    return windows.max(axis=(3, 5))  # numpy's max propagates NaN


@pytest.mark.parametrize("grad_mode", [True, False])
def test_finite_inputs_that_overflow_pool_like_a_direct_sum(rng, dtype, grad_mode):
    # Two taps whose products with the large inputs (the left half) are beyond the largest finite
    # value, one positive, one negative.  Rounded on their own (no FMA) they are +inf and -inf, and
    # an output that reads both is NaN; the top-left window holds finite values, then -inf, then NaN,
    # and must pool to NaN, which the fast 2x2 blocks (a max instruction) would lose: they must not
    # run here, though every input is finite.  With FMA the sum only overflows to +inf.  The kernels
    # use FMA where the build's target has it, so either direct sum is the right answer.  (torch's
    # conv gives +inf everywhere here: its algorithm transforms the weights first.)
    big = 1e30 if dtype == np.float32 else 1e200
    x = rng.uniform(0.5, 1.0, (2, 1, 8, 8)).astype(dtype)
    x[..., :4] *= big
    weight, bias = conv_parameters(rng, dtype, 1, 5, 3)
    weight[:, 0, 0, 0], weight[:, 0, 0, 1] = big, -big
    for relu in (True, False):
        if grad_mode:
            ours = run_chain(cnncy, x, weight, bias, 1, 2, relu=relu)[0]
        else:
            ours = forward_without_graph(cnncy, x, weight, bias, 1, 2, relu)
        rounded, fused = (direct_conv_relu_pool(x, weight, bias, 1, 2, relu, fma) for fma in (False, True))
        assert np.isnan(rounded[:, :, 0, 0]).all() and not np.isnan(fused).any()
        try:
            assert_close(ours, rounded, what=f"relu={relu}, products rounded")
        except AssertionError:
            assert_close(ours, fused, what=f"relu={relu}, fused multiply-add")


def test_unbatched_input(rng, dtype):
    x = rng.standard_normal((3, 9, 10)).astype(dtype)
    assert_chain_matches_torch(x, *conv_parameters(rng, dtype, 3, 4, 3), 1, 2)


def test_wide_kernels_fuse_only_without_a_graph(rng, dtype):
    x = rng.standard_normal((2, 16, 8, 8)).astype(dtype)
    weight, bias = conv_parameters(rng, dtype, 16, 4, 3)
    assert 16 * 3 * 3 > MAX_FUSED_TAPS
    tensors = [cnncy.tensor(a, requires_grad=True) for a in (x, weight, bias)]
    assert type(F.conv2d(*tensors)) is cnncy.Tensor
    with cnncy.no_grad():
        pooled = F.max_pool2d(F.relu(F.conv2d(*tensors, padding=1)), 2)
    expected = torch.nn.functional.max_pool2d(torch.relu(torch.nn.functional.conv2d(
        to_torch(x), to_torch(weight), to_torch(bias), padding=1)), 2)
    assert_close(pooled, expected)


# ----------------------------------------------------------------- deferred intermediates

def seed_layers(lib, dtype, inplace=False):
    torch.manual_seed(0)
    layers = [torch.nn.Conv2d(2, 8, 3, padding=1), torch.nn.ReLU(inplace=inplace), torch.nn.MaxPool2d(2)]
    for layer in layers:
        layer.to(torch.float64 if dtype == np.float64 else torch.float32)
    if lib is torch:
        return layers
    conv = nn.Conv2d(2, 8, 3, padding=1).to(dtype)
    conv.load_state_dict({k: v.detach().numpy() for k, v in layers[0].state_dict().items()})
    return [conv, nn.ReLU(inplace=inplace), nn.MaxPool2d(2)]


def both(fn, dtype, x, **kwargs):
    """fn(lib, layers, x_tensor) for cnncy and torch; then each one's input and parameter gradients."""
    results = []
    for lib in (cnncy, torch):
        layers = seed_layers(lib, dtype, **kwargs)
        tx = cnncy.tensor(x, requires_grad=True) if lib is cnncy else to_torch(x, requires_grad=True)
        values = fn(lib, layers, tx)
        grads = [tx.grad, layers[0].weight.grad, layers[0].bias.grad]
        results.append((values, grads))
    (ours, our_grads), (theirs, their_grads) = results
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert_close(a, b, what=f"value {i}")
    for what, a, b in zip(("grad input", "grad weight", "grad bias"), our_grads, their_grads):
        assert_close(a, b, what=what)


def test_conv_output_also_used_elsewhere(rng, dtype):
    def fn(lib, layers, x):
        conv, relu, pool = layers
        h = conv(x)
        y = pool(relu(h))
        (y.sum() + (h * h).sum()).backward()
        return [y, h]
    both(fn, dtype, rng.standard_normal((3, 2, 9, 8)).astype(dtype))


def test_relu_output_also_used_elsewhere(rng, dtype):
    def fn(lib, layers, x):
        conv, relu, pool = layers
        r = relu(conv(x))
        y = pool(r)
        (y.sum() * 2 + r.mean()).backward()
        return [r, y]
    both(fn, dtype, rng.standard_normal((3, 2, 9, 8)).astype(dtype))


def test_inplace_relu_fuses_and_matches(rng, dtype):
    def fn(lib, layers, x):
        conv, relu, pool = layers
        y = pool(relu(conv(x)))
        if lib is cnncy:
            assert y.grad_fn.name() == FUSED_NODE
        y.sum().backward()
        return [y]
    both(fn, dtype, rng.standard_normal((2, 2, 8, 8)).astype(dtype), inplace=True)


def test_retained_intermediate_gets_its_gradient(rng, dtype):
    def fn(lib, layers, x):
        conv, relu, pool = layers
        h = conv(x)
        h.retain_grad()
        y = pool(relu(h))
        y.sum().backward()
        return [y, h.grad]
    both(fn, dtype, rng.standard_normal((2, 2, 8, 8)).astype(dtype))


def test_conv_output_read_after_its_inputs_change(rng):
    x = rng.standard_normal((2, 1, 6, 6)).astype(np.float32)
    weight, bias = conv_parameters(rng, np.float32, 1, 4, 3)
    expected = torch.nn.functional.conv2d(to_torch(x), to_torch(weight), to_torch(bias))
    tx, tw = cnncy.tensor(x), cnncy.tensor(weight, requires_grad=True)
    h = F.conv2d(tx, tw, cnncy.tensor(bias))
    tx.add_(1.0)  # an in-place write computes pending deferred values first
    (tw * 2).sum().backward()  # and so does backward, before an optimizer changes the parameters
    cnncy.optim.SGD([tw], lr=0.5).step()
    assert_close(h, expected)


def test_grad_mode_of_the_conv_call_wins(rng):
    x = cnncy.tensor(rng.standard_normal((1, 1, 8, 8)).astype(np.float32))
    conv = nn.Conv2d(1, 4, 3)
    with cnncy.no_grad():
        h = conv(x)
    y = F.max_pool2d(F.relu(h), 2)
    assert not y.requires_grad and y.grad_fn is None
    with cnncy.no_grad():
        y = F.max_pool2d(F.relu(conv(x)), 2)
    assert not y.requires_grad


# ----------------------------------------------------------------- threads and inference

def fused_run(x, weight, bias, threads_fixture, n_threads, input_grad=True):
    threads_fixture(n_threads)
    tensors = [cnncy.tensor(x, requires_grad=input_grad)] + [cnncy.tensor(a, requires_grad=True) for a in (weight, bias)]
    out = F.max_pool2d(F.relu(F.conv2d(*tensors, padding=1)), 2)
    out.backward(cnncy.tensor(np.linspace(-1, 1, out.numel(), dtype=x.dtype).reshape(out.shape)))
    return [out.detach().numpy()] + [t.grad.numpy() for t in tensors if t.requires_grad]


# Batches smaller than the team split by channel blocks (forward) and channel groups (backward
# without an input gradient); larger ones by images and batch chunks.
@pytest.mark.parametrize("n", [1, 3, 37, 64])
@pytest.mark.parametrize("input_grad", [True, False])
def test_one_two_and_three_threads_are_bitwise_identical(rng, dtype, threads, n, input_grad):
    x = rng.standard_normal((n, 3, 20, 20)).astype(dtype)
    weight, bias = conv_parameters(rng, dtype, 3, 16, 3)
    one = fused_run(x, weight, bias, threads, 1, input_grad)
    for n_threads in (2, 3):
        for a, b in zip(one, fused_run(x, weight, bias, threads, n_threads, input_grad)):
            np.testing.assert_array_equal(a, b)


def test_no_grad_inference_equals_the_training_forward(rng, dtype):
    model = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)).to(dtype)
    x = cnncy.tensor(rng.standard_normal((9, 1, 28, 28)).astype(dtype))
    training = model(x)
    assert training.grad_fn.name() == FUSED_NODE
    with cnncy.no_grad():
        inference = model(x)
    np.testing.assert_array_equal(inference.numpy(), training.detach().numpy())


def test_training_steps_are_bitwise_identical_with_1_2_and_16_threads(rng, threads):
    """SimpleCNN-shaped steps (fused conv/relu/pool, linear head, SGD momentum): same parameters for any thread count."""
    images = rng.standard_normal((2, 37, 1, 28, 28)).astype(np.float32)
    labels = rng.integers(0, 10, (2, 37))

    def train(num_threads):
        threads(num_threads)
        cnncy.manual_seed(0)
        conv, fc = nn.Conv2d(1, 32, 3, padding=1), nn.Linear(32 * 14 * 14, 10)
        params = list(conv.parameters()) + list(fc.parameters())
        optimizer = cnncy.optim.SGD(params, lr=0.01, momentum=0.9)
        for x, y in zip(images, labels):
            hidden = F.max_pool2d(F.relu(conv(cnncy.tensor(x))), 2)
            assert hidden.grad_fn.name() == FUSED_NODE
            loss = F.cross_entropy(fc(hidden.view(-1, 32 * 14 * 14)), cnncy.tensor(y))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return [p.detach().numpy().copy() for p in params]

    one = train(1)
    for n in (2, 16):
        for a, b in zip(one, train(n)):
            np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------- relu + max_pool2d of a GEMM conv

RELU_POOL_NODE = "ReluMaxPool2dFunctionBackward"


def relu_pool_chain(lib, x, weight, bias, pool_args, grad_seed=0, also=None):
    """max_pool2d(relu(conv2d(x))) forward and backward; `also(relu_out)` adds to the loss."""
    make = ((lambda a: cnncy.tensor(a, requires_grad=True)) if lib is cnncy
            else (lambda a: to_torch(a, requires_grad=True)))
    tensors = [make(a) for a in (x, weight, bias)]
    functional = F if lib is cnncy else torch.nn.functional
    relu_out = functional.relu(functional.conv2d(*tensors, padding=1))
    out = functional.max_pool2d(relu_out, **pool_args)
    if lib is cnncy and not pool_args.get("return_indices"):
        assert out.grad_fn.name() == RELU_POOL_NODE
    values = out if not pool_args.get("return_indices") else out[0]
    grad = np.random.default_rng(grad_seed).standard_normal(tuple(values.shape)).astype(x.dtype)
    loss = (values * (cnncy.tensor(grad) if lib is cnncy else torch.from_numpy(grad))).sum()
    if also is not None:
        loss = loss + also(relu_out)
    loss.backward()
    return [values] + [t.grad for t in tensors]


def assert_relu_pool_matches_torch(x, weight, bias, pool_args, also=None):
    ours = relu_pool_chain(cnncy, x, weight, bias, pool_args, also=also)
    theirs = relu_pool_chain(torch, x, weight, bias, pool_args, also=also)
    for what, a, b in zip(("output", "grad input", "grad weight", "grad bias"), ours, theirs):
        assert_close(a, b, what=what)


# LeNet's second conv (6 -> 16, 5x5: 150 taps) computes at once; its relu and pool fuse.
POOLS = [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1), dict(kernel_size=3, stride=2, ceil_mode=True),
         dict(kernel_size=2, stride=1, dilation=2), dict(kernel_size=(2, 3), stride=(1, 2))]


@pytest.mark.parametrize("pool_args", POOLS)
def test_relu_then_pool_of_a_computed_conv_fuses_and_matches_torch(rng, dtype, pool_args):
    x = rng.standard_normal((5, 6, 13, 12)).astype(dtype)
    weight, bias = conv_parameters(rng, dtype, 6, 16, 5)
    assert 6 * 5 * 5 > MAX_FUSED_TAPS
    assert_relu_pool_matches_torch(x, weight, bias, pool_args)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the loss's inf - inf
def test_relu_then_pool_ties_nan_and_infinity_like_torch(rng, dtype):
    # Small integers: many equal conv outputs and windows whose maximum is <= 0; and non-finite values.
    x = rng.integers(-1, 2, (3, 6, 10, 10)).astype(dtype)
    weight = rng.integers(-1, 2, (8, 6, 5, 5)).astype(dtype)
    bias = rng.integers(-2, 2, 8).astype(dtype)
    x[0, 1, 3, 4] = np.nan
    x[1, 2, 7, 7] = np.inf
    x[2, 0, 2, 8] = -np.inf
    assert_relu_pool_matches_torch(x, weight, bias, dict(kernel_size=2))


def test_relu_output_of_a_computed_conv_also_used_elsewhere(rng, dtype):
    x = rng.standard_normal((2, 6, 9, 9)).astype(dtype)
    weight, bias = conv_parameters(rng, dtype, 6, 4, 5)
    assert_relu_pool_matches_torch(x, weight, bias, dict(kernel_size=2), also=lambda r: (r * r).sum())


def test_relu_then_pool_with_indices_does_not_fuse(rng, dtype):
    x = rng.standard_normal((2, 6, 9, 9)).astype(dtype)
    weight, bias = conv_parameters(rng, dtype, 6, 4, 5)
    tensors = [cnncy.tensor(a, requires_grad=True) for a in (x, weight, bias)]
    out, indices = F.max_pool2d(F.relu(F.conv2d(*tensors, padding=1)), 2, return_indices=True)
    assert out.grad_fn.name() == "MaxPool2dFunctionBackward"
    assert_relu_pool_matches_torch(x, weight, bias, dict(kernel_size=2, return_indices=True))


def test_relu_then_pool_of_a_computed_conv_unbatched(rng, dtype):
    x = rng.standard_normal((6, 9, 10)).astype(dtype)
    weight, bias = conv_parameters(rng, dtype, 6, 4, 5)
    assert_relu_pool_matches_torch(x, weight, bias, dict(kernel_size=2))
