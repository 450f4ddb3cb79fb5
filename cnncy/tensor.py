"""cnncy.Tensor: an ndarray with a gradient and a place in the autograd graph.

The array lives in `Tensor._array`; `.numpy()` hands it out without a copy.
The elementwise and shape ops that ordinary training code needs are defined
here as small autograd Functions; the heavy ops (conv, pooling, linear,
losses) live in cnncy.nn.functional and run on the Cython kernels.
"""
import math
import numbers
import weakref

import numpy as np

from .autograd import Function, is_grad_enabled, run_backward, set_grad_enabled

float32 = np.dtype(np.float32)
float64 = np.dtype(np.float64)
int64 = np.dtype(np.int64)
int32 = np.dtype(np.int32)
uint8 = np.dtype(np.uint8)
bool_ = np.dtype(np.bool_)

_FLOAT_DTYPES = (float32, float64)


def _normalize_dtype(dtype):
    if dtype is None:
        return None
    if dtype is float:  # torch accepts the Python type float for the default float dtype
        return float32
    if dtype is int:
        return int64
    return np.dtype(dtype)


def _as_array(data, dtype=None):
    """Torch's rules for tensor(data): Python floats become float32, ints int64."""
    if isinstance(data, Tensor):
        data = data._array
    if isinstance(data, np.ndarray):
        array = np.array(data, copy=True)
    else:
        array = np.array(data)
        if array.dtype == np.float64:
            array = array.astype(np.float32)
        elif array.dtype.kind in "iu":
            array = array.astype(np.int64)
        elif array.dtype.kind not in "fb":
            raise TypeError(f"tensor(): could not infer a numeric dtype from {type(data).__name__}")
    if dtype is not None:
        array = array.astype(_normalize_dtype(dtype), copy=False)
    return array


def _unbroadcast(grad, shape):
    """Sum a broadcast gradient back down to `shape`."""
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra:
        grad = grad.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad


