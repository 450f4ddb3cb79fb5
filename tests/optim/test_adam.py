"""cnncy.optim.Adam / AdamW against torch.optim.Adam / AdamW, step by step.

The moment estimates match torch bit for bit; the parameters differ by about an
ulp now and then because torch's CPU sqrt (MKL) is not correctly rounded.
"""
import numpy as np
import pytest
import torch

import cnncy
from cnncy import optim
from torch_compare import assert_close

ADAM_CONFIGS = {
    "default": dict(),
    "lr": dict(lr=0.05),
    "weight_decay": dict(lr=0.01, weight_decay=0.1),
    "amsgrad": dict(lr=0.01, amsgrad=True),
    "betas": dict(lr=0.01, betas=(0.5, 0.99)),
    "small_beta1": dict(lr=0.01, betas=(0.3, 0.6)),  # lerp weight >= 0.5: torch's other lerp formula
    "eps": dict(lr=0.01, eps=1e-3),
    "maximize": dict(lr=0.01, maximize=True, weight_decay=0.05),
    "everything": dict(lr=0.02, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.05, amsgrad=True, maximize=True),
    "decoupled": dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True),
}
ADAMW_CONFIGS = {
    "default": dict(),
    "weight_decay": dict(lr=0.01, weight_decay=0.3),
    "amsgrad": dict(lr=0.01, weight_decay=0.05, amsgrad=True, maximize=True),
}


@pytest.mark.parametrize("config", ADAM_CONFIGS.values(), ids=ADAM_CONFIGS.keys())
def test_adam_matches_torch_after_every_step(config, twin):
    twin.run(optim.Adam(twin.ours, **config), torch.optim.Adam(twin.theirs, **config))


@pytest.mark.parametrize("config", ADAMW_CONFIGS.values(), ids=ADAMW_CONFIGS.keys())
def test_adamw_matches_torch_after_every_step(config, twin):
    twin.run(optim.AdamW(twin.ours, **config), torch.optim.AdamW(twin.theirs, **config))


@pytest.mark.parametrize("config", [ADAM_CONFIGS["everything"], ADAM_CONFIGS["small_beta1"]],
                         ids=["everything", "small_beta1"])
def test_moments_are_bitwise_torch(config, twin):
    """Fed torch's parameters each step, the moment buffers come out identical to torch's."""
    ours, theirs = optim.Adam(twin.ours, **config), torch.optim.Adam(twin.theirs, **config)
    for step in range(5):
        for ours_param, theirs_param in zip(twin.ours, twin.theirs):
            ours_param._array[...] = theirs_param.detach().numpy()
        twin.feed()
        ours.step()
        theirs.step()
        for ours_param, theirs_param in zip(twin.ours, twin.theirs):
            for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
                if key in theirs.state[theirs_param]:
                    np.testing.assert_array_equal(ours.state[ours_param][key].numpy(),
                                                  theirs.state[theirs_param][key].numpy(), err_msg=key)


def test_state_like_torch(twin):
    ours, theirs = optim.Adam(twin.ours, amsgrad=True), torch.optim.Adam(twin.theirs, amsgrad=True)
    twin.run(ours, theirs, steps=6)
    assert 2 not in ours.state_dict()["state"]  # never had a gradient
    for ours_param, theirs_param in zip(twin.ours, twin.theirs):
        ours_state, theirs_state = ours.state.get(ours_param, {}), theirs.state.get(theirs_param, {})
        assert ours_state.keys() == theirs_state.keys()
        for key, value in theirs_state.items():
            assert_close(ours_state[key], value, what=key)
    step = ours.state[twin.ours[1]]["step"]
    assert step.dtype == cnncy.float32 and step.shape == () and step.item() == 4


def test_adam_with_decoupled_weight_decay_is_adamw(rng, dtype, make_twin):
    seed = int(rng.integers(1 << 30))
    adam_twin, adamw_twin = make_twin(np.random.default_rng(seed), dtype), make_twin(np.random.default_rng(seed), dtype)
    adam = optim.Adam(adam_twin.ours, lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)
    adamw = optim.AdamW(adamw_twin.ours, lr=0.01, weight_decay=0.1)
    for _ in range(3):
        adam_twin.feed()
        adamw_twin.feed()
        adam.step()
        adamw.step()
    for p, q in zip(adam_twin.ours, adamw_twin.ours):
        np.testing.assert_array_equal(p.detach().numpy(), q.detach().numpy())


def test_nan_gradient_propagates_like_torch_with_amsgrad(twin):
    ours, theirs = optim.Adam(twin.ours, amsgrad=True), torch.optim.Adam(twin.theirs, amsgrad=True)
    twin.run(ours, theirs, steps=2)
    twin.feed()
    twin.ours[0].grad._array[1, 2, 0, 0] = np.nan
    twin.theirs[0].grad[1, 2, 0, 0] = float("nan")
    ours.step()
    theirs.step()
    twin.assert_close()
    assert np.isnan(ours.state[twin.ours[0]]["max_exp_avg_sq"].numpy()[1, 2, 0, 0])


def test_result_does_not_depend_on_thread_count(threads, make_twin):
    results = []
    for count in (1, 2):
        threads(count)
        twin = make_twin(np.random.default_rng(3), np.float32)
        optimizer = optim.Adam(twin.ours, lr=0.01, amsgrad=True, weight_decay=0.01)
        for _ in range(3):
            twin.feed()
            optimizer.step()
        results.append([p.detach().numpy().copy() for p in twin.ours])
    for one, two in zip(*results):
        np.testing.assert_array_equal(one, two)


def test_old_checkpoint_with_a_numeric_step(twin):
    ours, theirs = optim.Adam(twin.ours, lr=0.01), torch.optim.Adam(twin.theirs, lr=0.01)
    twin.run(ours, theirs, steps=3)
    saved = ours.state_dict()
    for state in saved["state"].values():
        state["step"] = state["step"].item()
    resumed = optim.Adam(twin.ours, lr=0.01)
    resumed.load_state_dict(saved)
    assert isinstance(resumed.state[twin.ours[0]]["step"], cnncy.Tensor)
    twin.run(resumed, theirs, steps=2)


# ----------------------------------------------------------------------------- validation

@pytest.mark.parametrize("kwargs", [
    dict(lr=-0.1), dict(eps=-1e-8), dict(betas=(1.0, 0.999)), dict(betas=(0.9, -0.1)),
    dict(weight_decay=-0.01), dict(betas=(0, 0.999)),
], ids=["lr", "eps", "beta1", "beta2", "weight_decay", "int_beta"])
@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_invalid_options_raise_like_torch(name, kwargs, raises_like_torch):
    ours, theirs = cnncy.zeros(3, requires_grad=True), torch.zeros(3, requires_grad=True)
    raises_like_torch(lambda: getattr(optim, name)([ours], **kwargs),
                      lambda: getattr(torch.optim, name)([theirs], **kwargs))
