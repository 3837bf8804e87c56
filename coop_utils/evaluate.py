"""What a depth costs and what it buys: FLOPs, latency, and choosing a depth for a budget.

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (convolutions and
matrix products, two FLOPs per multiply-add) under ``torch.no_grad()``: the counter
sees nothing under ``torch.inference_mode()``. Latency is the median of timed
forward passes after a warm-up.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from coop_utils.config import RunConfig
from coop_utils.datasets import DATASETS
from coop_utils.loaders import BatchLoader, Data, seeded_generator
from coop_utils.models import SCALING_FACTORS, SkippableResNet, check_scaling_factor, train_mode
from coop_utils.systems import (
    CooperativeSystem,
    IndependentSystem,
    StepRandomness,
    System,
    autocast,
    build_system,
)


def _device_of(net: nn.Module) -> torch.device:
    return next(net.parameters()).device


def count_flops(net: SkippableResNet, s: float = 1.0, image_size: int | None = None) -> int:
    """Forward FLOPs of one image at scaling factor ``s``."""
    check_scaling_factor(s)
    size = image_size or net.image_size
    image = torch.zeros(1, 3, size, size, device=_device_of(net))
    counter = FlopCounterMode(display=False)
    with train_mode(net, False), torch.no_grad(), counter:
        net(image, s=s)
    return int(counter.get_total_flops())


def _forward_flops(module: nn.Module, forward: Callable[[Tensor], object], size: int) -> int:
    image = torch.zeros(1, 3, size, size, device=_device_of(module))
    counter = FlopCounterMode(display=False)
    with train_mode(module, False), torch.no_grad(), counter:
        forward(image)
    return int(counter.get_total_flops())


def training_flops(config: RunConfig, num_classes: int, image_size: int, steps_per_epoch: int):
    """The training compute of ``config``'s run: ``(total FLOPs, mean forward FLOPs per image
    per step)``.

    Each step's forward FLOPs per image are counted (:func:`count_flops`) over the passes the
    step runs: for the cooperative method the Leader, every Teammate at full depth and each
    sub-network at the scaling factors actually drawn, replayed from the run's seeded
    generators (a pass with ``gate_gradient: all`` computes every block); every network of the
    independent arm; the backbone and every exit of BYOT and BranchyNet. The total is
    ``3 x forward`` (a backward pass costs about two forwards) x the images of every step
    (training drops the last partial batch, so each step holds ``batch_size`` images).
    """
    system = build_system(config, num_classes, image_size)
    steps = min(
        steps_per_epoch * config.epochs, config.max_steps or steps_per_epoch * config.epochs
    )
    if isinstance(system, CooperativeSystem):
        teammates = list(system.teammates)
        fixed = sum(count_flops(net) for net in teammates)
        fixed += count_flops(system.leader) if system.leader is not None else 0
        every_block = config.gate_gradient == "all"
        cost = {
            s: count_flops(teammates[0], 1.0 if every_block else s) for s in config.sampled_factors
        }
        forward, done = 0, 0
        for epoch in range(config.epochs):
            randomness = StepRandomness(seeded_generator(config.seed, epoch, 1), torch.Generator())
            system.start_epoch(randomness)
            for _ in range(min(steps_per_epoch, steps - done)):
                drawn = system._step_factors(randomness)
                forward += fixed + sum(cost[s] for factors in drawn for s in factors)
                done += 1
    elif isinstance(system, IndependentSystem):
        per_step = sum(
            count_flops(net, f[0]) for f, net in zip(system.factors, system.nets, strict=True)
        )
        forward = per_step * steps
    else:
        forward = _forward_flops(system.net, system.net.forward_exits, image_size) * steps
    return 3 * forward * config.batch_size, forward / max(steps, 1)


def matched_epochs(control: RunConfig, reference: RunConfig, tolerance: float = 0.05) -> int:
    """The epochs at which ``control``'s training FLOPs (:func:`training_flops`) come closest
    to ``reference``'s, checked to agree within ``tolerance``.

    ``control`` is a method whose every step costs the same (independent networks, BYOT,
    BranchyNet); ``reference`` samples its scaling factors once per epoch, so that every step
    of an epoch runs the same passes and one step stands for each epoch: the ratio does not
    depend on the number of steps per epoch, which only the data decide. Both train on the
    same data with the same batch, so the images seen per epoch cancel as well.
    """
    if control.method == "cooperative":
        raise ValueError("matching training FLOPs sets the epochs of a non-cooperative control")
    if reference.method == "cooperative" and reference.sampling != "per_epoch":
        raise ValueError(
            "matching training FLOPs needs a reference that samples per epoch, got sampling "
            f"{reference.sampling!r}"
        )
    if control.max_steps or reference.max_steps:
        raise ValueError("matching training FLOPs counts whole epochs: unset max_steps")
    same_data = ("dataset", "num_classes", "image_size", "batch_size")
    if any(getattr(control, key) != getattr(reference, key) for key in same_data):
        raise ValueError("a compute-matched control trains on the reference's data and batch")
    info = DATASETS[control.dataset]
    shape = (control.num_classes or info.num_classes, control.image_size or info.image_size)
    target, _ = training_flops(reference, *shape, steps_per_epoch=1)
    per_epoch, _ = training_flops(control.replace(epochs=1), *shape, steps_per_epoch=1)
    epochs = max(1, round(target / per_epoch))
    if abs(epochs * per_epoch / target - 1) > tolerance:
        raise ValueError(
            f"no whole number of epochs of {control.method} matches {reference.method}'s "
            f"{target:.3g} training FLOPs within {tolerance:.0%} ({per_epoch:.3g} an epoch)"
        )
    return epochs


def _memory_format(net: SkippableResNet) -> torch.memory_format:
    """``channels_last`` if the network's convolutions were converted to it, else contiguous."""
    weight = net.stem[0].weight
    if not weight.is_contiguous() and weight.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_latency(
    net: SkippableResNet,
    s: float = 1.0,
    batch_size: int = 1,
    device: str | torch.device | None = None,
    warmup: int = 3,
    repeats: int = 10,
    precision: str = "fp32",
) -> float:
    """Median wall-clock seconds of one forward pass of a batch at scaling factor ``s``.

    ``device=None`` times the network where it is; another device times a copy. The input
    takes the network's memory format (``channels_last`` after ``net.to(memory_format=...)``).
    ``precision="bf16"`` times it under bf16 autocast, as :func:`accuracy` evaluates it.
    """
    check_scaling_factor(s)
    if batch_size < 1 or repeats < 1 or warmup < 0:
        raise ValueError(
            f"need batch_size >= 1, repeats >= 1 and warmup >= 0; "
            f"got {batch_size}, {repeats} and {warmup}"
        )
    target = torch.device(device) if device is not None else _device_of(net)
    if target != _device_of(net):
        net = copy.deepcopy(net).to(target)
    images = torch.randn(batch_size, 3, net.image_size, net.image_size, device=target)
    images = images.contiguous(memory_format=_memory_format(net))
    timings = []
    with train_mode(net, False), torch.inference_mode(), autocast(target, precision):
        for _ in range(warmup):
            net(images, s=s)
        for _ in range(repeats):
            _synchronize(target)
            start = time.perf_counter()
            net(images, s=s)
            _synchronize(target)
            timings.append(time.perf_counter() - start)
    return statistics.median(timings)


