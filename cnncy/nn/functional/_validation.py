"""Argument checks shared by the functional ops, with torch's wording."""
import numpy as np

from ...tensor import Tensor

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

# torch's names for dtypes in its error messages ("Input type (long) ...").
_TORCH_DTYPE_NAMES = {"float32": "float", "float64": "double", "float16": "c10::Half",
                      "int64": "long", "int32": "int", "int16": "short", "int8": "signed char",
                      "uint8": "unsigned char", "bool": "bool"}


def torch_dtype_name(dtype):
    return _TORCH_DTYPE_NAMES.get(np.dtype(dtype).name, np.dtype(dtype).name)


def check_tensor(op, name, value, optional=False):
    """TypeError unless value is a cnncy Tensor (or None when optional)."""
    if value is None and optional:
        return
    if not isinstance(value, Tensor):
        raise TypeError(f"{op}(): argument '{name}' must be Tensor, not {type(value).__name__}")


def check_float_dtypes(op, input_dtype, weight_dtype, bias_dtype):
    """RuntimeError unless input, weight and bias (None: no bias) share one float dtype (float32 or float64)."""
    if input_dtype != weight_dtype:
        raise RuntimeError(f"{op}: Input type ({torch_dtype_name(input_dtype)}) and weight type "
                           f"({torch_dtype_name(weight_dtype)}) should be the same")
    if bias_dtype is not None and bias_dtype != input_dtype:
        raise RuntimeError(f"{op}: Input type ({torch_dtype_name(input_dtype)}) and bias type "
                           f"({torch_dtype_name(bias_dtype)}) should be the same")
    if input_dtype not in _FLOAT_DTYPES:
        raise RuntimeError(f"{op}: expected floating point (float32 or float64) input and weight, "
                           f"got {torch_dtype_name(input_dtype)}")
