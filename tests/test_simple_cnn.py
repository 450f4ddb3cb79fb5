"""The seed's SimpleCNN, end to end, step for step against torch with the same weights."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

import cnncy
from torch_compare import TORCH_DTYPE, assert_close, to_torch

EXAMPLES = os.path.join(os.path.dirname(__file__), os.pardir, "examples")
sys.path.insert(0, EXAMPLES)
from mnist_models import build  # noqa: E402  (the seed's SimpleCNN, built from either library)


def twin_models(dtype):
    torch.manual_seed(0)
    theirs = build("simple", torch).to(TORCH_DTYPE[dtype])
    ours = build("simple", cnncy).to(dtype)
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    return ours, theirs


def batch(rng, n, dtype):
    images = rng.standard_normal((n, 1, 28, 28)).astype(dtype)
    labels = (np.arange(n) % 10).astype(np.int64)
    return images, labels


def train_step(lib, model, optimizer, images, labels):
    outputs = model(images)
    loss = lib.nn.CrossEntropyLoss()(outputs, labels)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss


def assert_same_parameters(ours, theirs, rtol=None, what=""):
    ours_params = dict(ours.named_parameters())
    for name, p in theirs.named_parameters():
        assert_close(ours_params[name], p, rtol=rtol, what=f"{what}{name}")


def test_loss_and_every_gradient_match_torch(dtype, rng):
    ours, theirs = twin_models(dtype)
    images, labels = batch(rng, 4, dtype)
    loss_ours = cnncy.nn.CrossEntropyLoss()(ours(cnncy.tensor(images)), cnncy.tensor(labels))
    loss_theirs = torch.nn.CrossEntropyLoss()(theirs(to_torch(images)), torch.from_numpy(labels))
    loss_ours.backward()
    loss_theirs.backward()
    assert_close(loss_ours, loss_theirs, what="loss")
    grads = {name: p.grad for name, p in ours.named_parameters()}
    assert set(grads) == {"conv1.weight", "conv1.bias", "fc1.weight", "fc1.bias"}
    for name, p in theirs.named_parameters():
        assert_close(grads[name], p.grad, what=f"grad {name}")


@pytest.mark.parametrize("make_optimizer", [
    lambda optim, params: optim.SGD(params, lr=0.001, momentum=0.9),
    lambda optim, params: optim.Adam(params, lr=1e-3),
], ids=["sgd_momentum", "adam"])
def test_twenty_training_steps_follow_torch(make_optimizer, dtype, rng):
    ours, theirs = twin_models(dtype)
    opt_ours, opt_theirs = make_optimizer(cnncy.optim, ours.parameters()), make_optimizer(torch.optim, theirs.parameters())
    # Whole runs drift by rounding; compare step by step with a looser float32 tolerance.
    rtol = 2e-4 if dtype == np.float32 else 1e-9
    for step in range(20):
        images, labels = batch(rng, 8, dtype)
        loss_ours = train_step(cnncy, ours, opt_ours, cnncy.tensor(images), cnncy.tensor(labels))
        loss_theirs = train_step(torch, theirs, opt_theirs, to_torch(images), torch.from_numpy(labels))
        assert_close(loss_ours, loss_theirs, rtol=rtol, what=f"loss at step {step}")
        if step in (0, 19):
            assert_same_parameters(ours, theirs, rtol=rtol, what=f"after step {step + 1}: ")


def test_seed_script_runs_with_imports_swapped():
    # Whichever cnncy the tests import (installed, or built in place) is the one the script gets.
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(cnncy.__file__)))
    result = subprocess.run([sys.executable, os.path.join(EXAMPLES, "simple_cnn.py")],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    match = re.fullmatch(r"Loss: (\S+)\n", result.stdout)
    assert match, result.stdout
    # Ten classes, a random model at init: the loss is near log(10).
    assert 1.0 < float(match.group(1)) < 5.0
