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

    # True where backward returns, for each input, an array it allocated for that input alone (or
    # a view of all of one) and keeps no other reference to.  The engine then hands such an array
    # to a leaf as its .grad without copying it; any other Function's gradients are copied first.
    fresh_input_grads = False

    @staticmethod
    def forward(ctx, *args):
        raise NotImplementedError

    @staticmethod
    def backward(ctx, grad_output):
        raise NotImplementedError

    @classmethod
    def apply(cls, *args):
        # One pass over the arguments: this runs for every op, so it is kept lean.
        tensor_type = _tensor.Tensor
        raw, needs_input_grad, edges = [], [], []
        index = 0
        for a in args:
            if isinstance(a, tensor_type):
                raw.append(a._array)
                needs_input_grad.append(a._requires_grad)
                if a._requires_grad:
                    edges.append((index, a))
            else:
                raw.append(a)
                needs_input_grad.append(False)
            index += 1
        record = _grad_enabled and bool(edges)
        ctx = Context(cls, edges if record else (), tuple(needs_input_grad))
        result = tensor_type._wrap(cls.forward(ctx, *raw), record)
        if record:
            result.grad_fn = ctx
        return result


def _dependencies(root_node):
    """{node: how many edges from the nodes reachable from root_node lead to it}, for every such node."""
    counts = {root_node: 0}
    stack = [root_node]
    while stack:
        for _, inp in stack.pop().edges:
            parent = inp.grad_fn
            if parent is None:
                continue
            if parent in counts:
                counts[parent] += 1
            else:
                counts[parent] = 1
                stack.append(parent)
    return counts


def _accumulate_leaf(tensor, grad, owned=False):
    """Add grad into tensor.grad; `owned`: no one else holds grad, so it may become tensor.grad uncopied."""
    array = tensor._array
    if grad.shape != array.shape:
        raise RuntimeError(f"autograd: gradient of shape {grad.shape} for a tensor of shape {array.shape}")
    if tensor.grad is None:
        if not owned or grad.dtype != array.dtype:
            grad = np.array(grad, dtype=array.dtype, copy=True)
        tensor.grad = _tensor.Tensor._wrap(grad)
    else:
        tensor.grad._array += grad


def run_backward(root, grad, retain_graph=False):
    """Backpropagate `grad` (an ndarray shaped like root) through root's graph.

    A node runs once every node that consumes its output has passed its gradient on (the
    gradients arriving from several consumers are summed first), as in torch's engine.
    """
    _tensor.materialise_deferred()  # before the optimizer step that usually follows changes the parameters
    root_node = root.grad_fn
    if root_node is None:
        _accumulate_leaf(root, grad)
        return
    waiting = _dependencies(root_node)
    pending = {root_node: grad}
    ready = [root_node]
    while ready:
        node = ready.pop()
        grad_out = pending.pop(node, None)
        input_grads = ()
        if grad_out is not None:  # else no gradient reached this node: nothing to run
            input_grads = node.function.backward(node, grad_out)
            if not isinstance(input_grads, tuple):
                input_grads = (input_grads,)
            if not retain_graph:
                node.release()
        fresh = node.function.fresh_input_grads
        for index, inp in node.edges:
            g = input_grads[index] if input_grads else None
            parent = inp.grad_fn
            if parent is None:
                if g is not None:
                    _accumulate_leaf(inp, g, fresh)
                continue
            if g is not None:
                if inp._retains_grad:
                    _accumulate_leaf(inp, g)
                pending[parent] = g if parent not in pending else pending[parent] + g
            waiting[parent] -= 1
            if waiting[parent] == 0:
                ready.append(parent)


# tensor.py imports this module: its names are looked up at call time, whichever module loads first.
from . import tensor as _tensor  # noqa: E402
