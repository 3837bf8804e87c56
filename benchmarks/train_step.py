"""What does a cooperative training step cost, against its parts and against one network?

Side by side in one run, on the CPU, at the preview profile's architecture and batch:

- the whole cooperative step: the Leader, every Teammate at full depth, every sub-network
  with a sampled Gumbel mask, the summed objective, one backward, one SGD step;
- the sum of its parts: each of those forward-backward passes timed alone (cross-entropy on
  one network), plus the SGD step alone;
- single-network training (one plain network, cross-entropy) in images per second;
- the cooperative step under both gate estimators (``gate_gradient``): ``kept`` computes only
  the blocks a sub-network keeps, ``all`` computes every block (same weights, same draws).

Measurements are interleaved round by round so that drift in machine speed hits all alike.
Targets: the cooperative step takes at most 1.10x the sum of its parts; ``kept`` is at least
1.25x faster than ``all`` (its FLOPs ideal is printed beside it).

    python benchmarks/train_step.py              # preview profile's settings
    python benchmarks/train_step.py --rounds 3   # quicker
    python benchmarks/train_step.py --record results/benchmarks/train_step.json  # for the book
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from coop_utils.config import RunConfig, load_config
from coop_utils.evaluate import count_flops
from coop_utils.runs import write_benchmark
from coop_utils.systems import StepRandomness, build_system

TARGET = 1.10
SPEED_UP_TARGET = 1.25


def _timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


@dataclass
class CooperativeStep:
    """One training step of ``config``'s system on a fixed random batch, as the loop takes it:
    the gradients of the batch (``backward_step``), then an SGD step. Call it to run one."""

    system: torch.nn.Module
    optimizer: torch.optim.Optimizer
    images: torch.Tensor
    labels: torch.Tensor
    randomness: StepRandomness

    def __call__(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.system.backward_step(self.images, self.labels, self.randomness)
        self.optimizer.step()


def cooperative_step(
    config: RunConfig, num_classes: int, image_size: int, device: str | torch.device = "cpu"
) -> CooperativeStep:
    """Build ``config``'s system channels-last on ``device``, a random batch of
    ``config.batch_size`` and the epoch's scaling factors (seeded: the same on every call)."""
    torch.manual_seed(0)
    system = build_system(config, num_classes, image_size)
    system = system.to(device, memory_format=torch.channels_last)
    shape = (config.batch_size, 3, image_size, image_size)
    images = torch.randn(shape, device=device).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, num_classes, (config.batch_size,), device=device)
    randomness = StepRandomness(torch.Generator().manual_seed(1), torch.Generator().manual_seed(2))
    system.start_epoch(randomness)
    optimizer = torch.optim.SGD(system.parameters(), lr=0.01, momentum=0.9)
    return CooperativeStep(system, optimizer, images, labels, randomness)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="preview")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--record", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()

    config = load_config(args.profile, device="cpu")
    num_classes, size, batch = config.num_classes or 100, config.image_size or 32, config.batch_size
    cooperative = cooperative_step(config, num_classes, size)
    system, optimizer, randomness = (
        cooperative.system,
        cooperative.optimizer,
        cooperative.randomness,
    )
    images, labels = cooperative.images, cooperative.labels
    estimators = {  # the same initial weights, batch and draws under each gate estimator
        estimator: cooperative_step(config.replace(gate_gradient=estimator), num_classes, size)
        for estimator in ("kept", "all")
    }

    def pass_alone(net, scaling_factor=None):
        def run():
            if scaling_factor is None:
                logits = net(images)
            else:  # a mask sampled afresh, as the step does
                logits = system._subnetwork(net, scaling_factor, images, randomness)
            F.cross_entropy(logits, labels).backward()

        return run

    parts = {}
    if system.leader is not None:
        parts["Leader, full depth"] = pass_alone(system.leader)
    for index, net in enumerate(system.teammates):
        parts[f"Teammate {index}, full depth"] = pass_alone(net)
        for s in randomness.epoch_factors[index]:
            parts[f"Teammate {index}, sub-network s={s:g}"] = pass_alone(net, s)

    def sgd_step():
        optimizer.step()

    parts["SGD step"] = sgd_step
    single = system.teammates[0]
    single_optimizer = torch.optim.SGD(single.parameters(), lr=0.01, momentum=0.9)

    def single_step():
        loss = F.cross_entropy(single(images), labels)
        single_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        single_optimizer.step()

    timings: dict[str, list[float]] = {"cooperative step": [], "single-network step": []}
    timings |= {name: [] for name in parts} | {f"step, {name}": [] for name in estimators}
    for round_index in range(args.rounds + 1):  # the first round warms up
        measured = {"cooperative step": _timed(cooperative)}
        for name, step in estimators.items():
            measured[f"step, {name}"] = _timed(step)
        for name, part in parts.items():
            optimizer.zero_grad(set_to_none=name != "SGD step")  # the step updates real tensors
            measured[name] = _timed(part)
        measured["single-network step"] = _timed(single_step)
        if round_index:
            for name, seconds in measured.items():
                timings[name].append(seconds)
    median = {name: statistics.median(values) for name, values in timings.items()}

    print(
        f"torch {torch.__version__}, {platform.machine()}, {torch.get_num_threads()} threads, CPU"
    )
    print(
        f"{config.arch} at {size}x{size}, {num_classes} classes, batch {batch}, profile "
        f"{args.profile}, channels-last, median of {args.rounds} interleaved rounds\n"
    )
    print(f"{'part':<36} {'ms':>9}")
    for name in parts:
        print(f"{name:<36} {median[name] * 1e3:>9.1f}")
    parts_sum = sum(median[name] for name in parts)
    ratio = median["cooperative step"] / parts_sum
    print(f"{'sum of the parts':<36} {parts_sum * 1e3:>9.1f}")
    print(f"{'cooperative step':<36} {median['cooperative step'] * 1e3:>9.1f}")
    verdict = "PASS" if ratio <= TARGET else "FAIL"
    print(f"\nstep / sum of parts: {ratio:.3f}  (target <= {TARGET:.2f})  {verdict}")
    cooperative_rate = batch / median["cooperative step"]
    single_rate = batch / median["single-network step"]
    print(
        f"images/s: cooperative {cooperative_rate:.0f}, single network {single_rate:.0f} "
        f"({single_rate / cooperative_rate:.1f}x; the cooperative step trains "
        f"{len(parts) - 1} passes)"
    )
    speed_up = median["step, all"] / median["step, kept"]
    ideal = _flops_ideal(system, randomness.epoch_factors)
    print(
        f"cooperative step, gate_gradient all {median['step, all'] * 1e3:.1f} ms, kept "
        f"{median['step, kept'] * 1e3:.1f} ms (factors drawn: {randomness.epoch_factors}; "
        f"target >= {SPEED_UP_TARGET:.2f}x: "
        f"{'PASS' if speed_up >= SPEED_UP_TARGET else 'FAIL'})"
    )
    if args.record:
        results = {
            "profile": args.profile,
            "arch": config.arch,
            "image_size": size,
            "num_classes": num_classes,
            "batch_size": batch,
            "rounds": args.rounds,
            "parts_ms": {name: median[name] * 1e3 for name in parts},
            "parts_sum_ms": parts_sum * 1e3,
            "cooperative_step_ms": median["cooperative step"] * 1e3,
            "single_network_step_ms": median["single-network step"] * 1e3,
            "ratio": ratio,
            "target": TARGET,
            "images_per_s": {"cooperative": cooperative_rate, "single network": single_rate},
            "gate_gradient_default": config.gate_gradient,
            "step_ms_by_gate_gradient": {
                name: median[f"step, {name}"] * 1e3 for name in estimators
            },
            "kept_over_all_speed_up": speed_up,
            "kept_over_all_flops_ideal": ideal,
            "drawn_factors": randomness.epoch_factors,
        }
        print(f"recorded: {write_benchmark(args.record, 'train_step', results)}")
    print(f"cooperative step speed-up, kept over all: {speed_up:.2f}x (FLOPs ideal {ideal:.2f}x)")


def _flops_ideal(system, drawn_factors) -> float:
    """Training FLOPs of a step computing every block over one computing only the kept ones:
    the passes' forward FLOPs (the backward costs a fixed multiple of each pass's forward)."""
    full = count_flops(system.teammates[0])
    shared = full * (len(system.teammates) + (system.leader is not None))
    sub_all = full * sum(len(factors) for factors in drawn_factors)
    sub_kept = sum(
        count_flops(net, s)
        for net, factors in zip(system.teammates, drawn_factors, strict=True)
        for s in factors
    )
    return (shared + sub_all) / (shared + sub_kept)


if __name__ == "__main__":
    main()
