"""cnncy._memory: glibc malloc tuning at import, and the ways a process opts out."""
import os
import sys

import pytest

from cnncy._memory import malloc_tuned
from fresh_process import run_python

CHECK = "import cnncy, cnncy._memory as m; print(m.malloc_tuned())"


def tuned_in_fresh_process(**env_changes):
    env = dict(os.environ, **env_changes)
    return run_python(CHECK, env).strip() == "True"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_import_tunes_malloc_on_linux():
    assert malloc_tuned()


@pytest.mark.parametrize("variable, value", [("CNNCY_MALLOC_TUNING", "0"),
                                             ("MALLOC_MMAP_THRESHOLD_", "131072"),
                                             ("MALLOC_TRIM_THRESHOLD_", "131072")])
def test_a_process_can_keep_its_own_malloc_settings(variable, value):
    assert not tuned_in_fresh_process(**{variable: value})


# ----------------------------------------------------------------- 64-byte aligned numpy arrays

ALIGNMENT_CHECK = """
import numpy as np
import cnncy, cnncy._memory as m
addresses = [np.empty(n, np.float32).ctypes.data for n in (1, 3, 17, 1000, 6272 * 64, 1 << 22)]
addresses += [np.zeros((5, 7)).ctypes.data, np.ones(33, np.int8).ctypes.data]
try:  # numpy >= 2
    from numpy._core.multiarray import get_handler_name
except ImportError:
    from numpy.core.multiarray import get_handler_name
print(m.arrays_aligned(), all(a % 64 == 0 for a in addresses), get_handler_name())
"""


def test_arrays_start_on_64_byte_boundaries():
    # numpy alone aligns to 16 bytes: among these eight arrays some would start elsewhere.
    aligned, all_aligned, handler = run_python(ALIGNMENT_CHECK, dict(os.environ)).split()
    assert (aligned, all_aligned, handler) == ("True", "True", "cnncy_aligned_64")


def test_a_process_can_keep_numpys_allocator():
    env = dict(os.environ, CNNCY_ALIGNED_ARRAYS="0")
    aligned, _, handler = run_python(ALIGNMENT_CHECK, env).split()
    assert (aligned, handler) == ("False", "default_allocator")


def test_aligned_arrays_grow_shrink_and_free_with_their_values():
    import numpy as np

    rng = np.random.default_rng(0)
    for _ in range(50):
        size = int(rng.integers(0, 5000))
        values = rng.standard_normal(size)
        array = values.copy()
        assert array.ctypes.data % 64 == 0
        new_size = int(rng.integers(0, 5000))
        array.resize(new_size, refcheck=False)  # numpy reallocates through the handler
        assert array.ctypes.data % 64 == 0 or new_size == 0
        kept = min(size, new_size)
        np.testing.assert_array_equal(array[:kept], values[:kept])
        assert not array[kept:].any()  # numpy zero-fills the growth
