"""What the benchmark scripts share: worker processes, timing, machine/version facts, markdown output.

Each library runs in its own worker process: torch and cnncy each bring an OpenMP runtime, and two
runtimes in one process fight over the cores and distort both timings.  A script runs itself with
`--worker LIB`; the worker prints one JSON object as its last line of output and the parent reads it.
"""
import importlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
# Set on some machines so that old OpenBLAS builds pick a safe kernel; they slow a current numpy down.
OPENBLAS_OVERRIDE_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
# Inherited settings that change timings, named in the report's header when set.
TIMING_ENV_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_PROC_BIND", *OPENBLAS_OVERRIDE_VARS)
# Other processes on the cores slow multi-threaded runs most (a descheduled thread stalls every barrier),
# so the report shows the load that was there before the benchmark added its own.
LOAD_AT_START = os.getloadavg()


# ------------------------------------------------------------------ parent side
def worker_env(threads, unset_openblas_overrides=False):
    """The environment of a worker: every thread pool sized to `threads`; this checkout's cnncy first on
    the path when it has been built in place (otherwise the installed cnncy is timed)."""
    env = dict(os.environ)
    for var in THREAD_ENV_VARS:
        env[var] = str(threads)
    if any((REPO_ROOT / "cnncy").glob("_*.so")) or any((REPO_ROOT / "cnncy").glob("_*.pyd")):
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    if unset_openblas_overrides:
        for var in OPENBLAS_OVERRIDE_VARS:
            env.pop(var, None)
    return env


def run_worker(script, lib, args, threads, unset_openblas_overrides=False):
    """Run `script --worker lib *args` in a fresh process; its JSON report, or {"error": ...} if it failed."""
    command = [sys.executable, str(script), "--worker", lib, "--threads", str(threads), *map(str, args)]
    done = subprocess.run(command, capture_output=True, text=True,
                          env=worker_env(threads, unset_openblas_overrides))
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"lib": lib, "error": f"worker exited with {done.returncode}: {tail}"}
    return json.loads(lines[-1])


def cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line(threads):
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    overrides = ", ".join(f"{var}={os.environ[var]}" for var in TIMING_ENV_VARS if var in os.environ)
    load = ", ".join(f"{value:.2f}" for value in LOAD_AT_START)
    line = f"Machine: {cpu_model()}, {cores} cores (load average {load} at start); {threads} thread(s) per library"
    return line + (f"; inherited {overrides}" if overrides else "")


def versions_line(reports):
    """One line naming every version that the workers reported, each name once, in a fixed order."""
    versions = {}
    for report in reports:
        versions.update(report.get("versions", {}))
    order = ["python", "numpy", "torch", "onnxruntime", "cnncy"]
    names = sorted(versions, key=lambda name: order.index(name) if name in order else len(order))
    return "Versions: " + ", ".join(f"{name} {versions[name]}" for name in names)


def median_or_none(values):
    return statistics.median(values) if values else None


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def format_ms(ms):
    return "n/a" if ms is None else f"{ms:.3g}" if ms < 10 else f"{ms:.1f}"


def format_ratio(numerator, denominator):
    if numerator is None or denominator is None:
        return "n/a"
    return f"{numerator / denominator:.2f}x"


# ------------------------------------------------------------------ worker side
def import_library(name):
    """(lib, nn, F, optim) of "torch" or "cnncy": the same torch-shaped namespaces from either."""
    modules = [importlib.import_module(name + suffix) for suffix in ("", ".nn", ".nn.functional", ".optim")]
    return tuple(modules)


def set_library_threads(lib, threads):
    lib.set_num_threads(threads)
    if hasattr(lib, "set_num_interop_threads"):  # torch only; cnncy has no inter-op pool
        lib.set_num_interop_threads(1)


def library_versions(name):
    """Versions that matter for reading a timing of library `name`, as {label: text}."""
    versions = {"python": platform.python_version(), "numpy": np.__version__}
    if name == "cnncy":
        import cnncy
        openmp = "OpenMP" if cnncy.openmp_enabled() else "no OpenMP"
        origin = "this checkout" if REPO_ROOT in Path(cnncy.__file__).resolve().parents else "installed"
        versions["cnncy"] = f"{cnncy.__version__} ({cnncy.build_arch()} build, {openmp}, {origin})"
    else:
        module = importlib.import_module(name)
        versions[name] = module.__version__
    return versions


def make_batch(lib, batch, input_shape, num_classes):
    """The same float32 images and int64 labels for every library (numpy's generator, seed 0)."""
    rng = np.random.default_rng(0)
    images = rng.standard_normal((batch, *input_shape), dtype=np.float32)
    labels = rng.integers(0, num_classes, size=batch, dtype=np.int64)
    if lib is None:
        return images, labels
    return lib.from_numpy(images), lib.from_numpy(labels)


def seconds_per_call(step, warmup, iters=None, target_seconds=0.3, setup=None, max_iters=1000):
    """Median wall time of one `step()` over the timed calls after `warmup` calls, and their number.

    Each call is timed alone and the median taken, so a call that lost its core to another process
    moves the result little.  With `setup`, each call is `step(*setup())` and only `step` is timed
    (e.g. setup runs the forward pass whose backward is the step).  With iters=None the count is
    chosen from the last warm-up call so that the timed calls add up to about target_seconds (at
    least 5): fast and slow workloads both get a steady number in similar time.
    """
    prepare = setup or tuple

    def timed_call():
        arguments = prepare()
        start = time.perf_counter()
        step(*arguments)
        return time.perf_counter() - start

    last = 0.0
    for _ in range(max(warmup, 1)):
        last = timed_call()
    if iters is None:
        iters = min(max(math.ceil(target_seconds / max(last, 1e-9)), 5), max_iters)
    return statistics.median(timed_call() for _ in range(iters)), iters


def describe_error(error):
    return f"{type(error).__name__}: {error}".splitlines()[0][:200]
