"""The kernels' def wrappers check their array arguments by hand (src/arrays.pxd): every bad
array gets a Python exception naming the kernel, never a crash or a silently wrong result."""
import numpy as np
import pytest

from cnncy import _activation, _conv, _dropout, _fused, _linear, _loss, _optim, _pooling


def f32(*shape):
    return np.ones(shape, dtype=np.float32)


def int64(*shape):
    return np.zeros(shape, dtype=np.int64)


def argmax_int8(n, c, ph, pw):
    return np.zeros(_fused.argmax_shape((n, c, ph, pw), 4), dtype=np.int8)


# kernel, a valid call's arguments (a function: fresh arrays each time), the indices of the
# arrays it writes.
CALLS = {
    "linear_forward": (_linear.linear_forward, lambda: [f32(2, 4), f32(3, 4), f32(3), f32(2, 3), 1], [3]),
    "linear_backward": (_linear.linear_backward,
                        lambda: [f32(2, 4), f32(3, 4), f32(2, 3), f32(2, 4), f32(3, 4), f32(3), 1], [3, 4, 5]),
    "relu_forward": (_activation.relu_forward, lambda: [f32(5), f32(5), 1], [1]),
    "relu_backward": (_activation.relu_backward, lambda: [f32(5), f32(5), f32(5), 1], [2]),
    "softmax_forward": (_activation.softmax_forward, lambda: [f32(2, 3), f32(2, 3), 1], [1]),
    "log_softmax_backward": (_activation.log_softmax_backward, lambda: [f32(2, 3), f32(2, 3), f32(2, 3), 1], [2]),
    "cross_entropy_forward": (_loss.cross_entropy_forward,
                              lambda: [f32(2, 3), int64(2), f32(3), f32(2, 3), f32(2), -100, True, 1], [3, 4]),
    "cross_entropy_backward": (_loss.cross_entropy_backward,
                               lambda: [f32(2, 3), int64(2), f32(3), f32(2), 1.0, f32(2, 3), -100, 1], [5]),
    "nll_forward": (_loss.nll_forward, lambda: [f32(2, 3), int64(2), f32(3), f32(2), -100, True], [3]),
    "nll_backward": (_loss.nll_backward, lambda: [f32(2, 3), int64(2), f32(3), f32(2), 1.0, -100], [0]),
    "conv2d_forward": (_conv.conv2d_forward, lambda: [f32(1, 2, 5, 5), f32(3, 2, 3, 3), f32(3), f32(1, 3, 3, 3),
                                                      1, 1, 0, 0, 1], [3]),
    "conv2d_backward": (_conv.conv2d_backward,
                        lambda: [f32(1, 2, 5, 5), f32(3, 2, 3, 3), f32(1, 3, 3, 3), f32(1, 2, 5, 5),
                                 f32(3, 2, 3, 3), f32(3), 1, 1, 0, 0, 1], [3, 4, 5]),
    "conv_relu_pool_forward": (_fused.conv_relu_pool_forward,
                               lambda: [f32(1, 1, 6, 6), f32(2, 1, 3, 3), f32(2), f32(1, 2, 2, 2),
                                        argmax_int8(1, 2, 2, 2), 0, 0, 2, 2, True, 1], [3, 4]),
    "conv_relu_pool_backward": (_fused.conv_relu_pool_backward,
                                lambda: [f32(1, 1, 6, 6), f32(2, 1, 3, 3), f32(1, 2, 2, 2), argmax_int8(1, 2, 2, 2),
                                         f32(1, 1, 6, 6), f32(2, 1, 3, 3), f32(2), 0, 0, 2, 2, 1], [4, 5, 6]),
    "max_pool2d_forward": (_pooling.max_pool2d_forward,
                           lambda: [f32(1, 2, 4, 4), f32(1, 2, 2, 2), int64(1, 2, 2, 2), 2, 2, 2, 2, 0, 0, 1, 1, 1],
                           [1, 2]),
    "max_pool2d_backward": (_pooling.max_pool2d_backward,
                            lambda: [f32(1, 2, 2, 2), int64(1, 2, 2, 2), f32(1, 2, 4, 4), 2, 2, 2, 2, 0, 0, 1, 1, 1],
                            [2]),
    "avg_pool2d_forward": (_pooling.avg_pool2d_forward,
                           lambda: [f32(1, 2, 4, 4), f32(1, 2, 2, 2), 2, 2, 2, 2, 0, 0, True, 0, 1], [1]),
    "avg_pool2d_backward": (_pooling.avg_pool2d_backward,
                            lambda: [f32(1, 2, 2, 2), f32(1, 2, 4, 4), 2, 2, 2, 2, 0, 0, True, 0, 1], [1]),
    "dropout_apply": (_dropout.dropout_apply, lambda: [f32(5), f32(5), 7, 2 ** 52, 2.0, 1], [1]),
    "sgd_update": (_optim.sgd_update, lambda: [f32(5), f32(5), f32(5), 0.1, 0.0, 0.9, 0.0, False, False, True, 1],
                   [0, 2]),
    "adam_update": (_optim.adam_update,
                    lambda: [f32(5), f32(5), f32(5), f32(5), None, 0.1, 1.0, 0.9, 0.999, 1e-8, 0.0, 0.1, False, False,
                             1], [0, 2, 3]),
}


def array_positions(args):
    return [i for i, a in enumerate(args) if isinstance(a, np.ndarray)]


@pytest.mark.parametrize("name", sorted(CALLS))
def test_valid_call_runs(name):
    kernel, make, _ = CALLS[name]
    kernel(*make())


BAD_ARRAYS = {
    "a list": lambda a: a.tolist(),
    "another dtype": lambda a: a.astype(np.float64 if a.dtype == np.float32 else np.int32),
    "one more dimension": lambda a: a[None],
    "not C-contiguous": lambda a: np.repeat(a[..., None], 2, axis=-1)[..., 0],
    "one element more": lambda a: np.concatenate([a, a[:1]]) if a.ndim == 1 else np.concatenate([a, a[:, :1]], 1),
}


@pytest.mark.parametrize("name", sorted(CALLS))
@pytest.mark.parametrize("bad", sorted(BAD_ARRAYS))
def test_every_bad_array_argument_raises_naming_the_kernel(name, bad):
    kernel, make, _ = CALLS[name]
    for position in array_positions(make()):
        args = make()
        if bad == "not C-contiguous" and args[position].ndim == 1 and args[position].size == 1:
            continue
        args[position] = BAD_ARRAYS[bad](args[position])
        with pytest.raises((TypeError, ValueError), match=name):
            kernel(*args)


@pytest.mark.parametrize("name", sorted(CALLS))
def test_read_only_outputs_are_refused(name):
    kernel, make, written = CALLS[name]
    for position in written:
        args = make()
        args[position].flags.writeable = False
        with pytest.raises(ValueError, match=f"{name}.*read-only"):
            kernel(*args)


def test_the_checks_leave_valid_results_alone():
    x = np.array([-1.0, 2.0, -0.0, np.nan], dtype=np.float32)
    out = np.empty_like(x)
    _activation.relu_forward(x, out, 1)
    np.testing.assert_array_equal(out, [0.0, 2.0, -0.0, np.nan])
    x = np.arange(12, dtype=np.float64).reshape(3, 4)
    weight = np.arange(8, dtype=np.float64).reshape(2, 4)
    out = np.empty((3, 2))
    _linear.linear_forward(x, weight, None, out, 2)
    np.testing.assert_array_equal(out, x @ weight.T)
