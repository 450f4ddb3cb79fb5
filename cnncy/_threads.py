"""The number of threads the kernels use.

Honours OMP_NUM_THREADS by default (OpenMP's own default otherwise) and
cnncy.set_num_threads(n) after that.  Every kernel receives the count as an
argument, and every kernel's result is independent of it.
"""
from ._parallel import omp_max_threads, openmp_enabled

_num_threads = omp_max_threads()


def set_num_threads(n):
    """Set the number of threads used by cnncy's kernels (like torch.set_num_threads)."""
    global _num_threads
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"set_num_threads: expected an int, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"set_num_threads: the number of threads must be positive, got {n}")
    _num_threads = n if openmp_enabled() else 1


def get_num_threads():
    """The number of threads cnncy's kernels use."""
    return _num_threads
