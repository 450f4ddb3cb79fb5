"""Optimizer: the bookkeeping every optimizer shares, as torch.optim.Optimizer.

Parameter groups, per-parameter state, zero_grad, and state_dict /
load_state_dict in torch's format (state keyed by the parameter's position,
param groups listing positions), so checkpoints move between the two.
"""
import warnings
from collections import defaultdict
from copy import deepcopy
from itertools import chain

import numpy as np

from .._frames import user_stacklevel
from ..tensor import Tensor


def _typename(obj):
    """The type's name as torch.typename writes it ('int', 'numpy.ndarray')."""
    if isinstance(obj, Tensor):
        return "cnncy.Tensor"
    cls = type(obj)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def _flat_view(tensor):
    """A 1-D view of a parameter's (or state tensor's) array, which the update kernels write through."""
    array = tensor._array
    if not array.flags.c_contiguous:
        raise RuntimeError(f"optimizer: parameters and their state must be contiguous to be updated "
                           f"in place, got shape {array.shape} with strides {array.strides}")
    return array.reshape(-1)


def _flat_grad(grad):
    """A 1-D C-contiguous gradient: a view, or a copy when the gradient is strided."""
    return grad._array.ravel()


def _to_array(value):
    """The ndarray behind a cnncy tensor, a numpy array, or another array-like (a torch tensor)."""
    if isinstance(value, Tensor):
        return value._array
    if hasattr(value, "__array__"):
        return np.asarray(value)
    return None


