"""cnncy: small-CNN training on the CPU, with torch's API and torch's numbers.

    import cnncy as torch
    import cnncy.nn as nn
    import cnncy.optim as optim
"""
from . import _openmp_env  # noqa: F401  (first: it sets the OpenMP wait policy before the runtime loads)
from ._memory import align_arrays, tune_malloc
from ._parallel import build_arch, openmp_enabled
from ._threads import get_num_threads, set_num_threads
from .autograd import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .creation import (arange, empty, from_numpy, full, manual_seed, ones, ones_like, rand, randint,
                       randn, randperm, tensor, zeros, zeros_like)
from .config import show_config
from .creation import get_rng_state, set_rng_state
from .serialization import load, save
from .tensor import Size, Tensor, bool_ as bool, float32, float64, int32, int64, uint8

float = float32
double = float64
long = int64

from . import datasets, nn, optim, transforms, utils  # noqa: E402  (they import the names above)
from .nn.functional import log_softmax, relu, softmax  # noqa: E402  (torch.relu and friends)

__version__ = "0.1.0"

tune_malloc()  # keep each step's large temporaries off mmap/munmap (see _memory.py)
align_arrays()  # numpy arrays start on 64-byte boundaries: whole-vector loads (see _memory.py)
