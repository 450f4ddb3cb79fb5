"""nn.Module: the base class of every layer and model, as torch.nn.Module.

Assigning a Parameter or a Module to an attribute registers it, so that
parameters(), state_dict() and friends find it, in assignment order.
"""
from collections import OrderedDict, namedtuple

import numpy as np

from ...tensor import Tensor, _normalize_dtype
from ..parameter import Parameter

_IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


def _as_array(value, key):
    if isinstance(value, Tensor):
        return value._array
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach") and hasattr(value, "numpy"):  # a torch tensor
        return value.detach().cpu().numpy()
    raise TypeError(f"load_state_dict: value for '{key}' must be a tensor or a numpy array, "
                    f"got {type(value).__name__}")


_TABLES = ("_parameters", "_buffers", "_modules")  # in the order attribute lookup searches them


class _Members(OrderedDict):
    """One of a Module's tables (parameters, buffers, submodules) that also keeps each of its names
    in the module's __dict__, bound to what `module.name` returns.

    Why: `model.conv1` and `self.weight` are read on every forward.  Were they only in the tables
    (as in torch), each read would reach Module.__getattr__ after Python's ordinary lookup has built,
    raised and cleared an AttributeError: about 0.3 us each on Python 3.11, 2 us per SimpleCNN step.
    Every change to a table, direct changes such as `module._modules[name] = m` included, goes
    through __setitem__, __delitem__ (OrderedDict's update and setdefault call them on a subclass),
    pop, popitem or clear, which then set the name in __dict__ anew from the tables.
    """

    def __init__(self, instance_dict=None):
        super().__init__()
        self._instance_dict = instance_dict  # None: a detached copy, which mirrors nothing

    def __setitem__(self, name, value):
        super().__setitem__(name, value)
        self._mirror(name)

    def __delitem__(self, name):
        super().__delitem__(name)
        self._mirror(name)

    def pop(self, name, *default):
        value = super().pop(name, *default)
        self._mirror(name)
        return value

    def popitem(self, last=True):
        name, value = super().popitem(last)
        self._mirror(name)
        return name, value

    def clear(self):
        names = list(self)
        super().clear()
        for name in names:
            self._mirror(name)

    def _mirror(self, name):
        """Bind name in the module's __dict__ to its entry in the first table that has it, as
        Module.__getattr__ finds it; drop it when no table has it."""
        instance_dict = self._instance_dict
        if instance_dict is None:
            return
        for table in _TABLES:
            entries = instance_dict.get(table)
            if entries is not None and name in entries:
                instance_dict[name] = entries[name]
                return
        instance_dict.pop(name, None)


