# cython: language_level=3
"""What the kernels were built with: OpenMP or not, and which SIMD target.

The thread count the kernels use lives in cnncy/_threads.py; every kernel takes
it as an argument so that no kernel module needs state of its own.
"""
cimport openmp

cdef extern from *:
    """
    #ifdef _OPENMP
    #define CNNCY_HAVE_OPENMP 1
    #else
    #define CNNCY_HAVE_OPENMP 0
    #endif
    #ifndef CNNCY_ARCH
    #define CNNCY_ARCH "unknown"
    #endif
    """
    int CNNCY_HAVE_OPENMP
    const char* CNNCY_ARCH


def openmp_enabled():
    """True if the kernels were compiled with OpenMP."""
    return bool(CNNCY_HAVE_OPENMP)


def build_arch():
    """'native' (built for the build machine's SIMD) or 'portable' (baseline x86-64)."""
    return CNNCY_ARCH.decode()


def omp_max_threads():
    """OpenMP's default team size (OMP_NUM_THREADS, else the core count); 1 without OpenMP."""
    if CNNCY_HAVE_OPENMP:
        return openmp.omp_get_max_threads()
    return 1
