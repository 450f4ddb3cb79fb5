"""cnncy._parallel: what the kernels were built with, and the parallel-region probe the benchmarks print."""
import math
import time

import pytest

from cnncy import _parallel


@pytest.mark.skipif(not _parallel.openmp_enabled(), reason="a build without OpenMP has no parallel regions")
def test_region_round_trip_is_the_time_per_region():
    regions = 2000
    _parallel.region_round_trip(2, regions)  # creates the team and gets both cores running
    start = time.perf_counter()
    per_region = _parallel.region_round_trip(2, regions)
    wall_us = (time.perf_counter() - start) * 1e6
    assert math.isfinite(per_region) and per_region > 0.0
    # It runs the regions twice (the first run wakes the team) and times the second: per region, at
    # most half the call's wall time, and not a small fraction of it.
    assert per_region * regions <= wall_us / 2 * 1.05
    assert per_region * regions >= wall_us * 0.1


def test_region_round_trip_of_nothing_is_zero():
    assert _parallel.region_round_trip(2, 0) == 0.0
    assert _parallel.region_round_trip(0, 100) == 0.0
