"""What a depth costs and what it buys: FLOPs, latency, and choosing a depth for a budget.

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (convolutions and
matrix products, two FLOPs per multiply-add) under ``torch.no_grad()``: the counter
sees nothing under ``torch.inference_mode()``. Latency is the median of timed
forward passes after a warm-up.
"""

from __future__ import annotations

import contextlib
import copy
import statistics
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from coop_utils.config import RunConfig
from coop_utils.data import BatchLoader, Data
from coop_utils.models import (
    SCALING_FACTORS,
    PlanBatchNorm2d,
    SkippableResNet,
    check_scaling_factor,
)

if TYPE_CHECKING:
    from coop_utils.systems import System


@contextlib.contextmanager
def _mode(module: nn.Module, training: bool):
    """Put a module in training or eval mode for a ``with`` block, then restore its mode."""
    was_training = module.training
    module.train(training)
    try:
        yield
    finally:
        module.train(was_training)


def _device_of(net: nn.Module) -> torch.device:
    return next(net.parameters()).device


def count_flops(net: SkippableResNet, s: float = 1.0, image_size: int | None = None) -> int:
    """Forward FLOPs of one image at scaling factor ``s``."""
    check_scaling_factor(s)
    size = image_size or net.image_size
    image = torch.zeros(1, 3, size, size, device=_device_of(net))
    counter = FlopCounterMode(display=False)
    with _mode(net, False), torch.no_grad(), counter:
        net(image, s=s)
    return int(counter.get_total_flops())


def distinct_plans(
    net: SkippableResNet, scaling_factors: Sequence[float] = SCALING_FACTORS
) -> dict[tuple[int, ...], float]:
    """The distinct depth plans of ``scaling_factors`` (and s = 1): blocks -> smallest s."""
    plans: dict[tuple[int, ...], float] = {}
    for s in sorted({*scaling_factors, 1.0}):
        plans.setdefault(tuple(net.active_blocks(s)), s)
    return plans


@torch.no_grad()
def precise_batchnorm(
    module: nn.Module, batches: Sequence[torch.Tensor], forward: Callable[[torch.Tensor], object]
) -> None:
    """Re-estimate the running statistics of every batch norm in ``module`` as the plain average
    of the batch statistics that ``forward`` meets over ``batches`` (clean training images),
    instead of the moving average over the last augmented training batches."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [norm.momentum for norm in norms]
    with _mode(module, True):
        try:
            for norm in norms:
                norm.reset_running_stats()
                norm.momentum = None  # a cumulative average over the batches
            for images in batches:
                forward(images)
        finally:
            for norm, momentum in zip(norms, momenta, strict=True):
                norm.momentum = momentum


@torch.no_grad()
def calibrate_batchnorm(
    net: SkippableResNet,
    batches: Sequence[torch.Tensor],
    scaling_factors: Sequence[float] = SCALING_FACTORS,
) -> list[tuple[int, ...]]:
    """Re-estimate batch-norm statistics at every distinct depth plan and store them in ``net``.

    Each plan's statistics are the plain average over ``batches`` (training images) of the
    batch statistics its blocks see when only that plan runs, as switchable batch norm does in
    slimmable networks. The shared running statistics are left as they were. Returns the plans.
    """
    plans = distinct_plans(net, scaling_factors)
    norms = {name: m for name, m in net.named_modules() if isinstance(m, PlanBatchNorm2d)}
    shared = {name: copy.deepcopy(m.state_dict()) for name, m in norms.items()}
    stats = []
    try:
        for s in plans.values():
            precise_batchnorm(net, batches, lambda images, s=s: net(images, s=s))
            stats.append(
                {name: (m.running_mean.clone(), m.running_var.clone()) for name, m in norms.items()}
            )
    finally:
        for name, state in shared.items():
            norms[name].load_state_dict(state)
    net.set_plan_stats(list(plans), stats)
    return list(plans)


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
) -> float:
    """Median wall-clock seconds of one forward pass of a batch at scaling factor ``s``.

    ``device=None`` times the network where it is; another device times a copy. The input
    takes the network's memory format (``channels_last`` after ``net.to(memory_format=...)``).
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
    with _mode(net, False), torch.inference_mode():
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


def autocast(device: torch.device, precision: str):
    """bf16 autocast for ``precision == "bf16"``; nothing for fp32."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def accuracy(
    net: nn.Module, loader: BatchLoader, s: float, precision: str = "fp32"
) -> tuple[float, float]:
    """Top-1 and top-5 accuracy (%) of ``net`` at scaling factor ``s`` over ``loader``.

    Logits are ranked in fp32: ties among bf16 logits would go to the lower class index.
    """
    correct1 = correct5 = total = 0
    with _mode(net, False):
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
            latency = measure_latency(net, s, batch_size=1, repeats=LATENCY_REPEATS)
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
