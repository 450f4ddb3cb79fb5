"""OpenMP wait policy: keep idle worker threads from spinning long.

libgomp's default lets a thread that waits at a barrier spin for ~300k iterations before sleeping.
On a machine where another process holds one of the cores, the spinning thread keeps the core from
the thread it waits for, and every parallel region of a step stalls for a scheduler time slice:
measured here, one MNIST epoch of SimpleCNN at 2 threads took 55 s instead of 1 s while one other
process was busy.

Too short a spin costs as much on a quiet machine: a worker that has gone to sleep needs ~30 us to
wake (a virtual CPU's wake-up), and each parallel region of a step follows some Python (LeNet's
step has a stretch of ~60 us of small serial layers and loss between two parallel layers).  One
libgomp spin iteration is ~20 ns here.  Measured at batch 64, 2 threads, quiet rounds of an
interleaved run, and one MNIST epoch of SimpleCNN:

| GOMP_SPINCOUNT | SimpleCNN step | LeNet step | epoch, quiet | epoch, one busy process |
| --- | --- | --- | --- | --- |
| 1000 (~25 us)  | 469-478 us     | 886-894 us | 0.6-0.7 s    | 1.3 s                   |
| 2000 (~45 us)  | 452-464 us     | 823-841 us | 0.5-0.6 s    | 1.5-1.7 s               |
| 3000 (~70 us)  | 447 us         | 809-818 us | 0.5 s        | 1.8-2.0 s               |
| 5000 (~110 us) | 442 us         | 812 us     | 0.5 s        | 2.8 s                   |

3000 covers the Python between the regions of these steps; longer spins gain nothing more and cost
more under load (where one thread per free core is the better setting anyway: 0.9 s for that epoch).

libgomp reads the variable once, when it is loaded, which is when cnncy's first kernel module is
imported, so this module runs before any of them.  A user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT
is left alone.
"""
import os

SPIN_COUNT = "3000"

if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = SPIN_COUNT


def wait_policy():
    """How OpenMP threads wait, for show_config."""
    if "OMP_WAIT_POLICY" in os.environ:
        return f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}"
    return f"GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT')}"