def _operand(value, like):
    """Turn the other side of a binary op into something numpy combines like torch does."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (bool, numbers.Number)):
        # A Python scalar keeps the tensor's dtype (torch's type promotion for scalars).
        dtype = like.dtype if like.dtype.kind == "f" or isinstance(value, numbers.Integral) else float32
        return np.asarray(value, dtype=dtype)
    if isinstance(value, np.ndarray):
        return Tensor._wrap(value)
    return NotImplemented


# ----------------------------------------------------------------- elementwise ops

class Add(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = (np.shape(a), np.shape(b))
        return np.add(a, b)

    @staticmethod
    def backward(ctx, grad):
        a_shape, b_shape = ctx.shapes
        return _unbroadcast(grad, a_shape), _unbroadcast(grad, b_shape)


class Sub(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = (np.shape(a), np.shape(b))
        return np.subtract(a, b)

    @staticmethod
    def backward(ctx, grad):
        a_shape, b_shape = ctx.shapes
        return _unbroadcast(grad, a_shape), _unbroadcast(-grad, b_shape)


class Mul(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return np.multiply(a, b)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        grad_a = _unbroadcast(grad * b, np.shape(a)) if ctx.needs_input_grad[0] else None
        grad_b = _unbroadcast(grad * a, np.shape(b)) if ctx.needs_input_grad[1] else None
        return grad_a, grad_b


class Div(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return np.divide(a, b)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        grad_a = _unbroadcast(grad / b, np.shape(a)) if ctx.needs_input_grad[0] else None
        grad_b = _unbroadcast(-grad * a / (b * b), np.shape(b)) if ctx.needs_input_grad[1] else None
        return grad_a, grad_b


class Neg(Function):
    @staticmethod
    def forward(ctx, a):
        return np.negative(a)

    @staticmethod
    def backward(ctx, grad):
        return -grad


class Pow(Function):
    @staticmethod
    def forward(ctx, a, exponent):
        ctx.save_for_backward(a)
        ctx.exponent = exponent
        return np.power(a, np.asarray(exponent, dtype=a.dtype))

    @staticmethod
    def backward(ctx, grad):
        (a,) = ctx.saved_tensors
        e = ctx.exponent
        return grad * (e * np.power(a, np.asarray(e - 1, dtype=a.dtype))), None


class Exp(Function):
    @staticmethod
    def forward(ctx, a):
        out = np.exp(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved_tensors
        return grad * out


class Log(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return np.log(a)

    @staticmethod
    def backward(ctx, grad):
        (a,) = ctx.saved_tensors
        return grad / a


class MatMul(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return np.matmul(a, b)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        if a.ndim != 2 or b.ndim != 2:
            raise RuntimeError("matmul: backward is implemented for 2-D operands only")
        grad_a = grad @ b.T if ctx.needs_input_grad[0] else None
        grad_b = a.T @ grad if ctx.needs_input_grad[1] else None
        return grad_a, grad_b


# ----------------------------------------------------------------- reductions

def _normalize_dims(dim, ndim):
    if dim is None:
        return None
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    out = []
    for d in dims:
        if not -max(ndim, 1) <= d < max(ndim, 1):
            raise IndexError(f"Dimension out of range (expected to be in range of "
                             f"[{-max(ndim, 1)}, {max(ndim, 1) - 1}], but got {d})")
        out.append(d % max(ndim, 1))
    return tuple(out)


class Sum(Function):
    @staticmethod
    def forward(ctx, a, dims, keepdim):
        ctx.shape, ctx.dims, ctx.keepdim = a.shape, dims, keepdim
        return np.asarray(np.sum(a, axis=dims, keepdims=keepdim))

    @staticmethod
    def backward(ctx, grad):
        if ctx.dims is not None and not ctx.keepdim:
            grad = np.expand_dims(grad, ctx.dims)
        return np.broadcast_to(grad, ctx.shape), None, None


class Mean(Function):
    @staticmethod
    def forward(ctx, a, dims, keepdim):
        ctx.shape, ctx.dims, ctx.keepdim = a.shape, dims, keepdim
        return np.asarray(np.mean(a, axis=dims, keepdims=keepdim))

    @staticmethod
    def backward(ctx, grad):
        count = np.prod([ctx.shape[d] for d in ctx.dims]) if ctx.dims is not None else np.prod(ctx.shape)
        if ctx.dims is not None and not ctx.keepdim:
            grad = np.expand_dims(grad, ctx.dims)
        return np.broadcast_to(grad / grad.dtype.type(count), ctx.shape), None, None


# ----------------------------------------------------------------- shape ops

class View(Function):
    @staticmethod
    def forward(ctx, a, shape):
        ctx.shape = a.shape
        return a.reshape(shape)

    @staticmethod
    def backward(ctx, grad):
        return grad.reshape(ctx.shape), None


class Index(Function):
    @staticmethod
    def forward(ctx, a, key):
        ctx.shape, ctx.dtype, ctx.key = a.shape, a.dtype, key
        return np.array(a[key])

    @staticmethod
    def backward(ctx, grad):
        grad_a = np.zeros(ctx.shape, dtype=ctx.dtype)
        np.add.at(grad_a, ctx.key, grad)
        return grad_a, None


class Transpose(Function):
    @staticmethod
    def forward(ctx, a, dim0, dim1):
        ctx.dims = (dim0, dim1)
        return np.swapaxes(a, dim0, dim1)

    @staticmethod
    def backward(ctx, grad):
        return np.swapaxes(grad, *ctx.dims), None, None


class Cast(Function):
    @staticmethod
    def forward(ctx, a, dtype):
        ctx.dtype = a.dtype
        return a.astype(dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad.astype(ctx.dtype), None


def _check_view_shape(shape, numel, op="view"):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    shape = tuple(map(int, shape))
    known = 1
    inferred = None
    for position, s in enumerate(shape):  # errors in dimension order, as torch's infer_size
        if s == -1:
            if inferred is not None:
                raise RuntimeError("only one dimension can be inferred")
            inferred = position
        elif s < 0:
            raise RuntimeError(f"invalid shape dimension {s}")
        else:
            known *= s
    if inferred is not None:
        if known == 0 or numel % known:
            raise RuntimeError(f"shape '{list(shape)}' is invalid for input of size {numel}")
        shape = shape[:inferred] + (numel // known,) + shape[inferred + 1:]
    elif known != numel:
        raise RuntimeError(f"shape '{list(shape)}' is invalid for input of size {numel}")
    return shape


class Tensor:
    """A multi-dimensional array that can take part in autograd (like torch.Tensor)."""

    __array_priority__ = 1000  # so ndarray <op> Tensor defers to Tensor's reflected op

    def __init__(self, data, requires_grad=False):
        self._array = data if isinstance(data, np.ndarray) else _as_array(data)
        self.grad = None
        self.grad_fn = None
        self._retains_grad = False
        self.requires_grad = requires_grad

    @classmethod
    def _wrap(cls, array, requires_grad=False):
        t = cls.__new__(cls)
        t._array = array if isinstance(array, np.ndarray) else np.asarray(array)
        t.grad = None
        t.grad_fn = None
        t._retains_grad = False
        t._requires_grad = requires_grad
        return t

    # ------------------------------------------------------------- attributes
    @property
    def requires_grad(self):
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value):
        if value and self._array.dtype not in _FLOAT_DTYPES:
            raise RuntimeError(f"only Tensors of floating point dtype can require gradients, "
                               f"got {self._array.dtype}")
        if not value and self.grad_fn is not None:
            raise RuntimeError("you can only change requires_grad flags of leaf variables.")
        self._requires_grad = bool(value)

    def requires_grad_(self, requires_grad=True):
        self.requires_grad = requires_grad
        return self

    @property
    def is_leaf(self):
        return self.grad_fn is None

    def retain_grad(self):
        if not self.requires_grad:
            raise RuntimeError("can't retain_grad on Tensor that has requires_grad=False")
        self._retains_grad = self.grad_fn is not None

    @property
    def data(self):
        return Tensor._wrap(self._array)

    @data.setter
    def data(self, value):
        self._array = value._array if isinstance(value, Tensor) else np.asarray(value)

    @property
    def shape(self):
        return Size(self._array.shape)

    def size(self, dim=None):
        if dim is None:
            return Size(self._array.shape)
        (d,) = _normalize_dims(dim, self.ndim)
        return self._array.shape[d]

    @property
    def dtype(self):
        return self._array.dtype

    @property
    def ndim(self):
        return self._array.ndim

    def dim(self):
        return self._array.ndim

    def numel(self):
        return int(self._array.size)

    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self._array.shape[0]

    @property
    def T(self):
        if self.ndim != 2:
            raise RuntimeError(f"T: expected a 2-D tensor, got {self.ndim}-D")
        return Transpose.apply(self, 0, 1)

    def t(self):
        return self.T

    def transpose(self, dim0, dim1):
        d0, d1 = _normalize_dims((dim0, dim1), self.ndim)
        return Transpose.apply(self, d0, d1)

    def is_contiguous(self):
        return bool(self._array.flags.c_contiguous)

    def contiguous(self):
        if self.is_contiguous():
            return self
        return _Contiguous.apply(self)

    # ------------------------------------------------------------- conversion
    def numpy(self):
        if self.requires_grad:
            raise RuntimeError("Can't call numpy() on Tensor that requires grad. "
                               "Use tensor.detach().numpy() instead.")
        return self._array

    def __array__(self, dtype=None, copy=None):
        return self._array if dtype is None else self._array.astype(dtype)

    def item(self):
        if self._array.size != 1:
            raise RuntimeError(f"a Tensor with {self._array.size} elements cannot be converted to Scalar")
        return self._array.reshape(()).item()

    def tolist(self):
        return self._array.tolist()

    def detach(self):
        return Tensor._wrap(self._array)

    def clone(self):
        return _Contiguous.apply(self, True)

    def to(self, dtype):
        dtype = _normalize_dtype(dtype)
        if dtype == self.dtype:
            return self
        return Cast.apply(self, dtype)

    def type(self, dtype):
        return self.to(dtype)

    def float(self):
        return self.to(float32)

    def double(self):
        return self.to(float64)

    def long(self):
        return self.to(int64)

    def cpu(self):
        return self

    # ------------------------------------------------------------- in-place
    def _check_inplace(self, op):
        materialise_deferred()  # a deferred result must not see the new values of its inputs
        if is_grad_enabled() and self.requires_grad and self.grad_fn is None:
            raise RuntimeError(f"a leaf Variable that requires grad is being used in an in-place "
                               f"operation ({op}).")

    def zero_(self):
        self._check_inplace("zero_")
        self._array[...] = 0
        return self

    def fill_(self, value):
        self._check_inplace("fill_")
        self._array[...] = value
        return self

    def copy_(self, src):
        self._check_inplace("copy_")
        src = src._array if isinstance(src, Tensor) else np.asarray(src)
        np.copyto(self._array, np.broadcast_to(src, self._array.shape), casting="unsafe")
        return self

    def _inplace(self, op, other):
        self._check_inplace(op.__name__)
        other = other._array if isinstance(other, Tensor) else other
        op(self._array, other, out=self._array, casting="same_kind")
        return self

    def add_(self, other, alpha=1):
        if alpha != 1:
            other = np.multiply(other._array if isinstance(other, Tensor) else other, alpha)
        return self._inplace(np.add, other)

    def sub_(self, other):
        return self._inplace(np.subtract, other)

    def mul_(self, other):
        return self._inplace(np.multiply, other)

    def div_(self, other):
        return self._inplace(np.true_divide, other)

    __iadd__ = add_
    __isub__ = sub_
    __imul__ = mul_
    __itruediv__ = div_

    # ------------------------------------------------------------- arithmetic
    def _binary(self, function, other, reflected=False):
        other = _operand(other, self)
        if other is NotImplemented:
            return NotImplemented
        return function.apply(other, self) if reflected else function.apply(self, other)

    def __add__(self, other):
        return self._binary(Add, other)

    def __radd__(self, other):
        return self._binary(Add, other, reflected=True)

    def __sub__(self, other):
        return self._binary(Sub, other)

    def __rsub__(self, other):
        return self._binary(Sub, other, reflected=True)

    def __mul__(self, other):
        return self._binary(Mul, other)

    def __rmul__(self, other):
        return self._binary(Mul, other, reflected=True)

    def __truediv__(self, other):
        return self._binary(Div, other)

    def __rtruediv__(self, other):
        return self._binary(Div, other, reflected=True)

    def __matmul__(self, other):
        return self._binary(MatMul, other)

    def __neg__(self):
        return Neg.apply(self)

    def __pos__(self):
        return self

    def __pow__(self, exponent):
        if not isinstance(exponent, numbers.Number):
            raise TypeError("pow: only a Python number exponent is supported")
        return Pow.apply(self, exponent)

    add = __add__
    sub = __sub__
    mul = __mul__
    div = __truediv__
    matmul = __matmul__

    def pow(self, exponent):
        return self ** exponent

    def exp(self):
        return Exp.apply(self)

    def log(self):
        return Log.apply(self)

    def relu(self):
        from .nn.functional import relu
        return relu(self)

    def softmax(self, dim):
        from .nn.functional import softmax
        return softmax(self, dim)

    def log_softmax(self, dim):
        from .nn.functional import log_softmax
        return log_softmax(self, dim)

    def abs(self):
        return self * Tensor._wrap(np.sign(self._array))

    # ------------------------------------------------------------- comparisons (no grad)
    def _compare(self, op, other):
        other = other._array if isinstance(other, Tensor) else other
        return Tensor._wrap(op(self._array, other))

    def __eq__(self, other):
        return self._compare(np.equal, other)

    def __ne__(self, other):
        return self._compare(np.not_equal, other)

    def __lt__(self, other):
        return self._compare(np.less, other)

    def __le__(self, other):
        return self._compare(np.less_equal, other)

    def __gt__(self, other):
        return self._compare(np.greater, other)

    def __ge__(self, other):
        return self._compare(np.greater_equal, other)

    eq = __eq__
    ne = __ne__
    lt = __lt__
    le = __le__
    gt = __gt__
    ge = __ge__

    __hash__ = object.__hash__

    def __bool__(self):
        if self._array.size != 1:
            raise RuntimeError("Boolean value of Tensor with more than one value is ambiguous")
        return bool(self._array)

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __index__(self):
        if self._array.dtype.kind not in "iu" or self._array.size != 1:
            raise TypeError("only integer tensors of a single element can be converted to an index")
        return int(self.item())

    # ------------------------------------------------------------- reductions
    def sum(self, dim=None, keepdim=False, dtype=None):
        source = self.to(dtype) if dtype is not None else self
        if source.dtype.kind in "biu" and dtype is None:
            source = source.to(int64)  # torch sums bools and ints as int64
        return Sum.apply(source, _normalize_dims(dim, self.ndim), keepdim)

    def mean(self, dim=None, keepdim=False):
        if self.dtype not in _FLOAT_DTYPES:
            raise RuntimeError(f"mean(): could not infer output dtype. Input dtype must be either a "
                               f"floating point or complex dtype. Got: {self.dtype}")
        return Mean.apply(self, _normalize_dims(dim, self.ndim), keepdim)

    def argmax(self, dim=None, keepdim=False):
        if dim is None:
            return Tensor._wrap(np.asarray(np.argmax(self._array), dtype=np.int64))
        (d,) = _normalize_dims(dim, self.ndim)
        return Tensor._wrap(np.argmax(self._array, axis=d, keepdims=keepdim).astype(np.int64))

    def max(self, dim=None, keepdim=False):
        if dim is None:
            return Tensor._wrap(np.asarray(np.max(self._array)))
        (d,) = _normalize_dims(dim, self.ndim)
        return (Tensor._wrap(np.max(self._array, axis=d, keepdims=keepdim)),
                Tensor._wrap(np.argmax(self._array, axis=d, keepdims=keepdim).astype(np.int64)))

    # ------------------------------------------------------------- shape
    def view(self, *shape):
        shape = _check_view_shape(shape, self.numel())
        if not self._array.flags.c_contiguous and self._array.size > 1:
            try:
                np.reshape(self._array, shape, copy=False)
            except ValueError:
                raise RuntimeError(
                    f"view size is not compatible with input tensor's size and stride (at least one "
                    f"dimension spans across two contiguous subspaces). Use .reshape(...) instead. "
                    f"(input shape {tuple(self.shape)}, requested {list(shape)})") from None
        return View.apply(self, shape)

    def reshape(self, *shape):
        return View.apply(self, _check_view_shape(shape, self.numel(), "reshape"))

    def flatten(self, start_dim=0, end_dim=-1):
        if self.ndim == 0:
            return self.reshape(1)
        start, end = _normalize_dims((start_dim, end_dim), self.ndim)
        if start > end:
            raise RuntimeError("flatten() has invalid args: start_dim cannot come after end_dim")
        shape = self._array.shape
        new_shape = shape[:start] + (math.prod(shape[start:end + 1]),) + shape[end + 1:]
        return View.apply(self, new_shape)

    def unsqueeze(self, dim):
        (d,) = _normalize_dims(dim, self.ndim + 1)
        shape = list(self._array.shape)
        shape.insert(d, 1)
        return View.apply(self, tuple(shape))

    def squeeze(self, dim=None):
        if dim is None:
            return View.apply(self, tuple(s for s in self._array.shape if s != 1))
        (d,) = _normalize_dims(dim, self.ndim)
        if self._array.shape[d] != 1:
            return self
        return View.apply(self, self._array.shape[:d] + self._array.shape[d + 1:])

    def __getitem__(self, key):
        if isinstance(key, Tensor):
            key = key._array
        elif isinstance(key, tuple):
            key = tuple(k._array if isinstance(k, Tensor) else k for k in key)
        return Index.apply(self, key)

    def __iter__(self):
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(len(self)))

    # ------------------------------------------------------------- autograd
    def backward(self, gradient=None, retain_graph=False):
        if not self.requires_grad:
            raise RuntimeError("element 0 of tensors does not require grad and does not have a grad_fn")
        if gradient is None:
            if self._array.size != 1:
                raise RuntimeError(f"grad can be implicitly created only for scalar outputs "
                                   f"(the tensor has shape {tuple(self.shape)}); pass a gradient")
            grad = np.empty(self._array.shape, dtype=self._array.dtype)
            grad.fill(1)  # not np.ones: a Python-level wrapper, slower for this one value
        else:
            grad = gradient._array if isinstance(gradient, Tensor) else np.asarray(gradient)
            if grad.shape != self._array.shape:
                raise RuntimeError(f"backward: gradient has shape {grad.shape} but the tensor has "
                                   f"shape {self._array.shape}")
            grad = grad.astype(self.dtype, copy=False)
        run_backward(self, grad, retain_graph=retain_graph)

    # ------------------------------------------------------------- printing
    def __repr__(self):
        body = np.array2string(self._array, separator=", ", prefix="tensor(", precision=4)
        extras = []
        if self.dtype not in (float32, int64, bool_):
            extras.append(f"dtype=cnncy.{self.dtype}")
        if self.grad_fn is not None:
            extras.append(f"grad_fn={self.grad_fn!r}")
        elif self.requires_grad:
            extras.append("requires_grad=True")
        return "tensor(" + body + "".join(", " + e for e in extras) + ")"


class _Contiguous(Function):
    @staticmethod
    def forward(ctx, a, copy=False):
        return np.array(a, order="C", copy=True) if copy else np.ascontiguousarray(a)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class Size(tuple):
    """torch.Size: a tuple of ints that prints as torch.Size([...])."""

    def numel(self):
        return math.prod(self)

    def __repr__(self):
        return f"cnncy.Size({list(self)})"


# Weak references to the DeferredTensors created since the last materialise_deferred(); dead ones
# and ones computed since are skipped.
_deferred = []


def materialise_deferred():
    """Compute every live DeferredTensor now.

    Called before arrays are written in place (in-place ops, and backward, which precedes optimizer
    steps), so that a deferred result gets the values its inputs had when it was created."""
    while _deferred:
        tensor = _deferred.pop()()
        if isinstance(tensor, DeferredTensor):
            tensor._materialise()


class DeferredTensor(Tensor):
    """A Tensor whose value is computed the first time something needs it (see nn/functional/fusion.py).

    `compute()` returns the value as an ordinary Tensor, with its graph.  Until then shape, dtype
    and requires_grad are known without computing.  The first read of `_array` or `grad_fn` runs
    `compute` under the grad mode of the deferred op's call, takes over the result's array and
    graph node, and turns this object into a plain Tensor.
    """

    def __init__(self, compute, shape, dtype, requires_grad):
        self._compute = compute
        self._grad_mode = is_grad_enabled()
        self._deferred_shape = Size(shape)
        self._deferred_dtype = dtype
        self.grad = None
        self._retains_grad = False
        self._requires_grad = requires_grad
        if len(_deferred) >= 64:  # long runs without backward (inference): drop the dead
            _deferred[:] = [ref for ref in _deferred if isinstance(ref(), DeferredTensor)]
        _deferred.append(weakref.ref(self))

    def _materialise(self):
        with set_grad_enabled(self._grad_mode):
            result = self._compute()
        for name in ("_compute", "_grad_mode", "_deferred_shape", "_deferred_dtype"):
            del self.__dict__[name]
        self.__class__ = Tensor
        self._array, self.grad_fn = result._array, result.grad_fn

    @property
    def _array(self):
        self._materialise()
        return self._array

    @_array.setter
    def _array(self, array):
        self._materialise()
        self._array = array

    @property
    def grad_fn(self):
        self._materialise()
        return self.grad_fn

    @grad_fn.setter
    def grad_fn(self, node):
        self._materialise()
        self.grad_fn = node

    @property
    def shape(self):
        return self._deferred_shape

    @property
    def dtype(self):
        return self._deferred_dtype

    @property
    def ndim(self):
        return len(self._deferred_shape)
