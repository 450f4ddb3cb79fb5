"""OpenMP wait policy: keep idle worker threads from spinning long.

libgomp's default lets a thread that waits at a barrier spin for ~300k iterations before sleeping.
On a machine where another process holds one of the cores, the spinning thread keeps the core from
the thread it waits for, and every parallel region of a step stalls for a scheduler time slice:
measured here, one MNIST epoch of SimpleCNN at 2 threads took 55 s instead of 1 s while one other
process was busy.  A short spin (GOMP_SPINCOUNT=1000, tens of microseconds: long enough to catch the
next region of the same step) kept that epoch at 1.5 s under the same load.

libgomp reads the variable once, when it is loaded, which is when cnncy's first kernel module is
imported, so this module runs before any of them.  A user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT
is left alone.
"""
import os

SPIN_COUNT = "1000"

if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = SPIN_COUNT


def wait_policy():
    """How OpenMP threads wait, for show_config."""
    if "OMP_WAIT_POLICY" in os.environ:
        return f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}"
    return f"GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT')}"
