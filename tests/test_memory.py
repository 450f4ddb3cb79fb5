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


KEPT_BLOCKS_CHECK = """
import numpy as np
import cnncy
from cnncy import _aligned
size = 6272 * 64
first, second = np.empty(size, np.float32), np.empty(size, np.float32)
addresses = first.ctypes.data, second.ctypes.data
del first, second  # glibc would merge the two and serve the next request from the first
other = np.empty(size + 16, np.float32)  # another size: no kept block
same = np.empty(size, np.float32)  # the newest kept block of its size: the second
same[:] = 7; del same
zeros = np.zeros(size, np.float32)  # calloc: zeros, never a kept block
print(other.ctypes.data not in addresses, np.empty(size, np.float32).ctypes.data == addresses[1],
      bool((zeros == 0).all()))
_aligned.release_kept()
"""


def test_freed_large_blocks_serve_the_next_array_of_their_size():
    assert run_python(KEPT_BLOCKS_CHECK, dict(os.environ)).split() == ["True", "True", "True"]


def test_kept_blocks_hold_no_stale_views_and_stay_bounded():
    import numpy as np

    from cnncy import _aligned

    size = 1 << 16  # float64: 512 KiB blocks
    arrays = [np.full(size, float(i)) for i in range(40)]  # more blocks than are kept
    views = [a[:3] for a in arrays[:5]]  # views keep their base array (and its block) alive
    del arrays
    fresh = [np.empty(size) for _ in range(40)]
    for i, view in enumerate(views):  # no kept block was handed out while a view held it
        np.testing.assert_array_equal(view, float(i))
    addresses = {a.ctypes.data for a in fresh}
    assert len(addresses) == 40 and all(address % 64 == 0 for address in addresses)
    _aligned.release_kept()


LARGE_BLOCK_CHECK = """
import numpy as np
import cnncy
size = (48 << 20) // 4  # 48 MiB: past the largest kept block
first = np.empty(size, np.float32); address = first.ctypes.data; del first
between = np.empty(size + 1024, np.float32)  # glibc (mmap) may hand the memory to anything now
print(np.empty(size, np.float32).ctypes.data != address or between.ctypes.data == address)
"""


def test_blocks_past_32_mib_go_back_to_glibc():
    assert run_python(LARGE_BLOCK_CHECK, dict(os.environ)).strip() == "True"