class Optimizer:
    """Base class for all optimizers (like torch.optim.Optimizer).

    Args:
        params (iterable): Tensors to optimize, or dicts defining parameter groups
            (each with a 'params' entry and per-group option overrides).
        defaults (dict): default values of the optimization options, used for a
            group that does not give its own.
    """

    def __init__(self, params, defaults):
        if defaults.get("differentiable", False):
            raise NotImplementedError(f"{type(self).__name__}: differentiable=True is not supported by cnncy")
        self.defaults = defaults
        if isinstance(params, Tensor):
            raise TypeError("params argument given to the optimizer should be an iterable of "
                            "Tensors or dicts, but got " + _typename(params))
        self.state = defaultdict(dict)
        self.param_groups = []

        param_groups = list(params)
        if len(param_groups) == 0:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(param_groups[0], dict):
            param_groups = [{"params": param_groups}]
        for param_group in param_groups:
            self.add_param_group(param_group)

    def __getstate__(self):
        return {"defaults": self.defaults, "state": self.state, "param_groups": self.param_groups}

    def __setstate__(self, state):
        self.__dict__.update(state)

    def __repr__(self):
        text = type(self).__name__ + " ("
        for i, group in enumerate(self.param_groups):
            text += f"\nParameter Group {i}\n"
            text += "".join(f"    {key}: {group[key]}\n" for key in sorted(group) if key != "params")
        return text + ")"

    # ------------------------------------------------------------- parameter groups
    def add_param_group(self, param_group):
        """Add a group of parameters, with its own options, to `param_groups`."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group)}")
        params = param_group["params"]
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, set):
            raise TypeError("optimizer parameters need to be organized in ordered collections, but "
                            "the ordering of tensors in sets will change between runs. "
                            "Please use a list instead.")
        else:
            params = list(params)

        # named_parameters() yields (name, tensor) pairs; torch keeps the names.
        names = [p[0] for p in params if isinstance(p, tuple)]
        tensors = [p[1] if isinstance(p, tuple) else p for p in params]
        param_group["params"] = tensors
        if names:
            if len(names) != len(tensors):
                raise ValueError("all optimizer params should be with/without names. "
                                 "Some param names are missing")
            param_group["param_names"] = names

        for param in tensors:
            if not isinstance(param, Tensor):
                raise TypeError("optimizer can only optimize Tensors, but one of the params is "
                                + _typename(param))
            if not (param.is_leaf or getattr(param, "_retains_grad", False)):
                raise ValueError("can't optimize a non-leaf Tensor")

        for name, default in self.defaults.items():
            param_group.setdefault(name, default)

        ids = [id(p) for p in tensors]
        if len(ids) != len(set(ids)):
            warnings.warn("optimizer contains a parameter group with duplicate parameters; "
                          "in future, this will cause an error; "
                          "see github.com/pytorch/pytorch/issues/40967 for more information",
                          stacklevel=user_stacklevel())
        existing = set()
        for group in self.param_groups:
            existing.update(id(p) for p in group["params"])
            if ("param_names" in param_group) != ("param_names" in group):
                which = "with names" if "param_names" in param_group else "without names"
                raise ValueError("all optimizer param groups should be with/without names. "
                                 f"cannot add param group {which} to the optimizer")
        if not existing.isdisjoint(ids):
            raise ValueError("some parameters appear in more than one parameter group")
        self.param_groups.append(param_group)

    # ------------------------------------------------------------- gradients
    def zero_grad(self, set_to_none=True):
        """Reset the gradients of all optimized tensors: to None (default) or to zeros in place."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    grad = p.grad
                    grad.grad_fn = None  # torch detaches the gradient before zeroing it
                    grad.requires_grad = False
                    grad._array.fill(0)

    def step(self, closure=None):
        """Perform one optimization step; returns what `closure` (which recomputes the loss) returns."""
        raise NotImplementedError

    # ------------------------------------------------------------- checkpoints
    def state_dict(self):
        """The optimizer's state as a dict: 'state' (per parameter, keyed by position) and 'param_groups'.

        Like torch, the state tensors are the live ones, not copies.
        """
        positions = {}
        packed_groups = []
        start = 0
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            # Numbered as torch does: by position over all group entries, the last one
            # within a group when a parameter repeats there.
            positions.update({id(p): i for i, p in enumerate(group["params"], start)
                              if id(p) not in positions})
            packed["params"] = [positions[id(p)] for p in group["params"]]
            start += len(packed["params"])
            packed_groups.append(packed)
        packed_state = {(positions[id(k)] if isinstance(k, Tensor) else k): v
                        for k, v in self.state.items()}
        return {"state": packed_state, "param_groups": packed_groups}

    def load_state_dict(self, state_dict):
        """Load a state made by `state_dict()` (ours or torch's) into an optimizer over matching groups."""
        groups = self.param_groups
        saved_groups = deepcopy(state_dict["param_groups"])
        if len(groups) != len(saved_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        if any(len(g["params"]) != len(s["params"]) for g, s in zip(groups, saved_groups)):
            raise ValueError("loaded state dict contains a parameter group "
                             "that doesn't match the size of optimizer's group")
        id_map = dict(zip(chain.from_iterable(g["params"] for g in saved_groups),
                          chain.from_iterable(g["params"] for g in groups)))

        state = defaultdict(dict)
        for key, value in state_dict["state"].items():
            if key in id_map:
                param = id_map[key]
                state[param] = self._cast_state(param, value)
            else:
                state[key] = value

        for group, saved in zip(groups, saved_groups):
            saved["params"] = group["params"]
            if "param_names" in group and "param_names" not in saved:
                saved["param_names"] = group["param_names"]
        self.__setstate__({"state": state, "param_groups": saved_groups})

    @classmethod
    def _cast_state(cls, param, value, key=None):
        """A private copy of a saved state value: arrays become contiguous tensors of the
        parameter's dtype, except 'step', which keeps its own dtype (as torch)."""
        if isinstance(value, dict):
            return {k: cls._cast_state(param, v, k) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(cls._cast_state(param, v) for v in value)
        array = _to_array(value)
        if array is None:
            return value
        dtype = param.dtype if key != "step" and param.dtype.kind == "f" else None
        return Tensor._wrap(np.array(array, dtype=dtype, order="C", copy=True))
