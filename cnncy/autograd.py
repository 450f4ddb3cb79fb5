"""Reverse-mode autograd: graph nodes and the backward pass.

An op is a subclass of Function with two static methods side by side:

    class Exp(Function):
        @staticmethod
        def forward(ctx, x):              # ndarrays in, ndarray out
            out = np.exp(x)
            ctx.save_for_backward(out)    # what backward needs
            return out

        @staticmethod
        def backward(ctx, grad_out):      # one gradient per forward argument
            (out,) = ctx.saved_tensors
            return grad_out * out

`Exp.apply(tensor)` unwraps Tensors to ndarrays, runs forward and, when a
gradient is wanted, records the call's context as the output's `grad_fn`.
The context *is* the graph node: it keeps the input Tensors that need a gradient
(the edges), the saved arrays and whatever attributes forward set on it.
"""
import contextlib
import sys

import numpy as np

_grad_enabled = True


def is_grad_enabled():
    return _grad_enabled


class set_grad_enabled(contextlib.ContextDecorator):
    """Context manager / decorator that turns graph recording on or off."""

    def __init__(self, mode):
        self.mode = bool(mode)
        self.previous = []

    def __enter__(self):
        global _grad_enabled
        self.previous.append(_grad_enabled)
        _grad_enabled = self.mode

    def __exit__(self, *exc):
        global _grad_enabled
        _grad_enabled = self.previous.pop()
        return False


class no_grad(set_grad_enabled):
    """Like torch.no_grad(): ops inside record no graph."""

    def __init__(self):
        super().__init__(False)


class enable_grad(set_grad_enabled):
    def __init__(self):
        super().__init__(True)


class Context:
    """One node of the graph: what forward saved, and the edges to its inputs."""

    __slots__ = ("function", "edges", "needs_input_grad", "_saved", "_freed", "__dict__")

    def __init__(self, function, edges, needs_input_grad):
        self.function = function
        self.edges = edges  # (argument position, Tensor) of each input that needs a gradient
        self.needs_input_grad = needs_input_grad
        self._saved = ()
        self._freed = False

    def save_for_backward(self, *arrays):
        self._saved = arrays

    @property
    def saved_tensors(self):
        if self._freed:
            raise RuntimeError(
                f"{self.name()}: trying to backward through the graph a second time (or directly "
                "access saved tensors after they have already been freed). Saved intermediate values "
                "of the graph are freed when you call .backward(). Specify retain_graph=True if you "
                "need to backward through the graph a second time.")
        return self._saved

    def release(self):
        # Only nodes that saved something can fail a second backward, as in torch.
        if self._saved:
            self._saved = ()
            self._freed = True

    def name(self):
        return self.function.__name__ + "Backward"

    def __repr__(self):
        return f"<{self.name()}>"


class Function:
    """Base class of every differentiable op; see the module docstring."""

    @staticmethod
    def forward(ctx, *args):
        raise NotImplementedError

    @staticmethod
    def backward(ctx, grad_output):
        raise NotImplementedError

    @classmethod
    def apply(cls, *args):
        # One pass over the arguments: this runs for every op, so it is kept lean.
        raw, needs_input_grad, edges = [], [], []
        for a in args:
            if isinstance(a, _tensor.Tensor):
                raw.append(a._array)
                needs_input_grad.append(a._requires_grad)
                if a._requires_grad:
                    edges.append((len(raw) - 1, a))
            else:
                raw.append(a)
                needs_input_grad.append(False)
        record = _grad_enabled and bool(edges)
        ctx = Context(cls, edges if record else (), tuple(needs_input_grad))
        result = _tensor.Tensor._wrap(cls.forward(ctx, *raw), record)
        if record:
            result.grad_fn = ctx
        return result


def _topological_order(root_node):
    """Nodes reachable from root_node, each after every node that consumes its output."""
    order, visited = [], set()
    stack = [(root_node, False)]
    while stack:
        node, children_done = stack.pop()
        if children_done:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        for _, inp in node.edges:
            parent = inp.grad_fn
            if parent is not None and id(parent) not in visited:
                stack.append((parent, False))
    order.reverse()
    return order


def _accumulate_leaf(tensor, grad, owned=False):
    """Add grad into tensor.grad; `owned`: no one else holds grad, so it may become tensor.grad uncopied."""
    if grad.shape != tensor._array.shape:
        raise RuntimeError(f"autograd: gradient of shape {grad.shape} for a tensor of shape {tensor.shape}")
    if tensor.grad is None:
        if not owned or grad.dtype != tensor.dtype:
            grad = np.array(grad, dtype=tensor.dtype, copy=True)
        tensor.grad = _tensor.Tensor._wrap(grad)
    else:
        tensor.grad._array += grad


def run_backward(root, grad, retain_graph=False):
    """Backpropagate `grad` (an ndarray shaped like root) through root's graph."""
    _tensor.materialise_deferred()  # before the optimizer step that usually follows changes the parameters
    node = root.grad_fn
    if node is None:
        _accumulate_leaf(root, grad)
        return
    pending = {id(node): grad}
    for node in _topological_order(node):
        grad_out = pending.pop(id(node), None)
        if grad_out is None:
            continue
        input_grads = node.function.backward(node, grad_out)
        if not isinstance(input_grads, tuple):
            input_grads = (input_grads,)
        for index, inp in node.edges:
            g = input_grads[index]
            if g is None:
                continue
            parent = inp.grad_fn
            if parent is None:
                # Referenced only by input_grads, g and getrefcount's argument (and its memory by
                # nothing else): the backward made it for this input alone, so it can become .grad.
                owned = (sys.getrefcount(g) == 3 and (g.base is None or sys.getrefcount(g.base) == 2)
                         and g.flags.c_contiguous and g.flags.writeable)
                _accumulate_leaf(inp, g, owned)
                continue
            if inp._retains_grad:
                _accumulate_leaf(inp, g)
            key = id(parent)
            pending[key] = g if key not in pending else pending[key] + g
        if not retain_graph:
            node.release()


# tensor.py imports this module: its names are looked up at call time, whichever module loads first.
from . import tensor as _tensor  # noqa: E402
