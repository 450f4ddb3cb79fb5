"""Time cnncy's Python layer alone: a training step with every kernel replaced by a no-op.

    python benchmarks/bench_python_overhead.py                 # simple, lenet, examplesnet at batch 4
    python benchmarks/bench_python_overhead.py --models simple --batch 1

At small batches a step is mostly this Python (validation, autograd, optimizer bookkeeping), so
it bounds how fast a batch-1 step can be and how far the step can scale with threads.  The kernels
are stubbed in this process only (their outputs are garbage, which nothing reads), so the number
is stable on a noisy machine and compares builds: the default build compiles the Python layer
with Cython, `CNNCY_PURE_PYTHON=1 pip install .` (or `python setup.py build_ext --inplace` with
it set) does not; the header says which one ran.
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import REPO_ROOT  # noqa: E402
from models import build, build_criterion  # noqa: E402

if any((REPO_ROOT / "cnncy").glob("_*.so")):  # this checkout is built in place: time it, as the other scripts do
    sys.path.insert(0, str(REPO_ROOT))
import cnncy  # noqa: E402

# Kernels that write into arrays the Python layer allocated: a no-op leaves those arrays as they were.
WRITING_KERNELS = {
    "_conv": ["conv2d_forward", "conv2d_backward"],
    "_linear": ["linear_forward", "linear_backward"],
    "_pooling": ["max_pool2d_forward", "max_pool2d_backward", "avg_pool2d_forward", "avg_pool2d_backward"],
    "_activation": ["relu_forward", "relu_backward", "softmax_forward", "softmax_backward",
                    "log_softmax_forward", "log_softmax_backward"],
    "_loss": ["cross_entropy_backward", "nll_backward"],
    "_fused": ["conv_relu_pool_forward", "conv_relu_pool_backward"],
    "_dropout": ["dropout_forward"],
}


def stub_kernels():
    """Replace every kernel by a no-op (kernels that return values return plausible ones)."""
    def noop(*args, **kwargs):
        return None

    for module_name, names in WRITING_KERNELS.items():
        module = getattr(cnncy, module_name)
        for name in names:
            if hasattr(module, name):
                setattr(module, name, noop)
    cnncy._loss.cross_entropy_forward = lambda *args: (1.0, 1.0)
    cnncy._loss.nll_forward = lambda *args: (1.0, 1.0)
    cnncy._loss.first_bad_target = lambda *args: -1
    cnncy._optim.sgd_foreach = lambda *args: True


def time_step(model_name, batch, steps, rounds):
    """Median over rounds of the mean time of `steps` kernel-free training steps, in microseconds."""
    cnncy.manual_seed(0)
    model, criterion = build(model_name, cnncy), build_criterion(model_name, cnncy)
    optimizer = cnncy.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images, labels = cnncy.zeros(batch, 1, 28, 28), cnncy.tensor([0] * batch)

    def step():
        optimizer.zero_grad()
        loss = criterion(model(images), labels)
        loss.backward()
        optimizer.step()

    for _ in range(steps // 10):
        step()
    timings = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        timings.append((time.perf_counter() - start) / steps * 1e6)
    return statistics.median(timings)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="simple,lenet,examplesnet")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3000, help="steps per round (default 3000)")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    cnncy.set_num_threads(1)
    stub_kernels()
    print(f"cnncy {cnncy.__version__} from {os.path.dirname(cnncy.__file__)}; "
          f"Python layer: {cnncy.config.config()['python_layer']}")
    print(f"Kernel-free training step (SGD momentum), batch {args.batch}, median over {args.rounds} rounds "
          f"of {args.steps} steps:")
    print("\n| model | microseconds per step |\n|---|---|")
    for name in args.models.split(","):
        print(f"| {name} | {time_step(name, args.batch, args.steps, args.rounds):.1f} |")


if __name__ == "__main__":
    main()
