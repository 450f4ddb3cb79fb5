"""Adam and AdamW, as torch.optim.Adam / torch.optim.AdamW."""
import numpy as np

from .. import _optim
from .._threads import get_num_threads
from ..autograd import enable_grad
from ..tensor import Tensor, float32
from .optimizer import Optimizer, _flat_grad, _flat_view

__all__ = ["Adam", "AdamW", "adam"]


class Adam(Optimizer):
    """Implements the Adam algorithm, exactly as torch.optim.Adam.

    With g the gradient (negated if `maximize`; plus weight_decay * p unless the decay is
    decoupled), each step t does m = lerp(m, g, 1 - beta1), v = beta2 * v + (1 - beta2) * g^2,
    p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps), using the running
    maximum of v when `amsgrad`.  With `decoupled_weight_decay` (AdamW) the parameter is first
    multiplied by 1 - lr * weight_decay instead.

    Args:
        params (iterable): tensors to optimize, or dicts defining parameter groups.
        lr (float, optional): learning rate (default: 1e-3).
        betas (Tuple[float, float], optional): coefficients of the running averages of the
            gradient and its square (default: (0.9, 0.999)).
        eps (float, optional): term added to the denominator for numerical stability (default: 1e-8).
        weight_decay (float, optional): weight decay (L2 penalty) (default: 0).
        amsgrad (bool, optional): use the AMSGrad variant (default: False).
        maximize (bool, optional): maximize the objective instead of minimizing (default: False).
        decoupled_weight_decay (bool, optional): decay the weights directly, as AdamW (default: False).
        foreach, capturable, fused (optional): accepted for compatibility with torch; cnncy always
            runs its one fused kernel per parameter.
        differentiable (bool, optional): must be False.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, *,
                 foreach=None, maximize=False, capturable=False, differentiable=False, fused=None,
                 decoupled_weight_decay=False):
        if isinstance(lr, Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= betas[0] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
        if not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if not (all(isinstance(b, float) for b in betas) or all(isinstance(b, Tensor) for b in betas)):
            raise ValueError("betas must be either both floats or both Tensors")
        for index, beta in enumerate(betas):
            if isinstance(beta, Tensor) and beta.numel() != 1:
                raise ValueError(f"Tensor betas[{index}] must be 1-element")
        defaults = {"lr": lr, "betas": tuple(float(b) for b in betas), "eps": eps,
                    "weight_decay": weight_decay, "amsgrad": amsgrad, "maximize": maximize,
                    "foreach": foreach, "capturable": capturable, "differentiable": differentiable,
                    "fused": fused, "decoupled_weight_decay": decoupled_weight_decay}
        super().__init__(params, defaults)

    def __setstate__(self, state):
        super().__setstate__(state)
        for group in self.param_groups:
            for key, default in (("amsgrad", False), ("maximize", False), ("foreach", None),
                                 ("capturable", False), ("differentiable", False), ("fused", None),
                                 ("decoupled_weight_decay", False)):
                group.setdefault(key, default)
            for p in group["params"]:
                p_state = self.state.get(p, {})
                if p_state and not isinstance(p_state["step"], Tensor):
                    # Old checkpoints store the step as a number; torch turns it into a tensor.
                    p_state["step"] = Tensor._wrap(np.array(float(p_state["step"]), dtype=float32))

    def _init_group(self, group, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps):
        for p in group["params"]:
            if p.grad is None:
                continue
            params.append(p)
            grads.append(p.grad)
            state = self.state[p]
            if len(state) == 0:  # lazy state initialisation, as torch
                state["step"] = Tensor._wrap(np.array(0.0, dtype=float32))
                state["exp_avg"] = Tensor._wrap(np.zeros_like(p._array, order="C"))
                state["exp_avg_sq"] = Tensor._wrap(np.zeros_like(p._array, order="C"))
                if group["amsgrad"]:
                    state["max_exp_avg_sq"] = Tensor._wrap(np.zeros_like(p._array, order="C"))
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            if group["amsgrad"]:
                max_exp_avg_sqs.append(state["max_exp_avg_sq"])
            state_steps.append(state["step"])

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
            params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps = [], [], [], [], [], []
            self._init_group(group, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps)
            beta1, beta2 = group["betas"]
            adam(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps,
                 amsgrad=group["amsgrad"], beta1=beta1, beta2=beta2, lr=group["lr"],
                 weight_decay=group["weight_decay"], eps=group["eps"], maximize=group["maximize"],
                 decoupled_weight_decay=group["decoupled_weight_decay"])
        return loss


class AdamW(Adam):
    """Implements AdamW (Adam with decoupled weight decay), exactly as torch.optim.AdamW.

    Same arguments as :class:`Adam`, with weight_decay defaulting to 1e-2.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *,
                 maximize=False, foreach=None, capturable=False, differentiable=False, fused=None):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach, maximize=maximize,
                         capturable=capturable, differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True)

    def __setstate__(self, state):
        super().__setstate__(state)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True


def adam(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, *, amsgrad, beta1, beta2,
         lr, weight_decay, eps, maximize, decoupled_weight_decay=False):
    """Functional Adam (torch.optim.adam): updates `params`, the moment buffers and the steps in place."""
    # float() also reads a one-element tensor, which torch accepts as lr.
    lr, beta1, beta2, weight_decay, eps = float(lr), float(beta1), float(beta2), float(weight_decay), float(eps)
    num_threads = get_num_threads()
    for i, param in enumerate(params):
        step_array = state_steps[i]._array
        step_array += 1
        step = float(step_array)
        # Bias corrections in double precision, exactly as torch's single-tensor Adam.
        step_size = lr / (1 - beta1 ** step)
        bias_correction2_sqrt = (1 - beta2 ** step) ** 0.5
        _optim.adam_update(_flat_view(param), _flat_grad(grads[i]), _flat_view(exp_avgs[i]),
                           _flat_view(exp_avg_sqs[i]), _flat_view(max_exp_avg_sqs[i]) if amsgrad else None,
                           step_size, bias_correction2_sqrt, beta1, beta2, eps, weight_decay, lr,
                           decoupled_weight_decay, maximize, num_threads)
