"""The array arguments of the kernels' def wrappers, checked by hand and read through their data
pointers.

A typed memoryview argument costs ~100 ns to acquire (the buffer protocol fills in and parses a
format string, shape and strides), and a def over fused memoryview types ~250 ns more to pick its
specialisation.  A training step calls a few dozen kernels one after another while the other
threads wait, so that was several microseconds of every step's serial part (linear_forward's four
arrays: 630 ns of argument handling; as ndarrays, 50 ns).  The checks are those a memoryview made
(an ndarray of the dtype, the rank, C-contiguous, writable where written) and, because they cost
next to nothing here, the shapes' consistency too; failures raise TypeError or ValueError naming
the kernel and the argument.  The caller passes float32 or float64 arrays, all of one dtype; the
first array argument decides which (float64_call).

A module that cimports these must call numpy's cnp.import_array() when it loads.
"""
cimport numpy as cnp
from cython cimport floating


cdef inline int numpy_type(floating kind) noexcept nogil:
    """The NPY_* type number of `floating` (the argument only picks the type)."""
    return cnp.NPY_FLOAT32 if floating is float else cnp.NPY_FLOAT64


cdef inline bint float64_call(object first, str kernel) except -1:
    """True if a kernel call is in float64, False in float32: the dtype of its first array."""
    cdef int typenum
    if not cnp.PyArray_Check(first):
        raise TypeError(f"{kernel}: expected a numpy array, got {type(first).__name__}")
    typenum = cnp.PyArray_TYPE(<cnp.ndarray> first)
    if typenum == cnp.NPY_FLOAT64:
        return True
    if typenum != cnp.NPY_FLOAT32:
        raise ValueError(f"{kernel}: expected float32 or float64 arrays, got {first.dtype}")
    return False


cdef inline cnp.ndarray array_arg(object array, int typenum, int ndim, bint writable, str kernel, str name):
    """`array` after a memoryview's checks: an ndarray of dtype typenum and rank ndim, C-contiguous,
    and writable if `writable`."""
    cdef cnp.ndarray checked
    if not cnp.PyArray_Check(array):
        raise TypeError(f"{kernel}: {name} must be a numpy array, got {type(array).__name__}")
    checked = <cnp.ndarray> array
    if cnp.PyArray_TYPE(checked) != typenum:
        raise ValueError(f"{kernel}: {name} has dtype {checked.dtype}, expected {cnp.PyArray_DescrFromType(typenum)}")
    if cnp.PyArray_NDIM(checked) != ndim:
        raise ValueError(f"{kernel}: {name} has {cnp.PyArray_NDIM(checked)} dimensions, expected {ndim}")
    if not cnp.PyArray_IS_C_CONTIGUOUS(checked):
        raise ValueError(f"{kernel}: {name} is not C-contiguous")
    if writable and not cnp.PyArray_ISWRITEABLE(checked):
        raise ValueError(f"{kernel}: {name} is read-only")
    return checked


cdef inline cnp.ndarray optional_arg(object array, int typenum, int ndim, bint writable, str kernel, str name):
    """array_arg, or None for None."""
    return None if array is None else array_arg(array, typenum, ndim, writable, kernel, name)


cdef inline Py_ssize_t dim(cnp.ndarray array, int axis) noexcept:
    return cnp.PyArray_DIM(array, axis)


cdef inline bint same_shape(cnp.ndarray a, cnp.ndarray b) noexcept:
    cdef int axis
    if cnp.PyArray_NDIM(a) != cnp.PyArray_NDIM(b):
        return False
    for axis in range(cnp.PyArray_NDIM(a)):
        if cnp.PyArray_DIM(a, axis) != cnp.PyArray_DIM(b, axis):
            return False
    return True


cdef inline object shape_of(cnp.ndarray array):
    """The array's shape as a list (None for None), for messages."""
    return None if array is None else [cnp.PyArray_DIM(array, axis) for axis in range(cnp.PyArray_NDIM(array))]


cdef inline void* data(cnp.ndarray array) noexcept:
    """The array's data, or NULL for None."""
    return NULL if array is None else cnp.PyArray_DATA(array)


cdef inline int shape_error(str kernel, tuple arrays) except -1:
    """Raise ValueError naming every argument's shape; arrays: (name, array or None) pairs."""
    cdef list described = []
    for name, array in arrays:  # (a generator expression here trips Cython's code for .pxd inlines)
        described.append(f"{name} {None if array is None else list(array.shape)}")
    raise ValueError(f"{kernel}: inconsistent shapes: " + ", ".join(described))
