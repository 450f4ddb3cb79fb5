"""CrossEntropyLoss and NLLLoss, as torch.nn."""
from .. import functional as F
from ..functional.loss import legacy_reduction
from .module import Module


class _WeightedLoss(Module):
    def __init__(self, weight, size_average, reduce, reduction):
        super().__init__()
        if size_average is not None or reduce is not None:
            reduction = legacy_reduction(size_average, reduce)
        self.reduction = reduction
        self.register_buffer("weight", weight)


class NLLLoss(_WeightedLoss):
    """Negative log-likelihood of class-index targets, given log-probabilities.

    Args:
        weight: optional per-class weights, shape (C,).
        size_average, reduce: deprecated; use reduction.
        ignore_index: target value that contributes neither loss nor gradient. Default: -100.
        reduction: 'none' | 'mean' (divided by the summed weights of the kept targets) | 'sum'.

    Shape:
        Input: (N, C), (C,) or (N, C, d1, ...). Target: (N,), () or (N, d1, ...), int64.
        Output: a scalar, or the target's shape with reduction='none'.
    """

    def __init__(self, weight=None, size_average=None, ignore_index=-100, reduce=None,
                 reduction="mean"):
        super().__init__(weight, size_average, reduce, reduction)
        self.ignore_index = ignore_index

    def forward(self, input, target):
        return F.nll_loss(input, target, weight=self.weight, ignore_index=self.ignore_index,
                          reduction=self.reduction)


class CrossEntropyLoss(_WeightedLoss):
    """Cross-entropy between logits and class-index (or class-probability) targets.

    Args:
        weight: optional per-class weights, shape (C,).
        size_average, reduce: deprecated; use reduction.
        ignore_index: class-index target value that contributes neither loss nor gradient.
        reduction: 'none' | 'mean' | 'sum'. Default: 'mean'.
        label_smoothing: in [0, 1]; mixes the target with the uniform distribution. Default: 0.

    Shape:
        Input: (N, C), (C,) or (N, C, d1, ...). Target: class indices (N,), () or (N, d1, ...),
        int64; or probabilities shaped like the input.
        Output: a scalar, or the target's shape (without the class axis) with reduction='none'.
    """

    def __init__(self, weight=None, size_average=None, ignore_index=-100, reduce=None,
                 reduction="mean", label_smoothing=0.0):
        super().__init__(weight, size_average, reduce, reduction)
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing

    def forward(self, input, target):
        return F.cross_entropy(input, target, weight=self.weight, ignore_index=self.ignore_index,
                               reduction=self.reduction, label_smoothing=self.label_smoothing)
