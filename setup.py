"""Build the Cython kernels in src/ into extension modules inside the cnncy package.

Every src/<name>.pyx becomes cnncy._<name>.  OpenMP is used when the compiler
accepts -fopenmp; otherwise the kernels build serially and a warning says so.

The Python layer's hot modules (autograd, tensor, nn, optim, the DataLoader) are compiled too,
as plain Python with Cython's default directives: they stay ordinary .py files (the .py is the
source of truth and works alone), and the compiled module, which Python imports in preference,
runs a training step's Python in about half the time (kernel-free LeNet step: 87 -> 53 us).  Set
CNNCY_PURE_PYTHON=1 to skip that, for example to step through the layer in a debugger.

SIMD: by default the kernels are compiled for the CPU doing the build
(-march=native), which is what a `pip install .` user wants on their own
machine.  Set CNNCY_PORTABLE=1 to build for baseline x86-64 (SSE2) instead,
for example when making a wheel that must run on other machines.
"""
import os
import subprocess
import sys
import sysconfig
import tempfile
import warnings
from pathlib import Path

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = Path(__file__).parent.resolve()


def compiler_accepts(flags):
    """True if the C compiler that builds extensions compiles and links a file with these flags."""
    cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp, "probe.c")
        source.write_text("#include <omp.h>\nint main(void){return omp_get_max_threads() < 1;}\n"
                          if "-fopenmp" in flags else "int main(void){return 0;}\n")
        try:
            result = subprocess.run(cc + flags + [str(source), "-o", str(Path(tmp, "probe"))],
                                    capture_output=True)
        except OSError:
            return False
        return result.returncode == 0


def build_flags():
    compile_args = ["-O3", "-fno-math-errno"]
    link_args = []
    macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
    portable = os.environ.get("CNNCY_PORTABLE", "") not in ("", "0")
    if not portable and compiler_accepts(["-march=native"]):
        compile_args.append("-march=native")
        macros.append(("CNNCY_ARCH", '"native"'))
    else:
        macros.append(("CNNCY_ARCH", '"portable"'))
    if compiler_accepts(["-fopenmp"]):
        compile_args.append("-fopenmp")
        link_args.append("-fopenmp")
    else:
        warnings.warn("cnncy: the C compiler does not support OpenMP (-fopenmp); "
                      "building serial kernels. cnncy.openmp_enabled() will return False.")
        print("*** cnncy WARNING: building WITHOUT OpenMP: kernels will run on one thread ***",
              file=sys.stderr)
    return compile_args, link_args, macros


compile_args, link_args, macros = build_flags()
# Developers rebuilding one kernel family can name it: CNNCY_BUILD_ONLY=conv,pooling
only = {name for name in os.environ.get("CNNCY_BUILD_ONLY", "").split(",") if name}
extensions = [
    Extension(
        f"cnncy._{pyx.stem}",
        [str(pyx.relative_to(HERE))],
        include_dirs=[numpy.get_include(), "src"],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
        define_macros=macros,
    )
    for pyx in sorted((HERE / "src").glob("*.pyx"))
    if not only or pyx.stem in only
]

# The Python layer compiled as Python: default directives (bounds and negative indices checked,
# Python division), so the compiled module behaves as the .py does.  cnncy/_frames.py is never
# compiled (it needs its own frame), nor code that runs once (package setup, datasets, I/O).
PYTHON_LAYER = [
    "cnncy/_threads.py", "cnncy/autograd.py", "cnncy/creation.py", "cnncy/tensor.py",
    "cnncy/nn/parameter.py", *sorted(str(p.relative_to(HERE)) for p in (HERE / "cnncy/nn/functional").glob("*.py")
                                     if p.name != "__init__.py"),
    *sorted(str(p.relative_to(HERE)) for p in (HERE / "cnncy/nn/modules").glob("*.py") if p.name != "__init__.py"),
    "cnncy/optim/optimizer.py", "cnncy/optim/sgd.py", "cnncy/optim/adam.py", "cnncy/utils/data.py",
]
pure_python = os.environ.get("CNNCY_PURE_PYTHON", "") not in ("", "0")
python_layer = [] if pure_python or only else [
    Extension(path[:-3].replace("/", "."), [path], extra_compile_args=["-O2"]) for path in PYTHON_LAYER
]

setup(
    ext_modules=cythonize(
        extensions,
        include_path=["src"],
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
            "nonecheck": False,
        },
    ) + (cythonize(python_layer, compiler_directives={"language_level": 3, "binding": True})
         if python_layer else []),
)
