"""F.cross_entropy / F.nll_loss and nn.CrossEntropyLoss / nn.NLLLoss against torch."""
import warnings

import numpy as np
import pytest
import torch

import cnncy
import cnncy.nn as nn
import cnncy.nn.functional as F
from torch_compare import assert_close, numerical_gradient, to_torch

# (input shape, class axis size is shape[1] or shape[0] for 1-D input)
SHAPES = [(7, 3), (1, 10), (64, 10), (5, 1), (3, 100), (0, 4), (5,), (2, 4, 3), (2, 5, 3, 4)]
REDUCTIONS = ["mean", "sum", "none"]


def make_problem(rng, shape, dtype, ignore_index=-100, ignore_some=False):
    """(logits, int64 targets with some set to ignore_index when asked, class weights)."""
    logits = (rng.standard_normal(shape) * 3).astype(dtype)
    classes = shape[0] if len(shape) == 1 else shape[1]
    target_shape = () if len(shape) == 1 else (shape[0],) + shape[2:]
    target = np.asarray(rng.integers(0, classes, size=target_shape), dtype=np.int64)
    if ignore_some and target.size > 1:
        target.reshape(-1)[::3] = ignore_index
    weight = rng.uniform(0.5, 2.0, classes).astype(dtype)
    return logits, target, weight


def run_loss(lib, op, logits, target, weight=None, **kwargs):
    """(loss, grad of the logits) with a random upstream gradient for reduction='none'."""
    make = (lambda a, g=False: cnncy.tensor(a, requires_grad=g)) if lib is cnncy else \
        (lambda a, g=False: to_torch(a, requires_grad=g))
    x = make(logits, True)
    functional = F if lib is cnncy else torch.nn.functional
    loss = getattr(functional, op)(x, make(target), weight=None if weight is None else make(weight),
                                   **kwargs)
    grad = np.asarray(np.random.default_rng(5).standard_normal(tuple(loss.shape)), dtype=logits.dtype)
    loss.backward(make(grad))
    return loss, x.grad


def assert_loss_matches_torch(op, logits, target, weight=None, **kwargs):
    ours = run_loss(cnncy, op, logits, target, weight, **kwargs)
    theirs = run_loss(torch, op, logits, target, weight, **kwargs)
    assert_close(ours[0], theirs[0], what="loss")
    assert_close(ours[1], theirs[1], what="grad input")
    return ours, theirs


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted, ignore_some", [(False, False), (True, False), (False, True),
                                                   (True, True)])
def test_cross_entropy_matches_torch(rng, dtype, shape, reduction, weighted, ignore_some):
    logits, target, weight = make_problem(rng, shape, dtype, ignore_some=ignore_some)
    assert_loss_matches_torch("cross_entropy", logits, target, weight if weighted else None,
                              reduction=reduction)


def test_cross_entropy_gradient_is_accurate_entry_by_entry_across_its_range(dtype):
    # The gradient is softmax - onehot, and its softmax takes exp of log-probabilities from 0 down
    # to -110 here (the denormals, and 0).  The float32 kernels compute exp with their own vector
    # code: each entry is checked on its own scale against a float64 reference, and against torch.
    offsets = -np.concatenate([np.linspace(0, 110, 4000), np.geomspace(1e-8, 1e-1, 96)])
    logits = np.random.default_rng(9).permutation(offsets).reshape(256, 16).astype(dtype)
    target = np.arange(256) % 16
    x = cnncy.tensor(logits, requires_grad=True)
    F.cross_entropy(x, cnncy.tensor(target), reduction="sum").backward()
    exps = np.exp((logits - logits.max(axis=1, keepdims=True)).astype(np.float64))
    softmax = exps / exps.sum(axis=1, keepdims=True)
    grad = x.grad.numpy().astype(np.float64)
    eps, tiny = np.finfo(dtype).eps, np.finfo(dtype).tiny
    is_target = np.zeros(logits.shape, dtype=bool)
    is_target[np.arange(256), target] = True
    # softmax - 1 at the targets: its error is on the scale of 1.
    assert np.abs(grad[is_target] - (softmax[is_target] - 1)).max() < 32 * eps
    # Elsewhere exp(log-probability): the log-probability's rounding, up to about |log p| units
    # of eps, comes out of exp as a relative error of that size.
    # Denormal results get the same relative error plus a few units of the smallest denormal.
    others = ~is_target & (softmax > 0)
    error = np.abs(grad[others] - softmax[others])
    allowed = 4 * eps * (2 + np.abs(np.log(softmax[others]))) * softmax[others] + 4 * tiny * eps
    assert (error <= allowed).all()
    assert (grad[~is_target & (softmax == 0)] == 0).all()
    assert_loss_matches_torch("cross_entropy", logits, target, reduction="sum")


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
def test_nll_loss_matches_torch(rng, dtype, shape, reduction, weighted):
    logits, target, weight = make_problem(rng, shape, dtype, ignore_index=1, ignore_some=True)
    assert_loss_matches_torch("nll_loss", logits, target, weight if weighted else None,
                              reduction=reduction, ignore_index=1)


