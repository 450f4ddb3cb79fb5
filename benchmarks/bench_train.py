"""Time a training step and no-grad inference of small CNNs in torch, cnncy and onnxruntime.

    python benchmarks/bench_train.py                      # every library, default workloads, 5 rounds
    python benchmarks/bench_train.py --lib cnncy --workloads simple-train-64,lenet-train-64
    python benchmarks/bench_train.py --threads-scaling    # cnncy train steps at 1 vs 2 threads

A workload is MODEL-MODE-BATCH: MODEL in models.MODELS, MODE `train` (zero_grad, forward, loss,
backward, SGD-momentum step) or `infer` (eval mode, no_grad forward; onnxruntime runs these too).
The parent process starts one worker process per library per round, alternating libraries so that
slow drifts of the machine hit all of them alike, and prints the per-workload medians as markdown.
"""
import argparse
import io
import json
import sys
import warnings
from pathlib import Path

import harness
import models

DEFAULT_WORKLOADS = ("simple-train-1", "simple-train-4", "simple-train-64", "simple-infer-64",
                     "simple-infer-256", "lenet-train-64", "examplesnet-train-64")
SCALING_WORKLOADS = ("simple-train-64", "lenet-train-64", "examplesnet-train-64")
LIBRARIES = ("torch", "cnncy", "onnxruntime")
MODES = ("train", "infer")
SGD_SETTINGS = {"lr": 0.01, "momentum": 0.9}


def parse_workload(text):
    """'lenet-train-64' -> ('lenet', 'train', 64), or argparse's error for anything else."""
    parts = text.strip().split("-")
    if (len(parts) != 3 or parts[0] not in models.MODELS or parts[1] not in MODES
            or not parts[2].isdigit() or int(parts[2]) < 1):
        raise argparse.ArgumentTypeError(
            f"bad workload {text!r}: expected MODEL-MODE-BATCH with MODEL in {sorted(models.MODELS)}, "
            f"MODE in {MODES} and BATCH >= 1, e.g. simple-train-64")
    return parts[0], parts[1], int(parts[2])


def workload_list(text):
    return [parse_workload(item) for item in text.split(",") if item.strip()]


def workload_name(workload):
    return "-".join(map(str, workload))


def runs_workload(lib, workload):
    """onnxruntime only does inference; torch and cnncy do everything."""
    return lib != "onnxruntime" or workload[1] == "infer"


# ------------------------------------------------------------------ worker side
def torch_like_step(lib_name, workload):
    """A no-argument callable doing one train step or one inference of `workload` in torch or cnncy."""
    lib, _, _, optim = harness.import_library(lib_name)
    model_name, mode, batch = workload
    lib.manual_seed(0)
    model = models.build(model_name, lib)
    images, labels = harness.make_batch(lib, batch, models.INPUT_SHAPE, models.NUM_CLASSES)
    if mode == "infer":
        model.eval()

        def infer():
            with lib.no_grad():
                model(images)
        return infer

    criterion = models.build_criterion(model_name, lib)
    optimizer = optim.SGD(model.parameters(), **SGD_SETTINGS)

    def train_step():
        optimizer.zero_grad()
        loss = criterion(model(images), labels)
        loss.backward()
        optimizer.step()
    return train_step


def onnxruntime_step(workload, threads):
    """A no-argument callable running the torch model of `workload`, exported to ONNX, in onnxruntime."""
    import onnxruntime
    import torch

    model_name, _, batch = workload
    torch.manual_seed(0)
    model = models.build(model_name, torch).eval()
    images, _ = harness.make_batch(None, batch, models.INPUT_SHAPE, models.NUM_CLASSES)
    exported = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter announces its deprecation
        warnings.simplefilter("ignore")
        # dynamo=False: the TorchScript exporter needs only `onnx`, the dynamo one also onnxscript.
        torch.onnx.export(model, (torch.from_numpy(images),), exported, dynamo=False,
                          input_names=["images"], output_names=["scores"])
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = onnxruntime.InferenceSession(exported.getvalue(), options, providers=["CPUExecutionProvider"])
    feed = {"images": images}
    return lambda: session.run(None, feed)