def depth_costs(
    net: SkippableResNet,
    scaling_factors: Sequence[float] = SCALING_FACTORS,
    latency_batch_sizes: Sequence[int] = (),
    device: str | torch.device | None = None,
    repeats: int = 10,
) -> list[dict[str, float]]:
    """One row per scaling factor: active blocks, FLOPs, and latency at each batch size."""
    rows = []
    for s in scaling_factors:
        row = {"s": s, "active_blocks": len(net.active_blocks(s)), "flops": count_flops(net, s)}
        for batch_size in latency_batch_sizes:
            row[f"latency_b{batch_size}"] = measure_latency(
                net, s, batch_size=batch_size, device=device, repeats=repeats
            )
        rows.append(row)
    return rows


def choose_scaling_factor(
    net: SkippableResNet,
    budget_flops: float | None = None,
    budget_latency: float | None = None,
    image_size: int | None = None,
    batch_size: int = 1,
    device: str | torch.device | None = None,
    scaling_factors: Sequence[float] = SCALING_FACTORS,
) -> float:
    """Largest scaling factor of the grid whose FLOPs and latency stay within the budgets.

    ``budget_flops`` is per image; ``budget_latency`` is seconds per batch of ``batch_size``.
    """
    if budget_flops is None and budget_latency is None:
        raise ValueError("give a budget: budget_flops, budget_latency or both")
    for name, budget in (("budget_flops", budget_flops), ("budget_latency", budget_latency)):
        if budget is not None and not budget > 0:
            raise ValueError(f"{name} must be a positive number, got {budget!r}")
    grid = sorted(check_scaling_factor(s) for s in scaling_factors)
    if not grid:
        raise ValueError("scaling_factors is empty")
    chosen = None
    for s in grid:
        if budget_flops is not None and (flops := count_flops(net, s, image_size)) > budget_flops:
            cost = f"{flops:,} FLOPs > budget {budget_flops:,.0f}"
        elif (
            budget_latency is not None
            and (latency := measure_latency(net, s, batch_size, device)) > budget_latency
        ):
            cost = f"{latency * 1e3:.3f} ms > budget {budget_latency * 1e3:.3f} ms"
        else:
            chosen = s
            continue
        if chosen is None:
            raise ValueError(f"no depth fits the budget: even the smallest, s={s:g}, costs {cost}")
        break
    return chosen


