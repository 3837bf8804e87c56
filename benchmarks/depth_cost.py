"""Does a shallower depth plan really cost less? FLOPs against measured latency per scaling factor.

For each network, one table: active blocks, FLOPs ratio to full depth, and latency
ratio to full depth at batch 1 and at a throughput batch, all measured in one run with
the scaling factors interleaved round by round so that drift in machine speed hits
every depth alike. Then the training-step time of a gated network (sampled Gumbel
mask, straight-through) against the same network without a gate.

    python benchmarks/depth_cost.py                 # resnet20 (the campaign's), 56 and 152, 32x32
    python benchmarks/depth_cost.py --archs resnet20 --rounds 3   # quick look
    python benchmarks/depth_cost.py --record results/benchmarks/depth_cost.json  # for the book
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time
from pathlib import Path

import torch

from coop_utils.evaluate import count_flops, measure_latency
from coop_utils.gating import add_gate
from coop_utils.models import SCALING_FACTORS, build_model
from coop_utils.runs import write_benchmark

LATENCY_TOLERANCE = 0.15  # target: |latency ratio - FLOPs ratio| <= 15 % of the FLOPs ratio
GATE_OVERHEAD_TARGET = 0.05


def interleaved_latency(net, scaling_factors, batch_size, rounds):
    """Median latency per scaling factor; each round times every factor once, in turn."""
    for s in scaling_factors:  # warm-up round
        measure_latency(net, s, batch_size=batch_size, warmup=0, repeats=1)
    timings = {s: [] for s in scaling_factors}
    for _ in range(rounds):
        for s in scaling_factors:
            timings[s].append(measure_latency(net, s, batch_size=batch_size, warmup=0, repeats=1))
    return {s: statistics.median(values) for s, values in timings.items()}


def depth_table(arch, image_size, batch_sizes, rounds, memory_format):
    torch.manual_seed(0)
    net = build_model(arch, num_classes=100, image_size=image_size).eval()
    net = net.to(memory_format=memory_format)
    full_flops = count_flops(net, 1.0)
    latencies = {b: interleaved_latency(net, SCALING_FACTORS, b, rounds) for b in batch_sizes}
    print(
        f"\n{arch} at {image_size}x{image_size}: {net.num_blocks} blocks, "
        f"{full_flops / 1e9:.3f} GFLOPs per image at full depth"
    )
    header = f"{'s':>4} {'blocks':>7} {'FLOPs ratio':>12}"
    header += "".join(f" {f'latency b{b}':>11} {'ratio':>6}" for b in batch_sizes)
    header += f" {'gap b' + str(batch_sizes[-1]):>9}  target"
    print(header)
    passed, rows = True, []
    for s in SCALING_FACTORS:
        flops_ratio = count_flops(net, s) / full_flops
        line = f"{s:>4.1f} {len(net.active_blocks(s)):>7d} {flops_ratio:>12.3f}"
        for b in batch_sizes:
            line += f" {latencies[b][s] * 1e3:>9.2f}ms {latencies[b][s] / latencies[b][1.0]:>6.3f}"
        throughput_ratio = latencies[batch_sizes[-1]][s] / latencies[batch_sizes[-1]][1.0]
        gap = abs(throughput_ratio - flops_ratio) / flops_ratio
        ok = gap <= LATENCY_TOLERANCE
        passed &= ok
        print(f"{line} {gap:>8.1%}  {'PASS' if ok else 'FAIL'}")
        rows.append(
            {
                "arch": arch,
                "s": s,
                "active_blocks": len(net.active_blocks(s)),
                "flops_ratio": flops_ratio,
                **{f"latency_ms_b{b}": latencies[b][s] * 1e3 for b in batch_sizes},
                **{f"latency_ratio_b{b}": latencies[b][s] / latencies[b][1.0] for b in batch_sizes},
            }
        )
    return passed, rows


def training_step_time(net, images, labels, gated, rounds, tau=1.0, scaling_factor=0.5):
    """Median seconds of forward + backward + SGD step; the gated net samples a fresh mask."""
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    net.train()

    def step():
        mask = net.gate.sample(scaling_factor, tau) if gated else None
        loss = torch.nn.functional.cross_entropy(net(images, mask=mask, run_dropped=True), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()
    timings = []
    for _ in range(rounds):
        start = time.perf_counter()
        step()
        timings.append(time.perf_counter() - start)
    return timings


def gate_overhead(arch, image_size, batch_size, rounds):
    torch.manual_seed(0)
    plain = build_model(arch, num_classes=100, image_size=image_size)
    gated = copy.deepcopy(plain)
    add_gate(gated)
    images = torch.randn(batch_size, 3, image_size, image_size)
    labels = torch.randint(0, 100, (batch_size,))
    plain_times, gated_times = [], []
    for _ in range(rounds):  # alternate so both see the same machine
        plain_times += training_step_time(plain, images, labels, gated=False, rounds=1)
        gated_times += training_step_time(gated, images, labels, gated=True, rounds=1)
    plain_median, gated_median = statistics.median(plain_times), statistics.median(gated_times)
    overhead = gated_median / plain_median - 1
    ok = overhead <= GATE_OVERHEAD_TARGET
    print(
        f"{arch:>10} batch {batch_size:>3}: plain {plain_median * 1e3:8.1f} ms, "
        f"gated {gated_median * 1e3:8.1f} ms, overhead {overhead:+6.1%}  "
        f"(target <= {GATE_OVERHEAD_TARGET:.0%}) {'PASS' if ok else 'FAIL'}"
    )
    row = {"arch": arch, "batch_size": batch_size, "plain_ms": plain_median * 1e3}
    return ok, row | {"gated_ms": gated_median * 1e3, "overhead": overhead}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["resnet20", "resnet56", "resnet152"])
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per measurement")
    parser.add_argument("--train-batch", type=int, default=64)
    parser.add_argument(
        "--memory-format",
        choices=["channels_last", "contiguous_format"],
        default="channels_last",
        help="layout of the inference network and its input (channels_last is faster on CPU)",
    )
    parser.add_argument("--record", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()

    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, CPU"
    )
    memory_format = getattr(torch, args.memory_format)
    print(f"inference memory format: {args.memory_format}")
    tables = [
        depth_table(a, args.image_size, args.batch_sizes, args.rounds, memory_format)
        for a in args.archs
    ]
    print(
        "\nTraining step, gated (sampled mask, all blocks computed for the straight-through "
        "gradient) against plain:"
    )
    overheads = [
        gate_overhead(a, args.image_size, args.train_batch, args.rounds) for a in args.archs
    ]
    passed = all(ok for ok, _ in tables + overheads)
    print(f"\n{'all targets met' if passed else 'some targets missed'}")
    if args.record:
        results = {
            "image_size": args.image_size,
            "batch_sizes": args.batch_sizes,
            "rounds": args.rounds,
            "memory_format": args.memory_format,
            "latency_tolerance": LATENCY_TOLERANCE,
            "gate_overhead_target": GATE_OVERHEAD_TARGET,
            "depths": [row for _, rows in tables for row in rows],
            "gate_overhead": [row for _, row in overheads],
            "targets_met": passed,
        }
        print(f"recorded: {write_benchmark(args.record, 'depth_cost', results)}")


if __name__ == "__main__":
    main()