def run_worker(args):
    lib_name = args.worker
    if lib_name == "onnxruntime":
        import onnxruntime
        import torch
        torch.set_num_threads(args.threads)
        versions = {**harness.library_versions("torch"), "onnxruntime": onnxruntime.__version__}
    else:
        lib = harness.import_library(lib_name)[0]
        harness.set_library_threads(lib, args.threads)
        versions = harness.library_versions(lib_name)
    results = {}
    for workload in args.workloads:
        try:
            step = (onnxruntime_step(workload, args.threads) if lib_name == "onnxruntime"
                    else torch_like_step(lib_name, workload))
            before = region_round_trip(lib_name, args.threads)
            seconds, iters = harness.seconds_per_call(step, args.warmup, args.iters, args.seconds)
            results[workload_name(workload)] = {"ms": seconds * 1e3, "iters": iters}
            if before is not None:
                results[workload_name(workload)]["region_us"] = max(before, region_round_trip(lib_name, args.threads))
        except Exception as error:  # a library missing an op still reports the other workloads
            results[workload_name(workload)] = {"error": harness.describe_error(error)}
    print(json.dumps({"lib": lib_name, "threads": args.threads, "versions": versions, "results": results}))


def region_round_trip(lib_name, threads):
    """cnncy's parallel-region round trip at `threads` threads, in microseconds (None for another
    library or one thread): the probe of how fast the cores reach each other that the report prints
    next to the timings.  Only in cnncy's worker: a second OpenMP runtime would distort torch's."""
    if lib_name != "cnncy" or threads < 2:
        return None
    import cnncy
    return cnncy._parallel.region_round_trip(threads)


# ------------------------------------------------------------------ parent side
def worker_args(args, workloads):
    timing = ["--warmup", args.warmup, "--seconds", args.seconds]
    if args.iters is not None:
        timing += ["--iters", args.iters]
    return ["--workloads", ",".join(map(workload_name, workloads)), *timing]


def collect(args, libs, thread_counts):
    """Run the workers round-robin; {(lib, threads, workload name): [ms per round]}, errors, reports.

    A result's region round trip (cnncy's workers at 2+ threads) goes into timings too, under the key
    (lib, threads, workload name, "region_us")."""
    timings, errors, reports = {}, {}, []
    for round_index in range(args.rounds):
        for threads in thread_counts:
            for lib in libs:
                workloads = [w for w in args.workloads if runs_workload(lib, w)]
                if not workloads:
                    continue
                report = harness.run_worker(Path(__file__), lib, worker_args(args, workloads), threads,
                                            args.unset_openblas_overrides)
                reports.append(report)
                print(f"round {round_index + 1}/{args.rounds}: {lib} at {threads} thread(s) "
                      f"{'failed' if 'error' in report else 'done'}", file=sys.stderr)
                for workload in workloads:
                    name = workload_name(workload)
                    result = report.get("results", {}).get(name, {"error": report.get("error")})
                    if "ms" in result:
                        timings.setdefault((lib, threads, name), []).append(result["ms"])
                        if "region_us" in result:
                            timings.setdefault((lib, threads, name, "region_us"), []).append(result["region_us"])
                    else:
                        errors[(lib, name)] = result["error"]
    return timings, errors, reports


def throughput_cell(ms, batch):
    if ms is None:
        return "n/a"
    return f"{harness.format_ms(ms)} ms ({batch * 1e3 / ms:,.0f} img/s)"


def comparison_table(args, libs, timings):
    medians = {key: harness.median_or_none(values) for key, values in timings.items()}
    header = ["workload", *libs]
    ratio_pairs = [(other, "cnncy") for other in ("torch", "onnxruntime") if other in libs and "cnncy" in libs]
    header += [f"{other} / cnncy" for other, _ in ratio_pairs]
    rows = []
    for workload in args.workloads:
        name = workload_name(workload)
        ms = {lib: medians.get((lib, args.threads, name)) for lib in libs}
        row = [name] + [throughput_cell(ms[lib], workload[2]) if runs_workload(lib, workload) else "-"
                        for lib in libs]
        row += [harness.format_ratio(ms[other], ms[base]) if runs_workload(other, workload) else "-"
                for other, base in ratio_pairs]
        rows.append(row)
    return harness.markdown_table(header, rows)


def scaling_table(args, libs, thread_counts, timings):
    medians = {key: harness.median_or_none(values) for key, values in timings.items()}
    first, last = thread_counts[0], thread_counts[-1]
    header = ["workload", "library", *(f"{t} thread(s)" for t in thread_counts), f"speed-up {first} -> {last}"]
    rows = []
    for workload in args.workloads:
        name = workload_name(workload)
        for lib in libs:
            ms = [medians.get((lib, threads, name)) for threads in thread_counts]
            rows.append([name, lib, *(throughput_cell(value, workload[2]) for value in ms),
                         harness.format_ratio(ms[0], ms[-1])])
    return harness.markdown_table(header, rows)


