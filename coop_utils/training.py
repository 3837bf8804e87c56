"""One training loop for every method: cooperative, independent, BYOT and BranchyNet.

Each method is a *system*: an ``nn.Module`` that holds its networks, returns the
training loss of a batch from ``forward``, and lists what to evaluate. The loop
around it is shared: data, optimiser and schedule, checkpoints, resume, progress,
evaluation and the run store (:mod:`coop_utils.runs`).

All randomness of an epoch comes from generators seeded by ``(seed, epoch, purpose)``,
so a run resumed from a checkpoint repeats exactly what the interrupted run would
have done (on the CPU, bit for bit).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import itertools
import json
import math
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from coop_utils import data as datasets
from coop_utils import runs
from coop_utils.config import RunConfig
from coop_utils.evaluate import (
    calibrate_batchnorm,
    count_flops,
    measure_latency,
    precise_batchnorm,
)
from coop_utils.gating import BlockGate, add_gate
from coop_utils.losses import (
    byot_loss,
    cooperative_objective,
    leader_loss,
    sfsl_weights,
    subnetwork_loss,
    teammate_loss,
)
from coop_utils.models import (
    ARCHITECTURES,
    EarlyExitNetwork,
    SkippableResNet,
    build_model,
    depth_plan,
)

__all__ = [
    "NonFiniteLossError",
    "Run",
    "accuracy",
    "build_system",
    "evaluate_system",
    "load_system",
    "parameter_digest",
    "prepare_data",
    "resolve_device",
    "state_digest",
    "train",
]

LATENCY_REPEATS = 5


@dataclass
class Run:
    """A finished (or reused) run: its config, folder, final metrics and per-epoch log."""

    config: RunConfig
    directory: Path
    metrics: dict[str, dict[str, dict[str, float]]]
    log: list[dict[str, str]]
    wall_time_s: float
    reused: bool = False
    summary_path: Path | None = None
    parameter_digest: str = ""


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA where available, else the CPU; a CUDA name without CUDA is a ValueError."""
    return RunConfig(device=name).resolved_device()


def _generator(*keys: int) -> torch.Generator:
    seed = int(np.random.SeedSequence(list(keys)).generate_state(1, dtype=np.uint64)[0])
    return torch.Generator().manual_seed(seed)


# --- data ----------------------------------------------------------------------------------


@dataclass
class Data:
    """Loaders and shapes of one run's data."""

    train: datasets.BatchLoader
    val: datasets.BatchLoader | None
    test: datasets.BatchLoader
    num_classes: int
    image_size: int
    description: str
    calibration: datasets.BatchLoader | None = None  # training images for per-depth batch norm


def _generated_root(config: RunConfig) -> Path:
    """Generate the smoke data once, in the cache directory, in the dataset's real format."""
    train_pc, test_pc = config.generated_train_per_class, config.generated_test_per_class
    root = datasets.cache_dir() / "generated" / f"{config.dataset}-{train_pc}-{test_pc}"
    folder = root / datasets.DATASETS[config.dataset].folder
    if folder.exists():
        return root
    try:
        if config.dataset == "cifar100":
            classes = datasets.DATASETS["cifar100"].num_classes
            datasets.make_fake_cifar100(root, train_pc * classes, test_pc * classes)
        else:
            datasets.make_fake_tiny_imagenet(root, train_pc, test_pc)
    except FileExistsError:
        if not folder.exists():  # not another rank or process that generated it meanwhile
            raise
    return root


def _resize(images: Tensor, size: int) -> Tensor:
    """uint8 images to ``size`` x ``size``, by area averaging (exact 2x2 means for 64 -> 32)."""
    if images.shape[-1] == size:
        return images
    resized = F.interpolate(images.float(), size=(size, size), mode="area")
    return resized.round_().clamp_(0, 255).to(torch.uint8)


