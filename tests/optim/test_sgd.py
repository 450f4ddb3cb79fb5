"""cnncy.optim.SGD against torch.optim.SGD, step by step."""
import numpy as np
import pytest
import torch

import cnncy
from cnncy import optim
from torch_compare import assert_close

CONFIGS = {
    "plain": dict(lr=0.1),
    "momentum": dict(lr=0.1, momentum=0.9),
    "dampening": dict(lr=0.05, momentum=0.9, dampening=0.5),
    "nesterov": dict(lr=0.05, momentum=0.9, nesterov=True),
    "weight_decay": dict(lr=0.1, weight_decay=0.01),
    "maximize": dict(lr=0.05, momentum=0.8, weight_decay=0.1, maximize=True),
    "everything": dict(lr=0.05, momentum=0.7, nesterov=True, weight_decay=0.05, maximize=True),
}


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
def test_sgd_matches_torch_after_every_step(config, twin):
    twin.run(optim.SGD(twin.ours, **config), torch.optim.SGD(twin.theirs, **config))


@pytest.mark.parametrize("config", [CONFIGS["plain"], CONFIGS["everything"]], ids=["plain", "everything"])
def test_sgd_is_bitwise_torch(config, rng, make_twin):
    """SGD reproduces torch's rounding exactly (fused multiply-adds where ATen has them)."""
    twin = make_twin(rng, np.float32)
    ours, theirs = optim.SGD(twin.ours, **config), torch.optim.SGD(twin.theirs, **config)
    for step in range(5):
        twin.feed()
        ours.step()
        theirs.step()
        for p, q in zip(twin.ours, twin.theirs):
            np.testing.assert_array_equal(p.detach().numpy(), q.detach().numpy())


def test_momentum_state_like_torch(twin):
    ours = optim.SGD(twin.ours, lr=0.1, momentum=0.9)
    theirs = torch.optim.SGD(twin.theirs, lr=0.1, momentum=0.9)
    twin.run(ours, theirs, steps=3)
    ours_state, theirs_state = ours.state_dict()["state"], theirs.state_dict()["state"]
    assert ours_state.keys() == theirs_state.keys()  # parameter 2 never had a gradient: no state
    for index, state in theirs_state.items():
        assert ours_state[index].keys() == state.keys()
        assert_close(ours_state[index]["momentum_buffer"], state["momentum_buffer"])


def test_no_momentum_keeps_no_state(twin):
    ours = optim.SGD(twin.ours, lr=0.1)
    twin.run(ours, torch.optim.SGD(twin.theirs, lr=0.1), steps=2)
    assert ours.state_dict()["state"] == {}


def test_tensor_learning_rate(twin):
    ours = optim.SGD(twin.ours, lr=cnncy.tensor(0.1), momentum=0.9)
    theirs = torch.optim.SGD(twin.theirs, lr=torch.tensor(0.1), momentum=0.9)
    twin.run(ours, theirs, steps=3)


def test_empty_parameter_is_fine(rng):
    ours = cnncy.Tensor(np.zeros((0, 3), np.float32), requires_grad=True)
    ours.grad = cnncy.Tensor(np.zeros((0, 3), np.float32))
    optimizer = optim.SGD([ours], lr=0.1, momentum=0.9)
    optimizer.step()
    optimizer.step()
    assert ours.shape == (0, 3)


def test_nan_gradient_propagates_like_torch(twin):
    ours = optim.SGD(twin.ours, lr=0.1, momentum=0.9)
    theirs = torch.optim.SGD(twin.theirs, lr=0.1, momentum=0.9)
    twin.feed()
    twin.ours[0].grad._array[0, 0, 1, 1] = np.nan
    twin.theirs[0].grad[0, 0, 1, 1] = float("nan")
    ours.step()
    theirs.step()
    twin.assert_close()
    assert np.isnan(twin.ours[0].detach().numpy()[0, 0, 1, 1])


def test_strided_gradient(rng, dtype):
    array = rng.standard_normal((6, 5)).astype(dtype)
    grad = np.asfortranarray(rng.standard_normal((6, 5)).astype(dtype))
    ours = cnncy.Tensor(array.copy(), requires_grad=True)
    theirs = torch.tensor(array.copy(), requires_grad=True)
    ours.grad, theirs.grad = cnncy.Tensor(grad), torch.from_numpy(np.ascontiguousarray(grad))
    optim.SGD([ours], lr=0.1, momentum=0.9).step()
    torch.optim.SGD([theirs], lr=0.1, momentum=0.9).step()
    assert_close(ours, theirs)


def test_non_contiguous_parameter_is_refused():
    param = cnncy.Tensor(np.asfortranarray(np.ones((3, 4), np.float32)), requires_grad=True)
    param.grad = cnncy.Tensor(np.ones((3, 4), np.float32))
    with pytest.raises(RuntimeError, match="contiguous"):
        optim.SGD([param], lr=0.1).step()


def test_result_does_not_depend_on_thread_count(threads, make_twin):
    """The large parameter crosses the kernels' threshold for going multi-threaded."""
    results = []
    for count in (1, 2):
        threads(count)
        twin = make_twin(np.random.default_rng(7), np.float32)
        optimizer = optim.SGD(twin.ours, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)
        for _ in range(3):
            twin.feed()
            optimizer.step()
        results.append([p.detach().numpy().copy() for p in twin.ours])
    for one, two in zip(*results):
        np.testing.assert_array_equal(one, two)


# ----------------------------------------------------------------------------- validation

@pytest.mark.parametrize("kwargs", [
    dict(lr=-0.1), dict(lr=0.1, momentum=-0.5), dict(lr=0.1, weight_decay=-1.0),
    dict(lr=0.1, nesterov=True), dict(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True),
], ids=["lr", "momentum", "weight_decay", "nesterov_without_momentum", "nesterov_with_dampening"])
def test_invalid_options_raise_like_torch(kwargs, raises_like_torch):
    ours, theirs = cnncy.zeros(3, requires_grad=True), torch.zeros(3, requires_grad=True)
    raises_like_torch(lambda: optim.SGD([ours], **kwargs), lambda: torch.optim.SGD([theirs], **kwargs))
