"""Memory settings applied at import: glibc malloc thresholds, and 64-byte aligned numpy arrays.

1. glibc malloc settings that keep a training step's large temporaries out of mmap/munmap.

Every training step allocates and frees the same few megabytes: layer outputs, gradients, kernel
scratch.  By default glibc serves blocks of 128 KiB and more with mmap and hands freed heap memory
back to the kernel, so each step page-faults its memory in afresh; on SimpleCNN at batch 64 that
costs about twice the step's arithmetic (one thread: 3.0 ms per step instead of 1.0 ms).  Raising
the mmap threshold to glibc's maximum (32 MiB) and the trim threshold to 256 MiB keeps that memory
in the heap for the next step.  The price is that up to 256 MiB freed at the top of the heap stays
mapped to the process.

Applied when cnncy is imported, on Linux with glibc, unless the process already chose its own
values (the MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ environment variables) or sets
CNNCY_MALLOC_TUNING=0.

2. numpy arrays whose data starts on a 64-byte boundary (cnncy._aligned, built from
src/aligned.pyx, says why: unaligned vectors cost the linear head up to 40%).  The same handler
keeps freed blocks of 64 KiB to 32 MiB (up to 256 MiB in all) for the next array of their exact
size, so that a step's buffers reuse the memory that the same threads wrote the step before.  Applied when
cnncy is imported, to numpy's allocation policy of the importing context (numpy keeps it in a
context variable: other threads keep numpy's default), unless CNNCY_ALIGNED_ARRAYS=0.
"""
import ctypes
import os
import sys

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 32 << 20  # glibc's largest accepted value on 64-bit
_TRIM_THRESHOLD = 256 << 20

_tuned = False
_aligned = False


def tune_malloc():
    """Apply the settings above if this process allows it; True if they are in effect."""
    global _tuned
    if _tuned:
        return True
    if (os.environ.get("CNNCY_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux")
            or "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # absent from other C libraries (musl)
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    _tuned = bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
    return _tuned


def malloc_tuned():
    """Whether tune_malloc's settings are in effect (for show_config)."""
    return _tuned


def align_arrays():
    """Make numpy allocate 64-byte aligned arrays in this context, unless CNNCY_ALIGNED_ARRAYS=0;
    True if it does."""
    global _aligned
    if os.environ.get("CNNCY_ALIGNED_ARRAYS", "1") == "0":
        return False
    from . import _aligned as aligned
    aligned.install()
    _aligned = True
    return True


def arrays_aligned():
    """Whether align_arrays installed the aligned allocation policy (for show_config)."""
    return _aligned
