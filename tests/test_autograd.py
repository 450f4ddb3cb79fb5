"""Autograd against torch: gradients of composed elementwise, reduction and shape ops."""
import numpy as np
import pytest
import torch

import cnncy
from torch_compare import assert_close, to_torch


def run_both(fn, *arrays):
    """Apply fn to cnncy and torch leaves built from the same arrays; backprop sum; return both sides."""
    ours = [cnncy.tensor(a, requires_grad=True) for a in arrays]
    theirs = [to_torch(a, requires_grad=True) for a in arrays]
    out_ours, out_theirs = fn(*ours), fn(*theirs)
    out_ours.sum().backward()
    out_theirs.sum().backward()
    return ours, theirs, out_ours, out_theirs


COMPOSITIONS = {
    "add_broadcast": (lambda a, b: a + b, [(3, 4), (4,)]),
    "sub_broadcast": (lambda a, b: a - b, [(2, 3, 4), (3, 1)]),
    "mul_broadcast": (lambda a, b: a * b * 2.5, [(3, 4), (1, 4)]),
    "div": (lambda a, b: a / (b * b + 1.0), [(5,), (5,)]),
    "rsub_rdiv": (lambda a, b: 1.0 - a + 2.0 / (b * b + 1.0), [(3, 2), (3, 2)]),
    "pow_neg": (lambda a, b: -(a ** 2) + b ** 3, [(4,), (4,)]),
    "mean_dim": (lambda a, b: (a * b).mean(dim=1), [(3, 5), (3, 5)]),
    "sum_keepdim": (lambda a, b: a.sum(dim=0, keepdim=True) * b, [(3, 4), (3, 4)]),
    "view_flatten": (lambda a, b: a.view(-1, 6).flatten() * b.reshape(12), [(2, 2, 3), (3, 4)]),
    "matmul": (lambda a, b: a @ b, [(3, 4), (4, 5)]),
    "exp_log": (lambda a, b: (a.exp() + b.exp()).log(), [(4,), (4,)]),
    "index": (lambda a, b: a[1:, ::2] * b[0], [(3, 4), (3, 2)]),
    "reused_input": (lambda a, b: a * a + a * b, [(3,), (3,)]),
    "transpose": (lambda a, b: a.t() @ b, [(4, 3), (4, 2)]),
}


@pytest.mark.parametrize("name", sorted(COMPOSITIONS))
def test_gradients_match_torch(name, dtype, rng):
    fn, shapes = COMPOSITIONS[name]
    arrays = [rng.standard_normal(s).astype(dtype) for s in shapes]
    ours, theirs, out_ours, out_theirs = run_both(fn, *arrays)
    assert_close(out_ours, out_theirs, what="forward")
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert_close(a.grad, b.grad, what=f"grad of input {i}")


def test_gradients_accumulate_until_cleared(rng):
    a = cnncy.tensor(rng.standard_normal(4).astype(np.float32), requires_grad=True)
    (a * 3.0).sum().backward()
    (a * 3.0).sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), np.full(4, 6.0, np.float32))


def test_second_backward_through_freed_graph_raises(rng):
    a = cnncy.tensor(rng.standard_normal(4).astype(np.float32), requires_grad=True)
    loss = (a * a).sum()
    loss.backward()
    with pytest.raises(RuntimeError, match="second time"):
        loss.backward()


def test_retain_graph_allows_second_backward(rng):
    a = cnncy.tensor(rng.standard_normal(4).astype(np.float32), requires_grad=True)
    loss = (a * a).sum()
    loss.backward(retain_graph=True)
    loss.backward()
    assert_close(a.grad, 4 * a.detach().numpy())


def test_backward_on_non_scalar_needs_gradient():
    a = cnncy.ones(2, 3, requires_grad=True)
    with pytest.raises(RuntimeError, match="scalar"):
        (a * 2.0).backward()
    (a * 2.0).backward(cnncy.ones(2, 3))
    assert_close(a.grad, np.full((2, 3), 2.0, np.float32))


def test_backward_without_grad_raises():
    with pytest.raises(RuntimeError, match="does not require grad"):
        cnncy.ones(3).sum().backward()


def test_no_grad_records_nothing():
    a = cnncy.ones(3, requires_grad=True)
    with cnncy.no_grad():
        b = a * 2.0
    assert not b.requires_grad and b.grad_fn is None
    assert cnncy.is_grad_enabled()


def test_no_grad_as_decorator():
    @cnncy.no_grad()
    def double(t):
        return t * 2.0

    assert not double(cnncy.ones(2, requires_grad=True)).requires_grad


def test_detach_cuts_the_graph():
    a = cnncy.ones(3, requires_grad=True)
    b = (a * 2.0).detach()
    assert not b.requires_grad and b.grad_fn is None


def test_non_leaf_grad_is_not_retained_unless_asked():
    a = cnncy.ones(3, requires_grad=True)
    b = a * 2.0
    c = a * 3.0
    c.retain_grad()
    (b * c).sum().backward()
    assert b.grad is None
    assert_close(c.grad, np.full(3, 2.0, np.float32))


class _TwoInputs(cnncy.autograd.Function):
    """a + b whose backward hands out one array twice (shared) or an array it keeps (kept)."""

    @staticmethod
    def forward(ctx, a, b, mode):
        ctx.mode = mode
        return a + b

    @staticmethod
    def backward(ctx, grad):
        fresh = np.array(grad) * 2
        if ctx.mode == "shared":
            return fresh, fresh, None
        if ctx.mode == "kept":
            ctx.kept = fresh
        return fresh, (grad * 3).reshape(grad.shape), None


@pytest.mark.parametrize("mode", ["shared", "kept", "fresh"])
def test_leaf_gradients_never_alias_an_array_someone_else_holds(mode):
    a = cnncy.ones(3, requires_grad=True)
    b = cnncy.ones(3, requires_grad=True)
    out = _TwoInputs.apply(a, b, mode)
    node = out.grad_fn
    out.backward(cnncy.ones(3))
    assert not np.shares_memory(a.grad.numpy(), b.grad.numpy())
    if mode == "kept":
        assert not np.shares_memory(a.grad.numpy(), node.kept)
    a.grad.add_(1.0)
    assert_close(b.grad, np.full(3, 2.0 if mode == "shared" else 3.0, np.float32))


def test_kernel_gradients_become_grads_without_copies_and_alias_nothing():
    """The kernel-backed Functions hand their fresh gradient arrays to the leaves (fresh_input_grads):
    each .grad must still be an array of its own, apart from every other gradient and parameter."""
    nn, F = cnncy.nn, cnncy.nn.functional
    conv, fc = nn.Conv2d(1, 4, 3, padding=1), nn.Linear(4 * 4 * 4, 3)
    x = cnncy.randn(2, 1, 8, 8, requires_grad=True)
    logits = fc(F.max_pool2d(F.relu(conv(x)), 2).flatten(1))
    F.cross_entropy(logits, cnncy.tensor([0, 2])).backward()
    leaves = [x, conv.weight, conv.bias, fc.weight, fc.bias]
    arrays = [t.grad.numpy() for t in leaves] + [t.detach().numpy() for t in leaves]
    for i, a in enumerate(arrays):
        for b in arrays[i + 1:]:
            assert not np.shares_memory(a, b)
    for t in leaves:
        assert t.grad.numpy().flags.writeable and t.grad.shape == t.shape
