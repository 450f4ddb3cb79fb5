# cython: language_level=3
"""What the kernels were built with: OpenMP or not, and which SIMD target.

The thread count the kernels use lives in cnncy/_threads.py; every kernel takes
it as an argument so that no kernel module needs state of its own.
"""
cimport openmp
from cython.parallel cimport parallel

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


def region_round_trip(int num_threads, int regions=2000):
    """Mean microseconds per parallel region of num_threads threads that does almost nothing (each
    thread stores one int, all into one cache line), over `regions` regions run back to back (after
    as many to wake the team); 0.0 without OpenMP.

    That is the cost of starting the team and joining it, which is set by how fast a cache line
    written on one core reaches the others.  The benchmarks print it because on a shared VM that
    speed has phases: on the development VM, at 2 threads, a region takes ~0.45 us in one and
    ~1.0-1.2 us in the other, and a 2-thread SimpleCNN step is ~20% slower in the second (every
    kernel hands data between the cores), while a 1-thread step is not."""
    cdef int round_, region
    cdef double start = 0.0, end = 0.0
    cdef int[64] touched
    if not CNNCY_HAVE_OPENMP or num_threads < 1 or regions < 1:
        return 0.0
    with nogil:
        for round_ in range(2):
            start = openmp.omp_get_wtime()
            for region in range(regions):
                with parallel(num_threads=num_threads):
                    touched[openmp.omp_get_thread_num() % 64] = region
            end = openmp.omp_get_wtime()
    return (end - start) / regions * 1e6
