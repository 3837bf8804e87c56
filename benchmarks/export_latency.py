"""Is a shipped depth as fast as the gated network? An exported plan against ``net(x, s)``.

For each scaling factor and batch size, one table row: the latency of the gated network at that
plan (``net(x, s=s)``: gate, plan lookup, a Python branch per block) and of the same plan exported
by :func:`coop_utils.export.export_plan`, run eagerly, as an ExportedProgram (its .pt2 file
loaded back with ``torch.export.load``) and in ONNX Runtime (its file, when the ``[export]``
extra is installed). Every round times each variant in turn with ``torch.utils.benchmark.Timer``,
in an order drawn afresh each round, so drift in machine speed hits them alike. A variant's
latency is the median over rounds; its ratio to the gated network is the median of the ratios of
each round, a paired comparison that cancels what a busy machine does between rounds. The
network is a gated ResNet with per-depth batch-norm statistics calibrated on random batches:
weights do not change the time.

    python benchmarks/export_latency.py                   # resnet56, 32x32, CPU
    python benchmarks/export_latency.py --rounds 5        # quick look
    python benchmarks/export_latency.py --record results/benchmarks/export_latency.json
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import tempfile
from pathlib import Path

import torch
import torch.utils.benchmark

from coop_utils import export
from coop_utils.evaluate import count_flops
from coop_utils.gating import add_gate
from coop_utils.models import build_model, calibrate_batchnorm
from coop_utils.runs import write_benchmark

#: target: each exported form is never slower than the gated network at the same plan; a ratio
#: up to 1 + NOISE passes, the spread of repeated measurements on a shared CPU
NOISE = 0.03
GATED = "gated net(x, s)"


def gated_network(arch: str, image_size: int, memory_format) -> torch.nn.Module:
    torch.manual_seed(0)
    net = build_model(arch, num_classes=100, image_size=image_size)
    torch.nn.init.normal_(add_gate(net).logits)  # a learned-looking plan, not the first blocks
    batches = [torch.randn(16, 3, image_size, image_size) for _ in range(2)]
    calibrate_batchnorm(net, batches)
    return net.eval().to(memory_format=memory_format)


def variants(net, s, folder: Path) -> dict:
    """name -> a call taking a batch of images, all at the plan of ``s``."""
    shipped = export.export_plan(net, s)
    calls = {
        GATED: lambda images: net(images, s=s),
        "exported, eager": shipped,
        "ExportedProgram": export.load_plan(export.save_plan(shipped, folder / f"s{s:g}.pt2")).net,
    }
    try:
        export.check_format("onnx")
    except ValueError as missing:
        print(f"ONNX Runtime left out: {missing}")
    else:
        onnx = export.load_plan(export.save_plan(shipped, folder / f"s{s:g}.onnx")).net
        calls["ONNX Runtime"] = lambda images: onnx(images.contiguous())
    return calls


def interleaved(calls: dict, images: torch.Tensor, rounds: int, span: float = 0.02) -> dict:
    """Seconds per call of each variant, one figure per round. A round times every variant in
    turn with ``torch.utils.benchmark.Timer`` (at torch's thread count), each over enough
    back-to-back calls to span ``span`` seconds (one call of the gated network sets how many),
    in an order drawn afresh for each round."""
    threads = torch.get_num_threads()
    timers = {
        name: torch.utils.benchmark.Timer(
            "call(images)", globals={"call": call, "images": images}, num_threads=threads
        )
        for name, call in calls.items()
    }
    with torch.inference_mode():
        for timer in timers.values():  # warm-up: the first calls allocate and optimise
            timer.timeit(5)
        once = next(iter(timers.values())).timeit(1).median
        repeats = max(1, round(span / once))
        timings = {name: [] for name in calls}
        order, shuffle = list(calls), random.Random(0).shuffle
        for _ in range(rounds):  # a new order each round: no variant always first, or always
            shuffle(order)  # after another (whose memory use would set the allocator's state)
            for name in order:
                timings[name].append(timers[name].timeit(repeats).median)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet56")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--scaling-factors", type=float, nargs="+", default=[0.2, 0.5, 1.0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--rounds", type=int, default=21, help="timed rounds per measurement")
    parser.add_argument(
        "--memory-format",
        choices=["channels_last", "contiguous_format"],
        default="channels_last",
        help="layout of the PyTorch networks and their input (ONNX Runtime takes contiguous)",
    )
    parser.add_argument("--record", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()

    memory_format = getattr(torch, args.memory_format)
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, CPU, {args.memory_format}"
    )
    net = gated_network(args.arch, args.image_size, memory_format)
    print(f"{args.arch} at {args.image_size}x{args.image_size}, {net.num_blocks} blocks")
    print(f"{'s':>4} {'blocks':>6} {'batch':>5}  {'variant':<16} {'ms':>9} {'ratio':>6}  target")
    rows, passed = [], True
    with tempfile.TemporaryDirectory() as folder:
        for s in args.scaling_factors:
            calls = variants(net, s, Path(folder))
            blocks, flops = len(net.active_blocks(s)), count_flops(net, s)
            for batch in args.batch_sizes:
                images = torch.randn(batch, 3, args.image_size, args.image_size)
                images = images.contiguous(memory_format=memory_format)
                timings = interleaved(calls, images, args.rounds)
                for name, values in timings.items():
                    seconds = statistics.median(values)
                    ratio = statistics.median(
                        v / g for v, g in zip(values, timings[GATED], strict=True)
                    )
                    ok = name == GATED or ratio <= 1 + NOISE
                    passed &= ok
                    verdict = "" if name == GATED else ("PASS" if ok else "FAIL")
                    print(
                        f"{s:>4.1f} {blocks:>6d} {batch:>5d}  {name:<16} "
                        f"{seconds * 1e3:>9.3f} {ratio:>6.3f}  {verdict}"
                    )
                    rows.append(
                        {
                            "s": s,
                            "active_blocks": blocks,
                            "flops": flops,
                            "batch_size": batch,
                            "variant": name,
                            "latency_ms": seconds * 1e3,
                            "ratio_to_gated": ratio,
                        }
                    )
    print(
        f"target: every exported form within {1 + NOISE:.2f} x the gated network's time, "
        f"at every plan and batch: {'PASS' if passed else 'FAIL'}"
    )
    if args.record:
        results = {
            "arch": args.arch,
            "image_size": args.image_size,
            "memory_format": args.memory_format,
            "rounds": args.rounds,
            "target_ratio": 1 + NOISE,
            "passed": passed,
            "rows": rows,
        }
        print(f"recorded: {write_benchmark(args.record, 'export_latency', results)}")


if __name__ == "__main__":
    main()