# --- accuracy ----------------------------------------------------------------------------


LATENCY_REPEATS = 5


@torch.no_grad()
def accuracy(
    net: nn.Module, loader: BatchLoader, s: float, precision: str = "fp32"
) -> tuple[float, float]:
    """Top-1 and top-5 accuracy (%) of ``net`` at scaling factor ``s`` over ``loader``.

    Logits are ranked in fp32: ties among bf16 logits would go to the lower class index.
    """
    correct1 = correct5 = total = 0
    with train_mode(net, False):
        for images, labels in loader:
            images = images.contiguous(memory_format=torch.channels_last)
            with autocast(images.device, precision):
                logits = net(images, s=s).float()
            top = logits.topk(min(5, logits.shape[1]), dim=1).indices
            hits = top == labels[:, None]
            correct1 += int(hits[:, 0].sum())
            correct5 += int(hits.any(1).sum())
            total += len(labels)
    return 100 * correct1 / total, 100 * correct5 / total


def evaluate_system(system: System, data: Data, config: RunConfig, device: torch.device):
    """Final metrics: per network, per scaling factor, test and validation accuracy and cost.

    Scaling factors that share a depth plan run the same blocks with the same statistics, so
    each plan of a network is evaluated once and its row repeated for its other factors.
    """
    metrics: dict[str, dict[str, dict[str, float]]] = {}
    rows: dict[tuple[int, tuple[int, ...]], dict[str, float]] = {}
    for name, net, s in system.evaluations():
        blocks = tuple(net.active_blocks(s))
        row = rows.get((id(net), blocks))
        if row is None:
            top1, top5 = accuracy(net, data.test, s, system.precision)
            row = {"top1": top1, "top5": top5, "flops": count_flops(net, s)}
            if data.val is not None:
                row["val_top1"] = accuracy(net, data.val, s, system.precision)[0]
            latency = measure_latency(
                net, s, batch_size=1, repeats=LATENCY_REPEATS, precision=system.precision
            )
            row |= {"latency_ms": 1e3 * latency, "active_blocks": len(blocks)}
            rows[(id(net), blocks)] = row
        metrics.setdefault(name, {})[f"{s:.4g}"] = dict(row)
    teammates = [metrics[name] for name in metrics if name.startswith("teammate")]
    if len(teammates) > 1:
        metrics["teammate_mean"] = {
            key: {m: sum(t[key][m] for t in teammates) / len(teammates) for m in teammates[0][key]}
            for key in teammates[0]
        }
    return metrics


def calibration_batches(data: Data) -> list[Tensor]:
    """The training images that re-estimate per-depth batch-norm statistics, as batches."""
    return [images.contiguous(memory_format=torch.channels_last) for images, _ in data.calibration]


def validation_curve(system: System, data: Data) -> dict[str, float]:
    """Validation top-1 of the first evaluated network at its shallowest and deepest depth,
    evaluated as the final metrics are (per-depth statistics on a calibrated copy)."""
    if data.val is None:
        return {}
    probe = copy.deepcopy(system)
    probe.calibrate(calibration_batches(data))
    rows = list(probe.evaluations())
    rows = sorted((s, net) for name, net, s in rows if name == rows[0][0])
    (shallow, shallow_net), (deep, deep_net) = rows[0], rows[-1]
    return {
        "val_top1_deepest": accuracy(deep_net, data.val, deep, probe.precision)[0],
        "val_top1_shallowest": accuracy(shallow_net, data.val, shallow, probe.precision)[0],
    }