class Module:
    """Base class for all neural network modules; subclasses define __init__ and forward."""

    def __init__(self):
        for table in _TABLES:
            object.__setattr__(self, table, _Members(self.__dict__))
        object.__setattr__(self, "training", True)

    # A copy or an unpickled module gets tables of its own that mirror into its own __dict__.
    def __getstate__(self):
        state = dict(self.__dict__)
        for table in _TABLES:
            entries = state[table]
            for name in entries:
                state.pop(name, None)
            state[table] = OrderedDict(entries)
        return state

    def __setstate__(self, state):
        state = dict(state)
        tables = {table: state.pop(table) for table in _TABLES}
        self.__dict__.update(state)
        for table in _TABLES:
            object.__setattr__(self, table, _Members(self.__dict__))
        for table in _TABLES:
            getattr(self, table).update(tables[table])

    # ------------------------------------------------------------- registration
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError("cannot assign to a Module before Module.__init__() call")
        params, buffers, modules = self._parameters, self._buffers, self._modules
        if isinstance(value, (Parameter, Module)):
            for table in (params, buffers, modules):
                table.pop(name, None)
            self.__dict__.pop(name, None)
            (params if isinstance(value, Parameter) else modules)[name] = value
        elif name in params:
            if value is not None:
                raise TypeError(f"cannot assign '{type(value).__name__}' as parameter '{name}' "
                                "(nn.Parameter or None expected)")
            params[name] = None
        elif name in modules:
            if value is not None:
                raise TypeError(f"cannot assign '{type(value).__name__}' as child module '{name}' "
                                "(nn.Module or None expected)")
            modules[name] = None
        elif name in buffers:
            buffers[name] = value
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name):
        for table in ("_parameters", "_buffers", "_modules"):
            entries = self.__dict__.get(table)
            if entries is not None and name in entries:
                return entries[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name):
        for table in (self._parameters, self._buffers, self._modules):
            if name in table:
                del table[name]
                return
        object.__delattr__(self, name)

    def register_parameter(self, name, param):
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"cannot assign '{type(param).__name__}' object to parameter '{name}' "
                            "(nn.Parameter or None required)")
        self.__dict__.pop(name, None)
        self._parameters[name] = param

    def register_buffer(self, name, tensor, persistent=True):
        self.__dict__.pop(name, None)
        self._buffers[name] = tensor

    def add_module(self, name, module):
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(module).__name__} is not a Module subclass")
        self.__dict__.pop(name, None)
        self._modules[name] = module

    register_module = add_module

    # ------------------------------------------------------------- running
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f'Module [{type(self).__name__}] is missing the required "forward" function')

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # ------------------------------------------------------------- traversal
    def named_modules(self, memo=None, prefix=""):
        memo = set() if memo is None else memo
        if id(self) in memo:
            return
        memo.add(id(self))
        yield prefix, self
        for name, module in self._modules.items():
            if module is not None:
                yield from module.named_modules(memo, prefix + ("." if prefix else "") + name)

    def modules(self):
        for _, module in self.named_modules():
            yield module

    def named_children(self):
        for name, module in self._modules.items():
            if module is not None:
                yield name, module

    def children(self):
        for _, module in self.named_children():
            yield module

    def _named_members(self, table, prefix, recurse):
        seen = set()
        modules = self.named_modules(prefix=prefix) if recurse else [(prefix, self)]
        for module_prefix, module in modules:
            for name, value in getattr(module, table).items():
                if value is None or id(value) in seen:
                    continue
                seen.add(id(value))
                yield module_prefix + ("." if module_prefix else "") + name, value

    def named_parameters(self, prefix="", recurse=True):
        return self._named_members("_parameters", prefix, recurse)

    def parameters(self, recurse=True):
        for _, param in self.named_parameters(recurse=recurse):
            yield param

    def named_buffers(self, prefix="", recurse=True):
        return self._named_members("_buffers", prefix, recurse)

    def buffers(self, recurse=True):
        for _, buffer in self.named_buffers(recurse=recurse):
            yield buffer

    def apply(self, fn):
        for module in self.children():
            module.apply(fn)
        fn(self)
        return self

    # ------------------------------------------------------------- modes and gradients
    def train(self, mode=True):
        if not isinstance(mode, bool):
            raise ValueError("training mode is expected to be boolean")
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self):
        return self.train(False)

    def requires_grad_(self, requires_grad=True):
        for param in self.parameters():
            param.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none=True):
        for param in self.parameters():
            if param.grad is None:
                continue
            if set_to_none:
                param.grad = None
            else:
                param.grad._array[...] = 0

    # ------------------------------------------------------------- dtype
    def to(self, *args, **kwargs):
        """Convert parameters and buffers to a floating dtype; devices other than 'cpu' are refused."""
        dtype = kwargs.get("dtype")
        for arg in args + tuple(v for k, v in kwargs.items() if k == "device"):
            if isinstance(arg, str):
                if arg != "cpu":
                    raise RuntimeError(f"cnncy runs on the CPU only; cannot move a module to '{arg}'")
            else:
                dtype = arg
        if dtype is None:
            return self
        dtype = _normalize_dtype(dtype)
        if dtype.kind != "f":
            raise TypeError(f"nn.Module.to only accepts floating point dtypes, but got desired dtype={dtype}")
        for tensor in list(self.parameters()) + list(self.buffers()):
            if tensor.dtype.kind == "f":
                tensor._array = tensor._array.astype(dtype)
                if tensor.grad is not None:
                    tensor.grad._array = tensor.grad._array.astype(dtype)
        return self

    def float(self):
        return self.to(np.float32)

    def double(self):
        return self.to(np.float64)

    def cpu(self):
        return self

    # ------------------------------------------------------------- state dict
    def state_dict(self, destination=None, prefix="", keep_vars=False):
        destination = OrderedDict() if destination is None else destination
        for module_prefix, module in self.named_modules(prefix=prefix.rstrip(".")):
            dot = "." if module_prefix else ""
            for table in (module._parameters, module._buffers):
                for name, value in table.items():
                    if value is not None:
                        destination[module_prefix + dot + name] = value if keep_vars else value.detach()
        return destination

    def load_state_dict(self, state_dict, strict=True):
        """Copy values (cnncy tensors, numpy arrays or torch tensors) into this module's parameters."""
        if not hasattr(state_dict, "keys"):
            raise TypeError(f"Expected state_dict to be dict-like, got {type(state_dict).__name__}.")
        own = self.state_dict(keep_vars=True)
        missing = [key for key in own if key not in state_dict]
        unexpected = [key for key in state_dict if key not in own]
        errors = []
        if strict:
            if unexpected:
                errors.append("Unexpected key(s) in state_dict: " + ", ".join(f'"{k}"' for k in unexpected) + ". ")
            if missing:
                errors.append("Missing key(s) in state_dict: " + ", ".join(f'"{k}"' for k in missing) + ". ")
        updates = []
        for key, target in own.items():
            if key not in state_dict:
                continue
            source = _as_array(state_dict[key], key)
            if source.shape != target._array.shape:
                errors.append(f"size mismatch for {key}: copying a param with shape {list(source.shape)} from "
                              f"checkpoint, the shape in current model is {list(target._array.shape)}.")
                continue
            updates.append((target, source))
        if errors:
            raise RuntimeError(f"Error(s) in loading state_dict for {type(self).__name__}:\n\t" + "\n\t".join(errors))
        for target, source in updates:  # only after every check passed: no half-loaded model
            np.copyto(target._array, source, casting="unsafe")
        return _IncompatibleKeys(missing, unexpected)

    # ------------------------------------------------------------- printing
    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = []
        extra = self.extra_repr()
        if extra:
            lines = extra.split("\n")
        for name, module in self._modules.items():
            body = repr(module).replace("\n", "\n  ")
            lines.append(f"({name}): {body}")
        main = type(self).__name__ + "("
        if lines:
            if len(lines) == 1 and not self._modules:
                return main + lines[0] + ")"
            main += "\n  " + "\n  ".join(lines) + "\n"
        return main + ")"

    def __dir__(self):
        return list(super().__dir__()) + list(self._parameters) + list(self._modules) + list(self._buffers)