@pytest.mark.parametrize("shape", [(7, 3), (64, 10), (5,), (2, 4, 3), (0, 4)])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
def test_label_smoothing_matches_torch(rng, dtype, shape, reduction, weighted):
    logits, target, weight = make_problem(rng, shape, dtype, ignore_some=True)
    assert_loss_matches_torch("cross_entropy", logits, target, weight if weighted else None,
                              reduction=reduction, label_smoothing=0.15)


@pytest.mark.parametrize("shape", [(7, 3), (5,), (2, 4, 3), (0, 4)])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted, label_smoothing", [(False, 0.0), (True, 0.0), (True, 0.2)])
def test_probability_targets_match_torch(rng, dtype, shape, reduction, weighted, label_smoothing):
    logits, _, weight = make_problem(rng, shape, dtype)
    classes = shape[0] if len(shape) == 1 else shape[1]
    probabilities = rng.dirichlet(np.ones(classes), size=int(np.prod(shape)) // classes)
    probabilities = np.moveaxis(probabilities.reshape(shape[:1] + shape[2:] + (classes,))
                                if len(shape) > 1 else probabilities.reshape(shape), -1,
                                0 if len(shape) == 1 else 1).astype(dtype)
    assert_loss_matches_torch("cross_entropy", logits, probabilities, weight if weighted else None,
                              reduction=reduction, label_smoothing=label_smoothing)


def test_one_dimensional_target_of_size_one_for_unbatched_input(rng, dtype):
    # torch's backward fails on this input ("size mismatch"), so compare the loss only.
    logits, _, _ = make_problem(rng, (5,), dtype)
    for reduction in REDUCTIONS:
        loss = F.cross_entropy(cnncy.tensor(logits), cnncy.tensor([2]), reduction=reduction)
        assert_close(loss, torch.nn.functional.cross_entropy(to_torch(logits), torch.tensor([2]),
                                                             reduction=reduction))


def test_uint8_targets_are_accepted_like_torch(rng):
    logits, target, _ = make_problem(rng, (6, 4), np.float32)
    assert_loss_matches_torch("cross_entropy", logits, target.astype(np.uint8))


@pytest.mark.parametrize("op, kwargs", [("cross_entropy", {}), ("nll_loss", {}),
                                        ("cross_entropy", dict(label_smoothing=0.1))])
def test_mean_over_no_kept_targets_is_nan_like_torch(rng, op, kwargs):
    for shape, target in (((4, 3), np.full(4, -100)), ((0, 3), np.zeros(0, dtype=np.int64))):
        logits = rng.standard_normal(shape).astype(np.float32)
        (loss, grad), _ = assert_loss_matches_torch(op, logits, target, **kwargs)
        assert np.isnan(loss.item())



@pytest.mark.parametrize("op, kwargs", [
    ("cross_entropy", dict(reduction="mean")),
    ("cross_entropy", dict(reduction="sum", label_smoothing=0.3)),
    ("nll_loss", dict(reduction="mean")),
])
@pytest.mark.parametrize("weighted", [False, True])
def test_gradients_match_finite_differences(rng, op, kwargs, weighted):
    logits, target, weight = make_problem(rng, (4, 5), np.float64, ignore_some=True)
    weight = cnncy.tensor(weight) if weighted else None

    def loss():
        return getattr(F, op)(cnncy.tensor(logits), cnncy.tensor(target), weight, **kwargs).item()

    x = cnncy.tensor(logits, requires_grad=True)
    getattr(F, op)(x, cnncy.tensor(target), weight, **kwargs).backward()
    assert_close(x.grad, numerical_gradient(loss, logits), rtol=1e-7)


def test_one_and_two_threads_are_bitwise_identical(rng, threads):
    logits, target, weight = make_problem(rng, (512, 100), np.float32, ignore_some=True)

    def outputs(num_threads):
        threads(num_threads)
        loss, grad = run_loss(cnncy, "cross_entropy", logits, target, weight)
        return loss.detach().numpy(), grad.numpy()

    for one, two in zip(outputs(1), outputs(2)):
        np.testing.assert_array_equal(one, two)


# ------------------------------------------------------------------ layers

@pytest.mark.parametrize("layer, kwargs", [
    ("CrossEntropyLoss", {}),
    ("CrossEntropyLoss", dict(reduction="sum", ignore_index=2, label_smoothing=0.1)),
    ("NLLLoss", {}),
    ("NLLLoss", dict(reduction="none", ignore_index=0)),
])
@pytest.mark.parametrize("weighted", [False, True])
def test_layers_match_torch_layers(rng, layer, kwargs, weighted):
    logits, target, weight = make_problem(rng, (6, 4), np.float32)
    ours = getattr(nn, layer)(weight=cnncy.tensor(weight) if weighted else None, **kwargs)
    theirs = getattr(torch.nn, layer)(weight=to_torch(weight) if weighted else None, **kwargs)
    assert repr(ours) == repr(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert_close(ours(cnncy.tensor(logits), cnncy.tensor(target)),
                 theirs(to_torch(logits), torch.from_numpy(target)))


@pytest.mark.parametrize("size_average, reduce", [(False, None), (None, False), (True, True)])
def test_deprecated_reduction_arguments_map_like_torch(size_average, reduce):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = nn.CrossEntropyLoss(size_average=size_average, reduce=reduce)
        theirs = torch.nn.CrossEntropyLoss(size_average=size_average, reduce=reduce)
    assert ours.reduction == theirs.reduction


# ------------------------------------------------------------------ errors

def bad_calls(lib):
    """name -> (call, expected exception, message fragment), run against cnncy and torch alike."""
    functional = lib.nn.functional
    logits = lib.ones(4, 5)

    def target(*values, dtype="int64"):
        return lib.tensor(values, dtype=getattr(lib, dtype))

    return {
        "int32 target": (lambda: functional.cross_entropy(logits, target(0, 1, 2, 3, dtype="int32")),
                         RuntimeError, "expected target dtype to be Long or Byte, but got Int"),
        "float target": (lambda: functional.nll_loss(logits, target(0, 1, 2, 3, dtype="float32")),
                         RuntimeError, "but got Float"),
        "target too big": (lambda: functional.cross_entropy(logits, target(0, 1, 2, 12)), IndexError,
                           "Target 12 is out of bounds."),
        "negative target": (lambda: functional.nll_loss(logits, target(0, -3, 2, 1)), IndexError,
                            "Target -3 is out of bounds."),
        "batch mismatch": (lambda: functional.cross_entropy(logits, target(0, 1, 2)), ValueError,
                           "Expected input batch_size (4) to match target batch_size (3)."),
        "2-D target": (lambda: functional.cross_entropy(logits, lib.zeros(4, 2, dtype=lib.int64)),
                       RuntimeError, "0D or 1D target tensor expected, multi-target not supported"),
        "1-D input, 2 targets": (lambda: functional.cross_entropy(lib.ones(5), target(2, 3)),
                                 ValueError, "For 1D input, 1D target must have size 1"),
        "spatial target size": (lambda: functional.nll_loss(lib.ones(2, 5, 3),
                                                            lib.zeros(2, 4, dtype=lib.int64)),
                                RuntimeError, "Expected target size [2, 3], got [2, 4]"),
        "0-d input": (lambda: functional.nll_loss(lib.tensor(1.0), target(0)[0]), ValueError,
                      "Expected 1 or more dimensions (got 0)"),
        "weight size": (lambda: functional.cross_entropy(logits, target(0, 1, 2, 3), lib.ones(3)),
                        RuntimeError, "weight tensor should be defined either for all 5 classes or "
                        "no classes but got weight tensor of shape: [3]"),
        "weight dtype": (lambda: functional.nll_loss(logits, target(0, 1, 2, 3),
                                                     lib.ones(5, dtype=lib.float64)),
                         RuntimeError, "expected scalar type Float but found Double"),
        "reduction": (lambda: functional.cross_entropy(logits, target(0, 1, 2, 3), reduction="avg"),
                      ValueError, "avg is not a valid value for reduction"),
        "label smoothing": (lambda: functional.cross_entropy(logits, target(0, 1, 2, 3),
                                                             label_smoothing=1.5),
                            RuntimeError, "label_smoothing must be between 0.0 and 1.0. Got: 1.5"),
        "probabilities with ignore_index": (
            lambda: functional.cross_entropy(logits, lib.ones(4, 5), ignore_index=1), RuntimeError,
            "ignore_index is not supported for floating point target"),
        "integer logits": (lambda: functional.cross_entropy(lib.ones(4, 5, dtype=lib.int64),
                                                            target(0, 1, 2, 3)),
                           NotImplementedError, ""),
    }


@pytest.mark.parametrize("case", bad_calls(cnncy))
def test_bad_arguments_raise_like_torch(case):
    call, error, message = bad_calls(cnncy)[case]
    with pytest.raises(error) as info:
        call()
    assert ("cross_entropy" in str(info.value) or "nll_loss" in str(info.value))
    assert message in str(info.value)
    torch_call, _, _ = bad_calls(torch)[case]
    with pytest.raises(error):
        torch_call()


def test_non_tensor_arguments_raise_type_error():
    with pytest.raises(TypeError, match="cross_entropy\\(\\): argument 'target' must be Tensor"):
        F.cross_entropy(cnncy.ones(2, 3), [0, 1])
