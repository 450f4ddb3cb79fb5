"""Dropout kernel: a Bernoulli mask from a counter-based generator, applied in one parallel pass.

Element i of a call keyed by `seed` is kept when the i-th SplitMix64 output of that seed,
as a 53-bit fraction, is below 1 - p.  Its bits depend only on (seed, i), never on which
thread computes it or how the array is split, so the mask is identical for any thread
count, and backward regenerates the same mask from the seed instead of storing it.
"""
cimport numpy as cnp
from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport uint64_t

from arrays cimport array_arg, data, dim, float64_call, numpy_type, shape_error
from team_size cimport team_size

cnp.import_array()

# Elements per parallel task.
cdef Py_ssize_t CHUNK = 1 << 14


cdef inline uint64_t splitmix64(uint64_t seed, uint64_t index) noexcept nogil:
    """The index-th output of SplitMix64 started at seed (Steele, Lea and Flood, 2014)."""
    cdef uint64_t z = seed + (index + 1) * <uint64_t>0x9E3779B97F4A7C15
    z = (z ^ (z >> 30)) * <uint64_t>0xBF58476D1CE4E5B9
    z = (z ^ (z >> 27)) * <uint64_t>0x94D049BB133111EB
    return z ^ (z >> 31)


cdef inline void dropout_chunk(const floating* src, floating* dst, Py_ssize_t start, Py_ssize_t n,
                               uint64_t seed, uint64_t keep_below, floating scale) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating noise
    for i in range(n):
        noise = scale if (splitmix64(seed, <uint64_t>(start + i)) >> 11) < keep_below else 0
        # A product, not a select: like torch, NaN and inf times a dropped 0 give NaN.
        dst[i] = src[i] * noise


def dropout_apply(src, dst, uint64_t seed, uint64_t keep_below, double scale, int num_threads):
    """dst = src * noise over flat arrays, noise[i] = scale if bits53(seed, i) < keep_below else 0;
    dst may be src.

    keep_below = floor((1 - p) * 2**53) keeps each element with probability 1 - p (to 2**-53).
    scale is rounded to the arrays' dtype.
    """
    if float64_call(src, "dropout_apply"):
        dropout_as(<double> scale, src, dst, seed, keep_below, num_threads)
    else:
        dropout_as(<float> scale, src, dst, seed, keep_below, num_threads)


cdef dropout_as(floating scale, src_array, dst_array, uint64_t seed, uint64_t keep_below, int num_threads):
    cdef int typenum = numpy_type(scale)
    cdef cnp.ndarray sa = array_arg(src_array, typenum, 1, False, "dropout_apply", "src")
    cdef cnp.ndarray da = array_arg(dst_array, typenum, 1, True, "dropout_apply", "dst")
    if dim(da, 0) != dim(sa, 0):
        shape_error("dropout_apply", (("src", sa), ("dst", da)))
    cdef Py_ssize_t n = dim(sa, 0)
    cdef Py_ssize_t chunks = (n + CHUNK - 1) // CHUNK
    cdef Py_ssize_t c, start
    cdef const floating* src_data = <const floating*> data(sa)
    cdef floating* dst_data = <floating*> data(da)
    if n == 0:
        return
    cdef int threads = team_size(chunks, n, num_threads)
    if threads == 1:  # no parallel region for small work
        with nogil:
            for c in range(chunks):
                start = c * CHUNK
                dropout_chunk(src_data + start, dst_data + start, start, min(CHUNK, n - start),
                              seed, keep_below, scale)
        return
    for c in prange(chunks, nogil=True, schedule='static', num_threads=threads):
        start = c * CHUNK
        dropout_chunk(src_data + start, dst_data + start, start, min(CHUNK, n - start),
                      seed, keep_below, scale)
