"""Shared by the optimizer tests: cnncy parameters with torch twins, fed the same gradients."""
import numpy as np
import pytest
import torch

import cnncy
from torch_compare import assert_close

# A conv weight and bias, a linear weight, a 0-d and a 1-element parameter, and one large
# enough (75k elements) for the kernels' multi-threaded path.
PARAM_SHAPES = [(8, 3, 3, 3), (8,), (10, 33), (), (1,), (250, 300)]


class TorchTwin:
    """cnncy leaf tensors and torch copies of them; `feed` gives both the same random gradients."""

    def __init__(self, rng, dtype, shapes=PARAM_SHAPES):
        self.rng, self.dtype = rng, np.dtype(dtype)
        arrays = [rng.standard_normal(shape).astype(self.dtype) for shape in shapes]
        self.ours = [cnncy.Tensor(a.copy(), requires_grad=True) for a in arrays]
        self.theirs = [torch.tensor(a.copy(), requires_grad=True) for a in arrays]

    def feed(self, without_grad=()):
        """New random gradients for every parameter; those indexed in `without_grad` get None."""
        for i, (ours, theirs) in enumerate(zip(self.ours, self.theirs)):
            if i in without_grad:
                ours.grad = theirs.grad = None
                continue
            grad = self.rng.standard_normal(ours.shape).astype(self.dtype)
            ours.grad = cnncy.Tensor(grad.copy())
            theirs.grad = torch.from_numpy(grad.copy())

    def assert_close(self, what=""):
        for i, (ours, theirs) in enumerate(zip(self.ours, self.theirs)):
            assert_close(ours, theirs, what=f"{what} parameter {i}")

    def max_abs_difference(self):
        return max(float(np.max(np.abs(ours.detach().numpy() - theirs.detach().numpy()), initial=0))
                   for ours, theirs in zip(self.ours, self.theirs))

    @staticmethod
    def some_grads_missing(step):
        """Parameter 1 has no gradient every fourth step (the first included); parameter 2 never has one."""
        return (1, 2) if step % 4 == 0 else (2,)

    def run(self, ours_optimizer, theirs_optimizer, steps=20, without_grad=some_grads_missing):
        """Step both optimizers `steps` times on the same gradients, comparing after every step."""
        for step in range(steps):
            self.feed(without_grad(step))
            ours_optimizer.step()
            theirs_optimizer.step()
            self.assert_close(f"step {step}:")


@pytest.fixture
def make_twin():
    """TorchTwin(rng, dtype) for tests that need more than one, or a fixed dtype."""
    return TorchTwin


@pytest.fixture
def twin(rng, dtype):
    return TorchTwin(rng, dtype)


@pytest.fixture
def raises_like_torch():
    """Check that a cnncy call raises the same exception type and message as its torch twin."""
    def check(ours, theirs):
        with pytest.raises(Exception) as expected:
            theirs()
        with pytest.raises(expected.type) as actual:
            ours()
        assert str(actual.value) == str(expected.value)
    return check
