"""GFLOP/s of cnncy's convolutions in the benchmark models, next to the machine's measured sgemm peak.

    python benchmarks/bench_conv_gflops.py                 # cnncy, every conv layer, batch 64
    python benchmarks/bench_conv_gflops.py --lib all       # torch's numbers beside cnncy's

Every Conv2d layer of models.MODELS is timed alone (as plain conv2d: inside the models cnncy may fuse
conv2d -> relu -> max_pool2d instead) at the input shape it sees in its model:
  forward   no_grad forward;
  backward  only the backward call after an untimed forward: grad_weight and grad_bias, plus
            grad_input for every layer but a model's first (whose input is the images, as in training).
FLOPs count multiply-adds as 2: forward 2*N*Cout*Hout*Wout*Cin*kh*kw; backward that once per gradient
(grad_weight, grad_input).  The peak is numpy's float32 2048x2048 matmul on the same thread count, in
its own process with OPENBLAS_NUM_THREADS set and OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE unset (those
overrides make a current OpenBLAS pick a slower kernel than the CPU supports): the fastest of 10
products, median over rounds.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

import harness
import models

LIBRARIES = ("cnncy", "torch")
SGEMM_SIZE = 2048


# ------------------------------------------------------------------ worker side
def conv_input_shapes(lib, nn, F, model_name, batch):
    """[(conv module, input shape)] of model `model_name`, in forward order, from one traced forward."""
    model = models.build(model_name, lib).eval()
    seen = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            def recording_forward(x, module=module, forward=module.forward):
                seen.append((module, tuple(x.shape)))
                return forward(x)
            module.forward = recording_forward
    images, _ = harness.make_batch(lib, batch, models.INPUT_SHAPE, models.NUM_CLASSES)
    with lib.no_grad():
        model(images)
    for module, _ in seen:
        del module.forward  # back to the class's forward
    return seen


def conv_flops(conv, input_shape, output_shape):
    """FLOPs of one forward pass (2 per multiply-add)."""
    kh, kw = conv.kernel_size
    n, cout, hout, wout = output_shape
    return 2 * n * cout * hout * wout * (input_shape[1] // conv.groups) * kh * kw


def computed(output):
    """`output` with its value computed.

    cnncy's conv2d may return a deferred tensor (so that a following relu and max-pool can fuse with
    it) whose value is computed when first needed; reading grad_fn computes it.  In torch the read is
    free."""
    output.grad_fn
    return output


def time_conv_layer(lib, conv, input_shape, input_needs_grad, args):
    """Forward and backward milliseconds and GFLOP/s of `conv` on random input of `input_shape`."""
    rng = np.random.default_rng(1)
    x = lib.from_numpy(rng.standard_normal(input_shape, dtype=np.float32))
    x.requires_grad_(input_needs_grad)
    with lib.no_grad():
        output_shape = tuple(conv(x).shape)
    grad_output = lib.from_numpy(rng.standard_normal(output_shape, dtype=np.float32))
    parameters = list(conv.parameters())

    def forward_no_grad():
        with lib.no_grad():
            computed(conv(x))

    def forward_for_backward():
        for tensor in parameters + [x]:
            tensor.grad = None  # as zero_grad(set_to_none=True): no accumulation cost
        return (computed(conv(x)),)

    timing = (args.warmup, args.iters, args.seconds)
    forward_s, _ = harness.seconds_per_call(forward_no_grad, *timing)
    backward_s, _ = harness.seconds_per_call(lambda y: y.backward(grad_output), *timing,
                                             setup=forward_for_backward)
    flops = conv_flops(conv, input_shape, output_shape)
    backward_flops = flops * (2 if input_needs_grad else 1)
    return {"forward_ms": forward_s * 1e3, "forward_gflops": flops / forward_s / 1e9,
            "backward_ms": backward_s * 1e3, "backward_gflops": backward_flops / backward_s / 1e9}


def describe_conv(conv, input_shape):
    kh, kw = conv.kernel_size
    text = f"{'x'.join(map(str, input_shape))} -> {conv.out_channels}ch k{kh}x{kw}"
    if tuple(conv.stride) != (1, 1):
        text += f" s{conv.stride[0]}"
    if tuple(conv.padding) != (0, 0):
        text += f" p{conv.padding[0]}"
    return text


def run_conv_worker(args):
    lib, nn, F, _ = harness.import_library(args.worker)
    harness.set_library_threads(lib, args.threads)
    lib.manual_seed(0)
    layers = {}
    for model_name in models.MODELS:
        for index, (conv, input_shape) in enumerate(conv_input_shapes(lib, nn, F, model_name, args.batch)):
            name = f"{model_name} conv{index + 1}"
            entry = {"shape": describe_conv(conv, input_shape)}
            try:
                entry.update(time_conv_layer(lib, conv, input_shape, index > 0, args))
            except Exception as error:
                entry["error"] = harness.describe_error(error)
            layers[name] = entry
    print(json.dumps({"lib": args.worker, "versions": harness.library_versions(args.worker), "layers": layers}))


def run_sgemm_worker(args):
    """numpy float32 matmul GFLOP/s of the fastest of --sgemm-repeats products after one warm-up.

    The fastest, not the median: a peak is what the machine can do, and a product of ~40 ms often
    loses its core for part of the time on a shared machine."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((SGEMM_SIZE, SGEMM_SIZE), dtype=np.float32)
    b = rng.standard_normal((SGEMM_SIZE, SGEMM_SIZE), dtype=np.float32)
    a @ b
    seconds = []
    for _ in range(args.sgemm_repeats):
        start = time.perf_counter()
        a @ b
        seconds.append(time.perf_counter() - start)
    gflops = 2 * SGEMM_SIZE ** 3 / min(seconds) / 1e9
    print(json.dumps({"lib": "numpy", "gflops": gflops, "blas": blas_description(),
                      "versions": {"numpy": np.__version__}}))