def prepare_data(
    config: RunConfig, device: torch.device, rank: int = 0, world_size: int = 1
) -> Data:
    """Load, subset, resize and split the data, and wrap it in batch loaders on ``device``."""
    generated = config.data == "generated"
    root = _generated_root(config) if generated else config.data_root
    train = datasets.load_dataset(config.dataset, "train", root=root, verify=not generated)
    test = datasets.load_dataset(config.dataset, "test", root=root, verify=not generated)
    num_classes = config.num_classes or len(train.classes)
    if num_classes > len(train.classes):
        raise ValueError(
            f"config key 'num_classes' is {num_classes}, but {config.dataset} has "
            f"{len(train.classes)} classes"
        )
    image_size = config.image_size or train.images.shape[-1]

    keep = torch.nonzero(train.labels < num_classes).flatten()
    if config.train_fraction < 1:
        used, _ = datasets.train_val_split(train.labels[keep], 1 - config.train_fraction, seed=0)
        keep = keep[used]
    train_idx, val_idx = datasets.train_val_split(train.labels[keep], config.val_fraction, seed=0)
    train_idx, val_idx = keep[train_idx], keep[val_idx]
    test_idx = torch.nonzero(test.labels < num_classes).flatten()

    train_images = _resize(train.images, image_size)
    test_images = _resize(test.images[test_idx], image_size)
    mean, std = datasets.channel_stats(train_images, train_idx)
    common = {"batch_size": config.batch_size // world_size, "device": device, "mean": mean}
    common |= {"std": std, "rank": rank, "world_size": world_size}
    single = common | {"rank": 0, "world_size": 1}  # evaluation: every sample, on every rank
    train_loader = datasets.BatchLoader(
        train_images, train.labels, train=True, seed=config.seed, indices=train_idx, **common
    )
    val_loader = None
    if len(val_idx):
        val_loader = datasets.BatchLoader(
            train_images, train.labels, train=False, indices=val_idx, **single
        )
    test_loader = datasets.BatchLoader(test_images, test.labels[test_idx], train=False, **single)
    # Per-depth batch norm is re-estimated on a seeded random subset of the training images,
    # without augmentation (the test images have none); never on validation or test images.
    subset = train_idx[torch.randperm(len(train_idx), generator=_generator(config.seed, 99))]
    subset = subset[: config.bn_batches * single["batch_size"]]
    calibration = datasets.BatchLoader(
        train_images, train.labels, train=False, indices=subset, **single
    )
    description = (
        f"{train.describe()}; using {num_classes} classes at {image_size}x{image_size}: "
        f"{len(train_idx):,} train, {len(val_idx):,} validation, {len(test_idx):,} test images"
    )
    return Data(
        train_loader, val_loader, test_loader, num_classes, image_size, description, calibration
    )


# --- systems -------------------------------------------------------------------------------


@dataclass
class StepRandomness:
    """Generators of one epoch: which scaling factors, and the Gumbel noise of the masks."""

    factors: torch.Generator
    gumbel: torch.Generator
    epoch_factors: list[list[float]] = field(default_factory=list)

    def state(self) -> dict[str, Tensor]:
        return {"factors": self.factors.get_state(), "gumbel": self.gumbel.get_state()}

    def load_state(self, state: dict[str, Tensor]) -> None:
        self.factors.set_state(state["factors"])
        self.gumbel.set_state(state["gumbel"])


class System(nn.Module):
    """A method's networks; ``forward`` returns ``(loss, {term: detached value})``."""

    needs_all_parameters = True  # False: DDP must look for parameters a step leaves unused

    def __init__(self, config: RunConfig) -> None:
        super().__init__()
        self.config = config
        self.precision = config.resolved_precision()

    def calibrate(self, batches: list[Tensor]) -> None:
        """After training, every method alike: re-estimate batch-norm statistics from clean
        training images (the cooperative Teammates per depth plan, every other network once)."""

    def start_epoch(self, randomness: StepRandomness) -> None:
        """Per-epoch choices (the cooperative method draws its scaling factors here)."""

    def backward_step(
        self, images: Tensor, labels: Tensor, randomness: StepRandomness
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Accumulate the gradients of the batch's loss; return the loss (detached) and terms."""
        with _autocast(images.device, self.precision):
            loss, terms = self(images, labels, randomness)
        loss.backward()
        return loss.detach(), terms

    def evaluations(self) -> Iterator[tuple[str, nn.Module, float]]:
        """``(network name, network, scaling factor)`` for every row of the final metrics."""
        raise NotImplementedError


class CooperativeSystem(System):
    """Two (1 to 4) gated Teammates, their sub-networks, and a Leader (METHOD.md)."""

    def __init__(self, config: RunConfig, num_classes: int, image_size: int) -> None:
        super().__init__(config)
        self.teammates = nn.ModuleList()
        for _ in range(config.teammates):
            net = build_model(config.arch, num_classes, image_size)
            add_gate(net, mode=config.gating)
            self.teammates.append(net)
        self.leader = (
            build_model(config.arch, num_classes, image_size) if config.use_leader else None
        )

    def _draw_factors(self, generator: torch.Generator) -> list[list[float]]:
        pool = self.config.sampled_factors
        draws = []
        for _ in self.teammates:
            order = torch.randperm(len(pool), generator=generator)
            draws.append([pool[i] for i in order[: self.config.factors_per_teammate].tolist()])
        return draws

    def start_epoch(self, randomness: StepRandomness) -> None:
        if self.config.sampling == "per_epoch":
            randomness.epoch_factors = self._draw_factors(randomness.factors)

    def _step_factors(self, randomness: StepRandomness) -> list[list[float]]:
        if self.config.sampling == "per_epoch":
            return randomness.epoch_factors
        return self._draw_factors(randomness.factors)

    def _subnetwork(
        self, net: SkippableResNet, s: float, images: Tensor, randomness: StepRandomness
    ) -> Tensor:
        """Logits of a sub-network at ``s`` under a freshly drawn training mask.

        ``gate_gradient: kept`` computes only the blocks the mask keeps; ``all`` computes every
        block, so that a dropped block's gate gets its exact straight-through gradient. Under
        DistributedDataParallel, which expects every parameter to take part, the mask's sum
        times zero keeps the gate logits in the graph when a plan keeps no gated block.
        """
        mask = net.gate.sample(s, self.config.tau, generator=randomness.gumbel)
        run_dropped = self.config.gate_gradient == "all"
        logits = net(images, mask=mask, run_dropped=run_dropped)
        if mask.requires_grad and dist.is_initialized():
            return logits + 0.0 * mask.sum()
        return logits

    def calibrate(self, batches: list[Tensor]) -> None:
        if self.config.bn_stats == "per_depth":
            for net in self.teammates:
                calibrate_batchnorm(net, batches, self.config.scaling_factors)
        if self.leader is not None:
            precise_batchnorm(self.leader, batches, self.leader)

    def forward(
        self, images: Tensor, labels: Tensor, randomness: StepRandomness
    ) -> tuple[Tensor, dict[str, Tensor]]:
        config = self.config
        factors = self._step_factors(randomness)
        leader_logits = self.leader(images) if self.leader is not None else None
        teammate_logits, subnetwork_logits = [], []
        for net, net_factors in zip(self.teammates, factors, strict=True):
            teammate_logits.append(net(images))
            subnetwork_logits.append(
                [(s, self._subnetwork(net, s, images, randomness)) for s in net_factors]
            )
        return cooperative_objective(
            teammate_logits,
            subnetwork_logits,
            labels,
            leader_logits=leader_logits,
            temperature=config.temperature,
            use_leader=config.use_leader,
            mutual=config.mutual,
            sfsl=config.sfsl,
            sfsl_normalise=config.sfsl_normalise,
        )

    def backward_step(
        self, images: Tensor, labels: Tensor, randomness: StepRandomness
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The gradients of ``forward``'s loss, one pass's graph at a time.

        Every teacher in the objective is detached, so its gradient splits into the Leader's
        term, the Teammates' terms and each sub-network's term; back-propagating each as soon
        as it is computed frees its activations early, instead of holding all seven graphs
        for one backward (``benchmarks/train_step.py`` measures the step against its parts).
        """
        config, terms = self.config, {}
        factors = self._step_factors(randomness)
        autocast = functools.partial(_autocast, images.device, self.precision)
        leader_logits = None
        if self.leader is not None:
            with autocast():
                leader_logits = self.leader(images)
                terms["leader"] = leader_loss(leader_logits, labels)
            terms["leader"].backward()
            leader_logits = leader_logits.detach()
        with autocast():
            logits = [net(images) for net in self.teammates]
            for index, own in enumerate(logits):
                others = [other for j, other in enumerate(logits) if j != index]
                terms[f"teammate{index}"] = teammate_loss(
                    own,
                    labels,
                    others,
                    leader_logits,
                    config.temperature,
                    config.mutual,
                    config.use_leader,
                )
        sum(terms[f"teammate{i}"] for i in range(len(logits))).backward()
        for index, (net, net_factors) in enumerate(zip(self.teammates, factors, strict=True)):
            teacher = logits[index].detach()
            weights = sfsl_weights(net_factors, config.sfsl, config.sfsl_normalise)
            for position, (s, weight) in enumerate(zip(net_factors, weights, strict=True)):
                with autocast():
                    sub_logits = self._subnetwork(net, s, images, randomness)
                    term = subnetwork_loss(
                        sub_logits, teacher, labels, s, config.temperature, weight=weight
                    )
                term.backward()
                terms[f"teammate{index}/sub{position}@{s:g}"] = term
        terms = {name: value.detach() for name, value in terms.items()}
        return sum(terms.values()), terms

    def evaluations(self) -> Iterator[tuple[str, nn.Module, float]]:
        for index, net in enumerate(self.teammates):
            for s in self.config.scaling_factors:
                yield f"teammate{index}", net, s
        if self.leader is not None:
            yield "leader", self.leader, 1.0


class IndependentSystem(System):
    """One plain network per distinct depth plan of the scaling-factor grid, each trained with
    cross-entropy at its own depth and evaluated at every factor whose plan is its plan."""

    needs_all_parameters = False

    def __init__(self, config: RunConfig, num_classes: int, image_size: int) -> None:
        super().__init__(config)
        sizes = ARCHITECTURES[config.arch].stage_sizes
        plans: dict[tuple[int, ...], list[float]] = {}
        for s in sorted(config.scaling_factors):
            plans.setdefault(depth_plan(sizes, s), []).append(s)
        self.factors = list(plans.values())  # the factors of each plan, shallow to deep
        self.nets = nn.ModuleList(
            build_model(config.arch, num_classes, image_size) for _ in self.factors
        )

    def forward(self, images: Tensor, labels: Tensor, randomness: StepRandomness):
        terms = {
            f"independent@{factors[0]:g}": F.cross_entropy(net(images, s=factors[0]), labels)
            for factors, net in zip(self.factors, self.nets, strict=True)
        }
        total = sum(terms.values())
        return total, {name: value.detach() for name, value in terms.items()}

    def calibrate(self, batches: list[Tensor]) -> None:
        for factors, net in zip(self.factors, self.nets, strict=True):
            precise_batchnorm(net, batches, lambda images, n=net, s=factors[0]: n(images, s=s))

    def evaluations(self) -> Iterator[tuple[str, nn.Module, float]]:
        for factors, net in zip(self.factors, self.nets, strict=True):
            for s in factors:
                yield "independent", net, s


class ExitSystem(System):
    """A backbone with early exits. BYOT: an exit per stage with a bottleneck head, trained
    with :func:`coop_utils.losses.byot_loss`. BranchyNet: an exit at the depth of every scaling
    factor, trained with the weighted sum of the exits' cross-entropies (``branchynet_weights``,
    shallow to deep; default 1 for every exit, as in the authors' code)."""

    def __init__(self, config: RunConfig, num_classes: int, image_size: int) -> None:
        super().__init__(config)
        self.method = config.method
        backbone = build_model(config.arch, num_classes, image_size)
        if config.method == "byot":
            self.net = EarlyExitNetwork(backbone, backbone.stage_last_blocks[:-1], bottleneck=True)
        else:
            exits = EarlyExitNetwork.blocks_at(backbone.num_blocks, config.scaling_factors)
            self.net = EarlyExitNetwork(backbone, exits)
        self.weights = config.branchynet_weights or (1.0,) * len(self.net.exit_blocks)

    def forward(self, images: Tensor, labels: Tensor, randomness: StepRandomness):
        logits, features = self.net.forward_exits(images)
        if self.method == "byot":
            return byot_loss(logits, features, labels)
        terms = {
            f"exit{i}_ce": weight * F.cross_entropy(z, labels)
            for i, (weight, z) in enumerate(zip(self.weights, logits, strict=True))
        }
        total = sum(terms.values())
        return total, {name: value.detach() for name, value in terms.items()}

    def calibrate(self, batches: list[Tensor]) -> None:
        precise_batchnorm(self.net, batches, self.net.forward_exits)

    def evaluations(self) -> Iterator[tuple[str, nn.Module, float]]:
        for depth in self.net.exit_depths:
            yield self.method, self.net, depth


_SYSTEMS = {
    "cooperative": CooperativeSystem,
    "independent": IndependentSystem,
    "byot": ExitSystem,
    "branchynet": ExitSystem,
}


def build_system(config: RunConfig, num_classes: int, image_size: int) -> System:
    return _SYSTEMS[config.method](config, num_classes, image_size)


# --- evaluation ----------------------------------------------------------------------------


def _autocast(device: torch.device, precision: str):
    """bf16 autocast for ``precision == "bf16"``; nothing for fp32."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def accuracy(
    net: nn.Module, loader: datasets.BatchLoader, s: float, precision: str = "fp32"
) -> tuple[float, float]:
    """Top-1 and top-5 accuracy (%) of ``net`` at scaling factor ``s`` over ``loader``.

    Logits are ranked in fp32: ties among bf16 logits would go to the lower class index.
    """
    was_training = net.training
    net.eval()
    correct1 = correct5 = total = 0
    try:
        for images, labels in loader:
            images = images.contiguous(memory_format=torch.channels_last)
            with _autocast(images.device, precision):
                logits = net(images, s=s).float()
            top = logits.topk(min(5, logits.shape[1]), dim=1).indices
            hits = top == labels[:, None]
            correct1 += int(hits[:, 0].sum())
            correct5 += int(hits.any(1).sum())
            total += len(labels)
    finally:
        net.train(was_training)
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


def _validation_curve(system: System, data: Data) -> dict[str, float]:
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


# --- the loop ------------------------------------------------------------------------------


def learning_rate(config: RunConfig, step: int, steps_per_epoch: int, total_steps: int) -> float:
    """The learning rate of optimizer step ``step`` (from 0).

    ``step``: ``lr * gamma ** (milestone epochs passed)``; ``linear`` and ``cosine`` decay
    from ``lr`` to zero over the run's steps, updated every step (budgeted training).
    """
    if config.lr_schedule == "step":
        epoch = step // steps_per_epoch
        return config.lr * config.lr_gamma ** sum(epoch >= m for m in config.lr_milestones)
    progress = step / max(total_steps, 1)
    if config.lr_schedule == "linear":
        return config.lr * (1.0 - progress)
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def _optimizer(system: System, config: RunConfig) -> torch.optim.SGD:
    """SGD over every parameter; gate logits get no weight decay (it would pull them to ties)."""
    gates = [p for m in system.modules() if isinstance(m, BlockGate) for p in m.parameters()]
    gate_ids = {id(p) for p in gates}
    weights = [p for p in system.parameters() if id(p) not in gate_ids]
    groups = [{"params": weights, "weight_decay": config.weight_decay}]
    if any(p.requires_grad for p in gates):
        groups.append({"params": [p for p in gates if p.requires_grad], "weight_decay": 0.0})
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov)


def _distributed() -> tuple[int, int]:
    """``(rank, world size)`` under torchrun (which always starts a process group, even for one
    process, so that DDP's set-up and hooks run), ``(0, 1)`` otherwise."""
    if dist.is_torchelastic_launched() and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def parameter_digest(module: nn.Module) -> str:
    """SHA-256 of every parameter, to check that ranks hold the same network.

    Buffers are left out: BN running statistics are each rank's own between broadcasts.
    """
    return _digest(dict(module.named_parameters()))


def state_digest(state: nn.Module | dict[str, Tensor]) -> str:
    """SHA-256 of a module's whole state (parameters and buffers, batch-norm statistics too)."""
    return _digest(state.state_dict() if isinstance(state, nn.Module) else state)


def _digest(tensors: dict[str, Tensor]) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(tensors.items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


# --- provenance and reuse ------------------------------------------------------------------


def provenance(config: RunConfig) -> dict[str, Any]:
    """What a run's numbers depend on beyond its config: the code, the data, the precision."""
    code, dirty = runs.code_digest()
    root = _generated_root(config) if config.data == "generated" else config.data_root
    fingerprints = [datasets.data_fingerprint(config.dataset, split, root) for split in SPLITS]
    data = hashlib.sha256("+".join(fingerprints).encode()).hexdigest()[:16]
    return {
        "code_digest": code,
        "code_dirty": dirty,
        "git_commit": runs.git_commit(),
        "data_fingerprint": data,
        "precision": config.resolved_precision(),
    }


SPLITS = ("train", "test")
_MATCHED = ("code_digest", "data_fingerprint", "precision")


def _recorded_provenance(directory: Path) -> dict[str, Any]:
    path = directory / "provenance.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _staleness(recorded: dict[str, Any], current: dict[str, Any]) -> str:
    """Why a run recorded with ``recorded`` cannot stand for ``current`` ('' if it can)."""
    changed = [key for key in _MATCHED if recorded.get(key) != current[key]]
    if not changed:
        return ""
    return ", ".join(
        f"{key} {recorded.get(key, 'unrecorded')} -> {current[key]}" for key in changed
    )


def _set_aside_if_stale(directory: Path, current: dict[str, Any], reuse_stale: bool) -> None:
    """Move a run made by other code or data aside (nothing is deleted), unless asked to reuse
    it anyway; then a fresh run starts in its place."""
    if not directory.exists() or not any(
        (directory / name).exists() for name in ("checkpoint.pt", "metrics.json")
    ):
        return
    why = _staleness(_recorded_provenance(directory), current)
    if not why:
        return
    if reuse_stale:
        print(f"reusing {directory} although it is stale ({why}): --reuse-stale", flush=True)
        return
    stamp = time.strftime("%Y%m%dT%H%M%S")
    aside = directory.with_name(f"{directory.name}.stale-{stamp}")
    with runs.hold_run(directory):
        directory.rename(aside)
    print(
        f"retraining {directory}: it was made by other code or data ({why}); "
        f"the old run is kept in {aside}",
        flush=True,
    )


def _reused(config: RunConfig, directory: Path) -> Run:
    metrics = json.loads((directory / "metrics.json").read_text())
    return Run(
        config,
        directory,
        metrics["metrics"],
        runs.read_log(directory / "log.csv"),
        metrics["wall_time_s"],
        reused=True,
        summary_path=runs.results_path(config) if runs.results_path(config).exists() else None,
    )


def _finished(config: RunConfig, current: dict[str, Any], reuse_stale: bool) -> Run | None:
    directory = runs.run_dir(config)
    _set_aside_if_stale(directory, current, reuse_stale)
    return _reused(config, directory) if (directory / "metrics.json").exists() else None


def _shared_bn_evaluation(
    config: RunConfig, directory: Path, trained: Run, current: dict[str, Any]
) -> Run:
    """Evaluate the finished run ``trained`` with its shared batch-norm statistics, as
    ``config``'s run: the ablation changes evaluation only, so nothing is trained again."""
    device = config.resolved_device()
    data = prepare_data(config, device)
    system = load_system(trained).to(device, memory_format=torch.channels_last)
    for net in system.modules():
        if isinstance(net, SkippableResNet):
            net.set_plan_stats([], [])
    metrics = evaluate_system(system, data, config, device)
    runs.atomic_write_json(directory / "config.json", config.to_dict())
    runs.atomic_write_json(directory / "provenance.json", current)
    shutil.copyfile(trained.directory / "log.csv", directory / "log.csv")
    summary = {
        "metrics": metrics,
        "wall_time_s": trained.wall_time_s,
        "data": data.description,
        "weights_from": str(trained.directory),
        "provenance": current,
    }
    runs.atomic_write_json(directory / "metrics.json", summary)
    summary_path = runs.write_summary(config, metrics, trained.wall_time_s, device, current)
    log = runs.read_log(directory / "log.csv")
    return Run(config, directory, metrics, log, trained.wall_time_s, summary_path=summary_path)


def load_system(run: Run) -> System:
    """The trained networks of a finished ``run`` (its last checkpoint), in eval mode."""
    config = run.config
    info = datasets.DATASETS[config.dataset]
    system = build_system(
        config, config.num_classes or info.num_classes, config.image_size or info.image_size
    )
    state = runs.load_checkpoint(Path(run.directory) / "checkpoint.pt")
    system.load_state_dict(state["system"])
    return system.eval()


def train(config: RunConfig, progress: bool = True, reuse_stale: bool = False) -> Run:
    """Train ``config``'s run, or reuse it if finished, or resume it if interrupted.

    A run made by other code or from other data (its code digest or data fingerprint differ)
    is moved aside and trained again, unless ``reuse_stale``. The ``shared-bn`` ablation only
    changes evaluation: when the same run with per-depth statistics has finished, its trained
    networks are evaluated with their shared statistics instead of training them again.
    """
    current = provenance(config)
    directory = runs.run_dir(config)
    finished = _finished(config, current, reuse_stale)
    if finished is not None:
        return finished
    if config.bn_stats == "shared" and config.method == "cooperative":
        base = config.replace(bn_stats="per_depth", variant="")
        trained = _finished(base, current, reuse_stale)
        if trained is not None:
            with runs.hold_run(directory):
                return _shared_bn_evaluation(config, directory, trained, current)
    rank, world_size = _distributed()
    device = config.resolved_device()
    if device.type == "cuda" and world_size > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    lock = runs.hold_run(directory) if rank == 0 else contextlib.nullcontext()
    with lock:
        return _Trainer(config, directory, device, rank, world_size, progress, current).run()


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped training between two steps; a checkpoint was saved there."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum


class _StopRequest:
    """SIGINT and SIGTERM set a flag that the loop reads between steps, so that a checkpoint
    never holds a half-updated network or generators that ran ahead of the saved step.

    A second SIGINT stops at once (the last checkpoint stays). Signal handlers can only be set
    in the main thread; elsewhere the default behaviour stays.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> _StopRequest:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


class _Trainer:
    def __init__(self, config, directory, device, rank, world_size, progress, current) -> None:
        self.config, self.directory, self.device = config, directory, device
        self.rank, self.world_size = rank, world_size
        self.progress = progress and rank == 0
        self.provenance = current
        self.checkpoint_path = directory / "checkpoint.pt"
        self.log_path = directory / "log.csv"

    def _save(self, epoch: int, step_in_epoch: int, global_step: int, randomness, wall) -> None:
        if self.rank != 0:
            return
        runs.save_checkpoint(
            self.checkpoint_path,
            {
                "system": self.system.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "epoch": epoch,
                "step_in_epoch": step_in_epoch,
                "global_step": global_step,
                "randomness": randomness.state() if randomness is not None else {},
                "wall_time_s": wall,
            },
        )

    def run(self) -> Run:
        config, device = self.config, self.device
        torch.manual_seed(config.seed)
        data = prepare_data(config, device, self.rank, self.world_size)
        if self.progress:
            print(data.description)
        # channels-last is faster on CUDA and, through oneDNN, on the CPU too (about 1.25x for
        # a cooperative ResNet-20 step on 2 cores).
        system = build_system(config, data.num_classes, data.image_size)
        system = system.to(device, memory_format=torch.channels_last)
        self.system = system
        self.optimizer = _optimizer(system, config)

        start_epoch, skip_steps, global_step, wall_before = 0, 0, 0, 0.0
        saved_randomness = None
        if self.checkpoint_path.exists():
            state = runs.load_checkpoint(self.checkpoint_path)
            system.load_state_dict(state["system"])
            self.optimizer.load_state_dict(state["optimizer"])
            start_epoch, skip_steps = state["epoch"], state["step_in_epoch"]
            global_step, wall_before = state["global_step"], state["wall_time_s"]
            saved_randomness = state["randomness"] or None
            if self.progress:
                print(f"resuming {self.directory} at epoch {start_epoch + 1}, step {global_step}")
        if self.rank == 0:
            self.directory.mkdir(parents=True, exist_ok=True)
            runs.atomic_write_json(self.directory / "config.json", config.to_dict())
            runs.atomic_write_json(self.directory / "provenance.json", self.provenance)
            runs.truncate_log(self.log_path, start_epoch)

        model: nn.Module = system
        if dist.is_initialized():
            model = nn.parallel.DistributedDataParallel(
                system, find_unused_parameters=not system.needs_all_parameters
            )
        if config.compile:
            model = torch.compile(model)
        joint_backward = model is not system  # DDP syncs once; compile traces one graph

        steps_per_epoch = len(data.train)
        total_steps = steps_per_epoch * config.epochs
        if config.max_steps is not None:
            total_steps = min(total_steps, config.max_steps)
        bar = tqdm(
            total=total_steps,
            initial=global_step,
            disable=not self.progress,
            unit="step",
            desc=f"{config.method} {config.dataset}",
        )
        started = time.perf_counter()
        epoch, lr = start_epoch, config.lr
        with _StopRequest() as stop, bar:
            while epoch < config.epochs and global_step < total_steps:
                randomness = StepRandomness(
                    _generator(config.seed, epoch, 1), _generator(config.seed, epoch, 2)
                )
                system.start_epoch(randomness)
                if saved_randomness is not None:
                    randomness.load_state(saved_randomness)
                    saved_randomness = None
                data.train.set_epoch(epoch)
                epoch_loss, epoch_images, epoch_start = 0.0, 0, time.perf_counter()
                batches = itertools.islice(enumerate(data.train), skip_steps, None)
                for step_in_epoch, (images, labels) in batches:
                    if global_step >= total_steps:
                        break
                    lr = learning_rate(config, global_step, steps_per_epoch, total_steps)
                    for group in self.optimizer.param_groups:
                        group["lr"] = lr
                    images = images.contiguous(memory_format=torch.channels_last)
                    self.optimizer.zero_grad(set_to_none=True)
                    if joint_backward:
                        with _autocast(device, system.precision):
                            loss, _ = model(images, labels, randomness)
                        loss.backward()
                    else:
                        loss, _ = system.backward_step(images, labels, randomness)
                    loss_value = float(loss.detach())
                    if not math.isfinite(loss_value):
                        raise NonFiniteLossError(
                            f"non-finite loss ({loss_value}) at epoch {epoch + 1}, step "
                            f"{step_in_epoch + 1} (global step {global_step + 1}); the last good "
                            f"checkpoint in {self.directory} is kept"
                        )
                    self.optimizer.step()
                    global_step += 1
                    skip_steps = step_in_epoch + 1
                    epoch_loss += loss_value * len(labels)
                    epoch_images += len(labels)
                    rate = epoch_images * self.world_size / (time.perf_counter() - epoch_start)
                    bar.update()
                    bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr:.3g}", img_s=f"{rate:.0f}")
                    signum = self._agreed_signal(stop)
                    if signum and skip_steps < steps_per_epoch:
                        wall = wall_before + time.perf_counter() - started
                        self._stop(signum, epoch, skip_steps, global_step, randomness, wall)
                epoch += 1
                skip_steps = 0
                wall = wall_before + time.perf_counter() - started
                if self.rank == 0:
                    row = {
                        "epoch": epoch,
                        "global_step": global_step,
                        "lr": lr,
                        "train_loss": epoch_loss / max(epoch_images, 1),
                        "images_per_s": epoch_images
                        * self.world_size
                        / max(time.perf_counter() - epoch_start, 1e-9),
                        "val_top1_deepest": "",
                        "val_top1_shallowest": "",
                    }
                    if config.eval_every and epoch % config.eval_every == 0:
                        row |= _validation_curve(system, data)
                    runs.append_log(self.log_path, row)
                    self._save(epoch, 0, global_step, None, wall)
                signum = self._agreed_signal(stop)
                if signum:
                    self._stop(signum, epoch, 0, global_step, None, wall)

        wall = wall_before + time.perf_counter() - started
        digest = parameter_digest(system)
        if dist.is_initialized():
            dist.barrier()
        if self.rank != 0:
            return Run(config, self.directory, {}, [], wall, parameter_digest=digest)
        system.calibrate(calibration_batches(data))
        self._save(epoch, 0, global_step, None, wall)  # the checkpoint holds the statistics
        metrics = evaluate_system(system, data, config, device)
        summary = {
            "metrics": metrics,
            "wall_time_s": wall,
            "data": data.description,
            "provenance": self.provenance,
        }
        runs.atomic_write_json(self.directory / "metrics.json", summary)
        summary_path = runs.write_summary(config, metrics, wall, device, self.provenance)
        return Run(
            config,
            self.directory,
            metrics,
            runs.read_log(self.log_path),
            wall,
            summary_path=summary_path,
            parameter_digest=digest,
        )

    def _agreed_signal(self, stop: _StopRequest) -> int:
        """The signal received (0: none); under DDP, any rank's, so that all stop at one step."""
        signum = stop.signum or 0
        if dist.is_initialized():
            flag = torch.tensor([signum], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            signum = int(flag.item())
        return signum

    def _stop(self, signum, epoch, step_in_epoch, global_step, randomness, wall):
        """Save where the loop stands (between two steps) and stop."""
        self._save(epoch, step_in_epoch, global_step, randomness, wall)
        name = signal.Signals(signum).name
        raise TrainingInterrupted(
            signum,
            f"{name}: checkpoint saved in {self.directory} at epoch {epoch + 1}, step "
            f"{global_step}; the same command resumes it",
        )
