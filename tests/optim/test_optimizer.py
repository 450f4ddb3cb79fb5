"""The Optimizer base class against torch.optim.Optimizer: groups, zero_grad, state_dict, validation."""
import copy
import warnings

import numpy as np
import pytest
import torch

import cnncy
from cnncy import optim
from torch_compare import assert_close

OPTIMIZERS = {
    "SGD": (optim.SGD, torch.optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True)),
    "Adam": (optim.Adam, torch.optim.Adam, dict(lr=0.01, amsgrad=True, weight_decay=0.01)),
    "AdamW": (optim.AdamW, torch.optim.AdamW, dict(lr=0.01)),
}


def grouped(params, lrs=(0.1, 0.02)):
    """Two parameter groups with their own learning rates (the rest of the options default)."""
    half = len(params) // 2
    return [{"params": params[:half], "lr": lrs[0]}, {"params": params[half:], "lr": lrs[1]}]


# ----------------------------------------------------------------------------- param groups

@pytest.mark.parametrize("name", OPTIMIZERS)
def test_param_groups_with_different_lr_match_torch(name, twin):
    ours_class, theirs_class, config = OPTIMIZERS[name]
    config = {k: v for k, v in config.items() if k != "lr"}
    ours = ours_class(grouped(twin.ours), **config)
    theirs = theirs_class(grouped(twin.theirs), **config)
    assert [g["lr"] for g in ours.param_groups] == [0.1, 0.02]
    twin.run(ours, theirs, steps=5)


def test_add_param_group_matches_torch(twin):
    ours = optim.SGD(twin.ours[:3], lr=0.1, momentum=0.9)
    theirs = torch.optim.SGD(twin.theirs[:3], lr=0.1, momentum=0.9)
    ours.add_param_group({"params": twin.ours[3:], "lr": 0.01, "nesterov": True})
    theirs.add_param_group({"params": twin.theirs[3:], "lr": 0.01, "nesterov": True})
    assert ours.param_groups[1].keys() == theirs.param_groups[1].keys()
    twin.run(ours, theirs, steps=5)


def test_named_parameters_are_accepted(twin):
    named = [(f"p{i}", p) for i, p in enumerate(twin.ours)]
    optimizer = optim.SGD(named, lr=0.1)
    assert optimizer.param_groups[0]["params"] == twin.ours
    assert optimizer.param_groups[0]["param_names"] == [name for name, _ in named]


def test_repr_matches_torch(twin):
    ours = optim.Adam(grouped(twin.ours), lr=0.01)
    theirs = torch.optim.Adam(grouped(twin.theirs), lr=0.01)
    assert repr(ours) == repr(theirs)


# ----------------------------------------------------------------------------- zero_grad, step

def test_zero_grad_sets_gradients_to_none_by_default(twin):
    optimizer = optim.SGD(twin.ours, lr=0.1)
    twin.feed()
    optimizer.zero_grad()
    assert all(p.grad is None for p in twin.ours)


def test_zero_grad_without_set_to_none_zeroes_in_place(twin):
    optimizer = optim.SGD(twin.ours, lr=0.1)
    twin.feed(without_grad=(2,))
    grads = [p.grad for p in twin.ours]
    optimizer.zero_grad(set_to_none=False)
    assert twin.ours[2].grad is None
    for p, grad in zip(twin.ours, grads):
        if grad is not None:
            assert p.grad is grad
            assert not grad.requires_grad
            np.testing.assert_array_equal(grad.numpy(), np.zeros(p.shape, p.dtype))


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_step_returns_the_closure_loss_computed_with_grad_enabled(name, twin):
    ours_class, _, config = OPTIMIZERS[name]
    optimizer = ours_class(twin.ours, **config)
    seen = []

    def closure():
        seen.append(cnncy.is_grad_enabled())
        twin.feed()
        return 1.5

    with cnncy.no_grad():
        assert optimizer.step(closure) == 1.5
    assert seen == [True]
    assert optimizer.step() is None


# ----------------------------------------------------------------------------- state_dict

@pytest.mark.parametrize("name", OPTIMIZERS)
def test_state_dict_has_torch_layout(name, twin):
    ours_class, theirs_class, config = OPTIMIZERS[name]
    ours, theirs = ours_class(grouped(twin.ours), **config), theirs_class(grouped(twin.theirs), **config)
    twin.run(ours, theirs, steps=3)
    ours_dict, theirs_dict = ours.state_dict(), theirs.state_dict()
    assert ours_dict.keys() == theirs_dict.keys() == {"state", "param_groups"}
    assert ours_dict["param_groups"] == theirs_dict["param_groups"]
    assert ours_dict["state"].keys() == theirs_dict["state"].keys()
    for index, theirs_state in theirs_dict["state"].items():
        ours_state = ours_dict["state"][index]
        assert ours_state.keys() == theirs_state.keys()
        for key, value in theirs_state.items():
            assert_close(ours_state[key], value, what=f"state[{index}][{key!r}]")


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_state_dict_round_trip_continues_like_an_uninterrupted_run(name, rng, dtype, make_twin):
    ours_class, _, config = OPTIMIZERS[name]
    seed = int(rng.integers(1 << 30))
    uninterrupted, resumed = make_twin(np.random.default_rng(seed), dtype), make_twin(np.random.default_rng(seed), dtype)
    reference = ours_class(grouped(uninterrupted.ours), **config)
    first = ours_class(grouped(resumed.ours), **config)
    for step in range(10):
        for twin, optimizer in ((uninterrupted, reference), (resumed, first)):
            twin.feed(twin.some_grads_missing(step))
            optimizer.step()
    saved = copy.deepcopy(first.state_dict())
    del first
    second = ours_class(grouped(resumed.ours, lrs=(5.0, 5.0)), **config)  # lr comes from the checkpoint
    second.load_state_dict(saved)
    for step in range(10, 20):
        for twin, optimizer in ((uninterrupted, reference), (resumed, second)):
            twin.feed(twin.some_grads_missing(step))
            optimizer.step()
    for p, q in zip(uninterrupted.ours, resumed.ours):
        np.testing.assert_array_equal(p.detach().numpy(), q.detach().numpy())


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_loads_a_torch_state_dict_and_continues_like_torch(name, twin):
    ours_class, theirs_class, config = OPTIMIZERS[name]
    theirs = theirs_class(twin.theirs, **config)
    for step in range(5):
        twin.feed(twin.some_grads_missing(step))
        theirs.step()
    for ours_param, theirs_param in zip(twin.ours, twin.theirs):
        ours_param._array[...] = theirs_param.detach().numpy()
    ours = ours_class(twin.ours, **config)
    ours.load_state_dict(theirs.state_dict())
    state = ours.state[twin.ours[0]]
    assert all(isinstance(value, cnncy.Tensor) for value in state.values())
    twin.run(ours, theirs, steps=5)