def blas_description():
    """Which BLAS, kernel and thread count numpy's matmul uses, from threadpoolctl when installed."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown (install threadpoolctl to see the BLAS kernel)"
    blas = [pool for pool in threadpool_info() if pool.get("user_api") == "blas"]
    return "; ".join(f"{pool.get('internal_api')} {pool.get('version')} {pool.get('architecture')} kernel, "
                     f"{pool.get('num_threads')} thread(s)" for pool in blas) or "none found"


# ------------------------------------------------------------------ parent side
def worker_args(args):
    timing = ["--batch", args.batch, "--warmup", args.warmup, "--seconds", args.seconds,
              "--sgemm-repeats", args.sgemm_repeats]
    return timing + (["--iters", args.iters] if args.iters is not None else [])


def gflops_cell(ms, gflops, peak):
    if ms is None:
        return "n/a"
    percent = f", {100 * gflops / peak:.0f}% of peak" if peak else ""
    return f"{harness.format_ms(ms)} ms, {gflops:.1f} GFLOP/s{percent}"


def layer_rows(libs, layer_reports, peak):
    """One row per (layer, library) with the median over rounds of each number; and the errors."""
    entries = {}  # (layer name, lib) -> [entry per round]
    for lib in libs:
        for report in layer_reports[lib]:
            for name, entry in report.get("layers", {}).items():
                entries.setdefault((name, lib), []).append(entry)
    layer_names = list(dict.fromkeys(name for name, _ in entries))
    rows, errors = [], []
    for name in layer_names:
        for lib in libs:
            layer_entries = entries.get((name, lib), [])
            timed = [entry for entry in layer_entries if "forward_ms" in entry]
            errors += [f"{lib} {name}: {entry['error']}" for entry in layer_entries if "error" in entry][:1]
            median = {key: harness.median_or_none([entry[key] for entry in timed])
                      for key in ("forward_ms", "forward_gflops", "backward_ms", "backward_gflops")}
            shape = layer_entries[0]["shape"] if layer_entries else "?"
            rows.append([name, shape, lib, gflops_cell(median["forward_ms"], median["forward_gflops"], peak),
                         gflops_cell(median["backward_ms"], median["backward_gflops"], peak)])
    return rows, errors


def collect(args, libs):
    """Each round: the sgemm worker, then one worker per library.  (sgemm reports, {lib: [reports]})."""
    script = Path(__file__)
    sgemm_reports, layer_reports = [], {lib: [] for lib in libs}
    for round_index in range(args.rounds):
        sgemm_reports.append(harness.run_worker(script, "numpy", worker_args(args), args.threads,
                                                unset_openblas_overrides=True))
        for lib in libs:
            report = harness.run_worker(script, lib, worker_args(args), args.threads)
            layer_reports[lib].append(report)
            status = f"failed: {report['error']}" if "error" in report else "done"
            print(f"round {round_index + 1}/{args.rounds}: {lib} {status}", file=sys.stderr)
    return sgemm_reports, layer_reports


def print_report(args, libs, sgemm_reports, layer_reports):
    peaks = [report["gflops"] for report in sgemm_reports if "gflops" in report]
    peak = harness.median_or_none(peaks)
    print(harness.machine_line(args.threads))
    print(harness.versions_line(sgemm_reports + [report for reports in layer_reports.values() for report in reports]))
    peak_text = f"{peak:.1f} GFLOP/s" if peak else f"not measured ({sgemm_reports[-1].get('error')})"
    print(f"sgemm peak (numpy float32 {SGEMM_SIZE}x{SGEMM_SIZE} matmul, {args.threads} thread(s), median over "
          f"rounds): {peak_text}; BLAS: {sgemm_reports[-1].get('blas', '?')}")
    print(f"Batch {args.batch}; median over {args.rounds} rounds.")
    print()
    rows, errors = layer_rows(libs, layer_reports, peak)
    print(harness.markdown_table(["layer", "input -> conv", "library", "forward", "backward"], rows))
    for message in errors:
        print(f"\n{message}", end="")
    print()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lib", choices=LIBRARIES + ("all",), default="cnncy")
    parser.add_argument("--threads", type=int, default=2, help="threads for the convolutions and the sgemm (default 2)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="worker processes per library (default 3)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=None, help="timed calls (default: as many as fit in --seconds)")
    parser.add_argument("--seconds", type=float, default=0.2)
    parser.add_argument("--sgemm-repeats", type=int, default=10)
    parser.add_argument("--worker", choices=LIBRARIES + ("numpy",), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker == "numpy":
        return run_sgemm_worker(args)
    if args.worker:
        return run_conv_worker(args)

    libs = list(LIBRARIES) if args.lib == "all" else [args.lib]
    print_report(args, libs, *collect(args, libs))


if __name__ == "__main__":
    main()
