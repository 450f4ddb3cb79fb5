"""nn.Module bookkeeping against torch: registration order, state_dict, repr, modes, dtype."""
import numpy as np
import pytest
import torch

import cnncy
from torch_compare import assert_close


def net(lib):
    nn = lib.nn
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, 10))


def test_parameter_names_order_and_shapes_match_torch():
    ours, theirs = net(cnncy), net(torch)
    assert [(n, tuple(p.shape)) for n, p in ours.named_parameters()] == \
           [(n, tuple(p.shape)) for n, p in theirs.named_parameters()]
    assert list(ours.state_dict()) == list(theirs.state_dict())


def test_repr_matches_torch():
    assert repr(net(cnncy)) == repr(net(torch))


def test_state_dict_round_trip_between_models():
    source, target = net(cnncy), net(cnncy)
    target.load_state_dict(source.state_dict())
    for (name, a), (_, b) in zip(source.named_parameters(), target.named_parameters()):
        np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy(), err_msg=name)


def test_load_state_dict_from_torch_gives_torch_outputs(rng):
    ours, theirs = net(cnncy), net(torch)
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    x = rng.standard_normal((2, 1, 8, 8)).astype(np.float32)
    assert_close(ours(cnncy.tensor(x)), theirs(torch.from_numpy(x)))


def test_load_state_dict_reports_missing_and_unexpected_keys():
    model = net(cnncy)
    state = dict(model.state_dict())
    del state["0.bias"]
    state["extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(RuntimeError, match=r'Missing key\(s\).*"0.bias"') as info:
        model.load_state_dict(state)
    assert '"extra.weight"' in str(info.value)
    result = model.load_state_dict(state, strict=False)
    assert result.missing_keys == ["0.bias"] and result.unexpected_keys == ["extra.weight"]


def test_load_state_dict_size_mismatch_changes_nothing():
    model = net(cnncy)
    before = model.state_dict()["0.weight"].numpy().copy()
    state = {k: v.numpy() + 1 for k, v in model.state_dict().items()}
    state["4.weight"] = np.zeros((10, 7), np.float32)
    with pytest.raises(RuntimeError, match=r"size mismatch for 4.weight.*\[10, 7\].*\[10, 64\]"):
        model.load_state_dict(state)
    np.testing.assert_array_equal(model.state_dict()["0.weight"].numpy(), before)


def test_train_eval_propagate_to_children():
    model = net(cnncy)
    model.eval()
    assert all(not m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())


def test_to_double_converts_every_parameter():
    model = net(cnncy).double()
    assert all(p.dtype == cnncy.float64 for p in model.parameters())
    out = model(cnncy.randn(1, 1, 8, 8, dtype=cnncy.float64))
    assert out.dtype == cnncy.float64


def test_zero_grad_clears_accumulated_gradients():
    model = net(cnncy)
    model(cnncy.randn(2, 1, 8, 8)).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.zero_grad(set_to_none=False)
    assert all(not p.grad.numpy().any() for p in model.parameters())
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_children_and_modules_counts_match_torch():
    ours, theirs = net(cnncy), net(torch)
    assert len(list(ours.children())) == len(list(theirs.children()))
    assert len(list(ours.modules())) == len(list(theirs.modules()))
    assert [type(m).__name__ for m in ours.modules()] == [type(m).__name__ for m in theirs.modules()]


# ------------------------------------------------------------------ attribute lookup of registered members
# cnncy keeps registered members in the module's __dict__ as well (fast attribute reads); every way of
# changing the tables must leave `module.name` exactly as torch's __getattr__ would find it.

def member_changes(lib):
    """name -> a function that changes a fresh Linear's members and returns what to compare."""
    nn = lib.nn

    def assign_none(m):
        m.bias = None
        return m.bias, list(m._parameters)

    def delete(m):
        del m.bias
        return hasattr(m, "bias"), list(m._parameters)

    def replace_directly(m):
        m._parameters["bias"] = nn.Parameter(lib.zeros(3))
        return m.bias.shape, float(m.bias.detach().sum())

    def pop_directly(m):
        m._parameters.pop("bias")
        return hasattr(m, "bias")

    def popitem_directly(m):
        m._parameters.popitem()
        return hasattr(m, "bias")

    def setdefault_directly(m):
        m._buffers.setdefault("running", lib.ones(2))
        return m.running.shape

    def update_directly(m):
        m._buffers.update({"running": lib.ones(2)})
        return m.running.shape

    def clear_directly(m):
        m._parameters.clear()
        return hasattr(m, "weight"), hasattr(m, "bias")

    def module_in_place_of_parameter(m):
        m._parameters.pop("bias")
        m._modules["bias"] = nn.ReLU()
        return type(m.bias).__name__

    def parameter_wins_over_buffer(m):
        m._buffers["weight"] = lib.ones(1)
        first = m.weight.shape
        del m._parameters["weight"]
        return first, m.weight.shape

    def plain_attribute_after_delete(m):
        del m.weight
        m.weight = 5
        return m.weight, list(m._parameters)

    return {f.__name__: f for f in (assign_none, delete, replace_directly, pop_directly, popitem_directly,
                                     setdefault_directly, update_directly,
                                     clear_directly, module_in_place_of_parameter, parameter_wins_over_buffer,
                                     plain_attribute_after_delete)}


@pytest.mark.parametrize("change", member_changes(cnncy))
def test_members_read_as_attributes_follow_every_change_like_torch(change):
    def run(lib):
        lib.manual_seed(0)
        return member_changes(lib)[change](lib.nn.Linear(4, 3))

    ours, theirs = run(cnncy), run(torch)
    normalise = lambda v: tuple(v) if isinstance(v, (torch.Size, cnncy.Size)) else v  # noqa: E731
    if isinstance(theirs, tuple):
        assert tuple(map(normalise, ours)) == tuple(map(normalise, theirs))
    else:
        assert normalise(ours) == normalise(theirs)


@pytest.mark.parametrize("how", ["copy", "deepcopy", "pickle"])
def test_copied_modules_have_members_of_their_own(how):
    import copy
    import pickle

    model = net(cnncy)
    clone = {"copy": copy.copy, "deepcopy": copy.deepcopy,
             "pickle": lambda m: pickle.loads(pickle.dumps(m))}[how](model)
    assert list(clone.state_dict()) == list(model.state_dict())
    clone._modules["4"] = cnncy.nn.Linear(64, 5)  # replaces the copy's last layer only
    assert clone[4].out_features == 5 and getattr(clone, "4").out_features == 5
    assert model[4].out_features == 10 and getattr(model, "4").out_features == 10
    assert clone(cnncy.randn(1, 1, 8, 8)).shape == (1, 5)