def rounds_table(args, thread_counts, timings):
    """cnncy's speed-up per round next to its multi-thread worker's region round trip (None if cnncy
    did not run at two thread counts)."""
    first, last = thread_counts[0], thread_counts[-1]
    rows = []
    for workload in args.workloads:
        name = workload_name(workload)
        slow, fast = timings.get(("cnncy", first, name), []), timings.get(("cnncy", last, name), [])
        probes = timings.get(("cnncy", last, name, "region_us"), [])
        if len(slow) != len(fast) or len(probes) != len(fast) or not fast or first == last:
            continue
        cells = [f"{harness.format_ratio(a, b)} ({probe:.2f} us)" for a, b, probe in zip(slow, fast, probes)]
        rows.append([name, " ".join(cells)])
    if not rows:
        return None
    return harness.markdown_table(["workload", f"cnncy speed-up {first} -> {last} by round (region round trip)"], rows)


def region_line(args, timings):
    """One line with cnncy's region round trip per round, for the comparison report."""
    by_workload = [timings.get(("cnncy", args.threads, workload_name(w), "region_us"), []) for w in args.workloads]
    if not by_workload[0] or any(len(probes) != len(by_workload[0]) for probes in by_workload):
        return None  # no probes, or a workload failed in some round: rounds would not line up
    per_round = list(zip(*by_workload))
    values = ", ".join(f"{harness.median_or_none(values):.2f}" for values in per_round)
    return (f"cnncy's parallel-region round trip at {args.threads} threads, per round (median over workloads): "
            f"{values} us.")


def print_report(args, libs, thread_counts, timings, errors, reports):
    threads_text = ",".join(map(str, thread_counts))
    print(harness.machine_line(threads_text))
    print(harness.versions_line(reports))
    timed = f"{args.iters} timed steps" if args.iters else f"~{args.seconds} s of timed steps"
    reading = ("Speed-up = time at the first thread count / time at the last." if args.threads_scaling
               else "Ratios = other library's time / cnncy's time: > 1 means cnncy is faster.")
    print(f"Median over {args.rounds} rounds (one fresh process per library per round; "
          f"{args.warmup} warm-up steps, then the median of {timed} per workload). {reading}")
    print()
    if args.threads_scaling:
        print(scaling_table(args, libs, thread_counts, timings))
        by_round = rounds_table(args, thread_counts, timings)
        if by_round:
            print()
            print(by_round)
    else:
        print(comparison_table(args, libs, timings))
        line = region_line(args, timings)
        if line:
            print()
            print(line)
    for (lib, name), message in sorted(errors.items()):
        print(f"\n{lib} {name}: {message}", end="")
    print()
    if args.json:
        raw = {"timings_ms": {" ".join(map(str, key)): values for key, values in timings.items()},
               "errors": {" ".join(key): message for key, message in errors.items()}, "reports": reports}
        Path(args.json).write_text(json.dumps(raw, indent=1))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lib", choices=LIBRARIES + ("all",), default="all")
    parser.add_argument("--workloads", type=workload_list, default=None,
                        help="comma-separated MODEL-MODE-BATCH list (default: "
                             f"{','.join(DEFAULT_WORKLOADS)}; with --threads-scaling: {','.join(SCALING_WORKLOADS)})")
    parser.add_argument("--threads", type=int, default=2, help="threads for every library (default 2)")
    parser.add_argument("--rounds", type=int, default=5, help="worker processes per library (default 5)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls per workload (default 3)")
    parser.add_argument("--iters", type=int, default=None,
                        help="timed calls per workload (default: as many as fit in --seconds)")
    parser.add_argument("--seconds", type=float, default=0.3,
                        help="target duration of each timed loop when --iters is not given (default 0.3)")
    parser.add_argument("--threads-scaling", action="store_true",
                        help="time cnncy (and torch with --lib all) at each of --scaling-threads")
    parser.add_argument("--scaling-threads", default="1,2", help="thread counts for --threads-scaling (default 1,2)")
    parser.add_argument("--unset-openblas-overrides", action="store_true",
                        help="drop OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE from the workers' environment")
    parser.add_argument("--json", help="also write every round's raw timings to this file")
    parser.add_argument("--worker", choices=LIBRARIES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.workloads is None:
        args.workloads = workload_list(",".join(SCALING_WORKLOADS if args.threads_scaling else DEFAULT_WORKLOADS))
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        run_worker(args)
        return
    if args.threads_scaling:
        libs = ["torch", "cnncy"] if args.lib == "all" else [args.lib]
        thread_counts = [int(t) for t in args.scaling_threads.split(",")]
    else:
        libs = list(LIBRARIES) if args.lib == "all" else [args.lib]
        thread_counts = [args.threads]
    timings, errors, reports = collect(args, libs, thread_counts)
    print_report(args, libs, thread_counts, timings, errors, reports)


if __name__ == "__main__":
    main()
