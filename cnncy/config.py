"""What this build of cnncy is: version, SIMD target, OpenMP, threads."""
import platform
import sys

import numpy as np

from ._memory import arrays_aligned, malloc_tuned
from ._openmp_env import wait_policy
from ._parallel import build_arch, openmp_enabled
from ._threads import get_num_threads


def _cpu_simd():
    """The widest SIMD the CPU reports (Linux /proc/cpuinfo), for the record."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return "unknown"
    for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("sse2", "SSE2")):
        if flag in flags:
            return name + ("+FMA" if "fma" in flags and flag != "sse2" else "")
    return "unknown"


def python_layer():
    """How cnncy's Python layer runs: the count of its modules loaded compiled by Cython (setup.py
    compiles them unless CNNCY_PURE_PYTHON=1 at build time), or 'pure Python'."""
    layer = [module for name, module in list(sys.modules.items())
             if name.startswith("cnncy.") and not name.rsplit(".", 1)[-1].startswith("_")
             and getattr(module, "__file__", None)]
    compiled = sum(not module.__file__.endswith(".py") for module in layer)
    return f"compiled by Cython ({compiled} of {len(layer)} modules)" if compiled else "pure Python"


def config():
    from . import __version__
    return {
        "cnncy": __version__,
        "build": build_arch() + (" (-march=native)" if build_arch() == "native" else " (baseline x86-64)"),
        "cpu_simd": _cpu_simd(),
        "openmp": openmp_enabled(),
        "num_threads": get_num_threads(),
        "omp_wait": wait_policy(),
        "python_layer": python_layer(),
        "malloc_tuned": malloc_tuned(),
        "arrays_64B": arrays_aligned(),
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def show_config():
    """Print how cnncy was built and how it will run (like numpy.show_config)."""
    for key, value in config().items():
        print(f"{key:>12}: {value}")
