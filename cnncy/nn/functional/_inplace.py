"""Torch's in-place semantics for ops whose autograd Function can write into its input."""
from ...tensor import Tensor


def apply_inplace(op, function, input, *args):
    """Run `function.apply(input, *args)` so that its result lands in input's own array.

    `function.forward` must write its result into the array of its first argument.
    The input tensor itself is returned, as torch returns it from an in-place op; when
    a graph is recorded, input becomes the new node's output and the node's edge leads
    to a stand-in that carries input's former place in the graph.
    """
    input._check_inplace(op)
    before = Tensor._wrap(input._array, input.requires_grad)
    before.grad_fn = input.grad_fn
    result = function.apply(before, *args)
    if result.grad_fn is not None:
        input.grad_fn = result.grad_fn
        input._requires_grad = True
    return input
