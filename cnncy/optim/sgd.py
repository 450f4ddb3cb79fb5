"""Stochastic gradient descent (optionally with momentum), as torch.optim.SGD."""
import numpy as np

from .. import _optim
from .._threads import get_num_threads
from ..autograd import enable_grad
from ..tensor import Tensor
from .optimizer import Optimizer, _flat_grad, _flat_view

__all__ = ["SGD", "sgd"]


class SGD(Optimizer):
    """Implements stochastic gradient descent (optionally with momentum), exactly as torch.optim.SGD.

    With g the gradient (negated if `maximize`), each step does
    g += weight_decay * p; b = g on the first step, else b = momentum * b + (1 - dampening) * g;
    g = g + momentum * b if nesterov else b; p -= lr * g.

    Args:
        params (iterable): tensors to optimize, or dicts defining parameter groups.
        lr (float, optional): learning rate (default: 1e-3).
        momentum (float, optional): momentum factor (default: 0).
        dampening (float, optional): dampening for momentum (default: 0).
        weight_decay (float, optional): weight decay (L2 penalty) (default: 0).
        nesterov (bool, optional): enables Nesterov momentum (default: False).
        maximize (bool, optional): maximize the objective instead of minimizing (default: False).
        foreach, fused (optional): accepted for compatibility with torch; cnncy always runs
            its one fused kernel per parameter.
        differentiable (bool, optional): must be False.

    Example:
        >>> optimizer = cnncy.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        >>> optimizer.zero_grad()
        >>> loss_fn(model(input), target).backward()
        >>> optimizer.step()
    """

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False, *,
                 maximize=False, foreach=None, differentiable=False, fused=None):
        if isinstance(lr, Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        defaults = {"lr": lr, "momentum": momentum, "dampening": dampening, "weight_decay": weight_decay,
                    "nesterov": nesterov, "maximize": maximize, "foreach": foreach,
                    "differentiable": differentiable, "fused": fused}
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        super().__init__(params, defaults)

    def __setstate__(self, state):
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("nesterov", False)
            group.setdefault("maximize", False)
            group.setdefault("foreach", None)
            group.setdefault("differentiable", False)
            group.setdefault("fused", None)

    def _init_group(self, group, params, grads, momentum_buffer_list):
        """Collect the group's parameters that have a gradient; True if one of them has no momentum buffer yet."""
        with_momentum = group["momentum"] != 0
        state = self.state
        missing = False
        for p in group["params"]:
            if p.grad is not None:
                params.append(p)
                grads.append(p.grad)
                if with_momentum:
                    buffer = state[p].get("momentum_buffer") if p in state else None
                    missing = missing or buffer is None
                    momentum_buffer_list.append(buffer)
        return missing

    def step(self, closure=None):
        """Perform a single optimization step.

        Args:
            closure (Callable, optional): a closure that reevaluates the model and returns the loss.
        """
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, momentum_buffer_list = [], [], []
            missing = self._init_group(group, params, grads, momentum_buffer_list)
            sgd(params, grads, momentum_buffer_list, weight_decay=group["weight_decay"],
                momentum=group["momentum"], lr=group["lr"], dampening=group["dampening"],
                nesterov=group["nesterov"], maximize=group["maximize"])
            if missing:  # the buffers sgd() created; the others are in the state already
                for p, momentum_buffer in zip(params, momentum_buffer_list):
                    self.state[p]["momentum_buffer"] = momentum_buffer
        return loss


def sgd(params, d_p_list, momentum_buffer_list, *, weight_decay, momentum, lr, dampening,
        nesterov, maximize):
    """Functional SGD (torch.optim.sgd): updates `params` in place.

    momentum_buffer_list holds one buffer (or None before the first step) per parameter when
    momentum != 0; missing buffers are created and stored back into the list.
    """
    lr, weight_decay, momentum, dampening = float(lr), float(weight_decay), float(momentum), float(dampening)
    num_threads = get_num_threads()
    buffers = fresh = None
    if momentum != 0:
        fresh = [buffer is None for buffer in momentum_buffer_list]
        if True not in fresh:
            fresh = None
        else:
            for i, param in enumerate(params):
                if fresh[i]:
                    momentum_buffer_list[i] = Tensor._wrap(np.empty_like(param._array, order="C"))
        buffers = [buffer._array for buffer in momentum_buffer_list]
    # Usually one kernel call for all parameters; strided or mixed-dtype arrays go one by one.
    if _optim.sgd_foreach([param._array for param in params], [grad._array for grad in d_p_list], buffers,
                          fresh, lr, weight_decay, momentum, dampening, nesterov, maximize, num_threads):
        return
    for i, param in enumerate(params):
        _optim.sgd_update(_flat_view(param), _flat_grad(d_p_list[i]),
                          _flat_view(momentum_buffer_list[i]) if buffers is not None else None,
                          lr, weight_decay, momentum, dampening, nesterov, maximize,
                          fresh is not None and fresh[i], num_threads)