def test_loaded_state_is_copied_and_cast_to_the_parameter_dtype():
    param = cnncy.zeros(3, dtype=cnncy.float64, requires_grad=True)
    buffer = np.ones(3, np.float32)
    optimizer = optim.SGD([param], lr=0.1, momentum=0.9)
    optimizer.load_state_dict({"state": {0: {"momentum_buffer": buffer}},
                               "param_groups": [{**optimizer.param_groups[0], "params": [0]}]})
    loaded = optimizer.state[param]["momentum_buffer"]
    assert loaded.dtype == cnncy.float64
    assert not np.shares_memory(loaded.numpy(), buffer)


def test_load_state_dict_rejects_other_group_counts_and_sizes(twin, raises_like_torch):
    ours, theirs = optim.SGD(grouped(twin.ours), lr=0.1), torch.optim.SGD(grouped(twin.theirs), lr=0.1)
    ours_single, theirs_single = optim.SGD(twin.ours, lr=0.1), torch.optim.SGD(twin.theirs, lr=0.1)
    raises_like_torch(lambda: ours.load_state_dict(ours_single.state_dict()),
                      lambda: theirs.load_state_dict(theirs_single.state_dict()))
    ours_other = optim.SGD(grouped(twin.ours[:5]), lr=0.1)
    theirs_other = torch.optim.SGD(grouped(twin.theirs[:5]), lr=0.1)
    raises_like_torch(lambda: ours.load_state_dict(ours_other.state_dict()),
                      lambda: theirs.load_state_dict(theirs_other.state_dict()))


# ----------------------------------------------------------------------------- validation

def test_empty_parameter_list(raises_like_torch):
    raises_like_torch(lambda: optim.SGD([], lr=0.1), lambda: torch.optim.SGD([], lr=0.1))


def test_a_tensor_instead_of_an_iterable():
    with pytest.raises(TypeError, match="should be an iterable of Tensors or dicts, but got cnncy.Tensor"):
        optim.SGD(cnncy.zeros(3, requires_grad=True), lr=0.1)


@pytest.mark.parametrize("bad", [3, "weight", np.zeros(3)], ids=["int", "str", "ndarray"])
def test_non_tensor_parameters(bad, raises_like_torch):
    raises_like_torch(lambda: optim.SGD([cnncy.zeros(3, requires_grad=True), bad], lr=0.1),
                      lambda: torch.optim.SGD([torch.zeros(3, requires_grad=True), bad], lr=0.1))


def test_non_leaf_parameter(raises_like_torch):
    ours, theirs = cnncy.zeros(3, requires_grad=True), torch.zeros(3, requires_grad=True)
    raises_like_torch(lambda: optim.SGD([ours * 2], lr=0.1), lambda: torch.optim.SGD([theirs * 2], lr=0.1))


def test_parameters_in_a_set(raises_like_torch):
    ours, theirs = cnncy.zeros(3, requires_grad=True), torch.zeros(3, requires_grad=True)
    raises_like_torch(lambda: optim.SGD([{"params": {ours}}], lr=0.1),
                      lambda: torch.optim.SGD([{"params": {theirs}}], lr=0.1))


def test_param_group_must_be_a_dict(raises_like_torch):
    ours, theirs = cnncy.zeros(3, requires_grad=True), torch.zeros(3, requires_grad=True)
    raises_like_torch(lambda: optim.SGD([ours], lr=0.1).add_param_group([ours]),
                      lambda: torch.optim.SGD([theirs], lr=0.1).add_param_group([theirs]))


def test_parameter_in_two_groups(raises_like_torch):
    ours, theirs = cnncy.zeros(3, requires_grad=True), torch.zeros(3, requires_grad=True)
    raises_like_torch(lambda: optim.SGD([{"params": [ours]}, {"params": [ours]}], lr=0.1),
                      lambda: torch.optim.SGD([{"params": [theirs]}, {"params": [theirs]}], lr=0.1))


def test_parameter_twice_in_one_group_warns_like_torch():
    """torch only warns here (it raises when the same parameter is in two groups)."""
    param = cnncy.zeros(3, requires_grad=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        optim.SGD([param, param], lr=0.1)
    assert any("duplicate parameters" in str(w.message) for w in caught)


def test_differentiable_is_not_supported():
    with pytest.raises(NotImplementedError):
        optim.SGD([cnncy.zeros(3, requires_grad=True)], lr=0.1, differentiable=True)
