"""Residual networks whose depth is chosen at call time by a scaling factor.

A network is a stem, a flat list of residual blocks grouped in stages, and a
classifier head. Every block except the first of each stage is *gateable*: it
computes ``relu(x + m * F(x))`` for a gate value ``m``. At inference a block with
``m = 0`` is not computed at all, so a shallower depth plan really costs less.

The depth plan of a scaling factor ``s`` keeps ``max(1, round(s * n_j))`` blocks
of a stage with ``n_j`` blocks, its first block among them (METHOD.md). Which of
the other blocks are kept is decided by a gate (:mod:`coop_utils.gating`) when
one is attached as ``net.gate``, and otherwise by position (the first blocks).
"""

from __future__ import annotations

import contextlib
import copy
import math
import numbers
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class ArchSpec:
    """Named configuration of a residual network."""

    block: str  # "basic" or "bottleneck"
    stage_sizes: tuple[int, ...]
    widths: tuple[int, ...]


ARCHITECTURES: dict[str, ArchSpec] = {
    "resnet20": ArchSpec("basic", (3, 3, 3), (16, 32, 64)),
    "resnet32": ArchSpec("basic", (5, 5, 5), (16, 32, 64)),
    "resnet56": ArchSpec("basic", (9, 9, 9), (16, 32, 64)),
    "resnet110": ArchSpec("basic", (18, 18, 18), (16, 32, 64)),
    "resnet18": ArchSpec("basic", (2, 2, 2, 2), (64, 128, 256, 512)),
    "resnet34": ArchSpec("basic", (3, 4, 6, 3), (64, 128, 256, 512)),
    "resnet50": ArchSpec("bottleneck", (3, 4, 6, 3), (64, 128, 256, 512)),
    "resnet101": ArchSpec("bottleneck", (3, 4, 23, 3), (64, 128, 256, 512)),
    "resnet152": ArchSpec("bottleneck", (3, 8, 36, 3), (64, 128, 256, 512)),
}


#: the grid of scaling factors evaluated and offered at inference, 20 % to 100 % of blocks
SCALING_FACTORS: tuple[float, ...] = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def check_scaling_factor(scaling_factor: object) -> float:
    """Return ``scaling_factor`` as a float, or raise ``ValueError`` unless it is in (0, 1]."""
    if isinstance(scaling_factor, bool) or not isinstance(scaling_factor, numbers.Real):
        raise ValueError(
            f"scaling factor must be a number in (0, 1], got {scaling_factor!r} "
            f"of type {type(scaling_factor).__name__}"
        )
    value = float(scaling_factor)
    if not 0.0 < value <= 1.0:
        raise ValueError(f"scaling factor must be in (0, 1], got {scaling_factor!r}")
    return value


def depth_plan(stage_sizes: Sequence[int], scaling_factor: float) -> tuple[int, ...]:
    """Blocks kept per stage at ``scaling_factor``: ``max(1, round(s * n_j))``.

    Rounding is half-up (2.5 -> 3), after rounding ``s * n_j`` to 9 decimals so
    that ``0.7 * 5`` counts as 3.5 and not as 3.4999999999999996.
    """
    value = check_scaling_factor(scaling_factor)
    return tuple(max(1, math.floor(round(value * size, 9) + 0.5)) for size in stage_sizes)


def first_blocks_mask(stage_sizes: Sequence[int], scaling_factor: float) -> Tensor:
    """Mask over gateable blocks keeping the first ``k_j - 1`` of each stage."""
    kept = depth_plan(stage_sizes, scaling_factor)
    values = []
    for size, keep in zip(stage_sizes, kept, strict=True):
        values += [1.0] * (keep - 1) + [0.0] * (size - keep)
    return torch.tensor(values)


class _PlanSelector:
    """Which depth plan's batch-norm statistics a network's evaluation uses (``None``: shared)."""

    index: int | None = None


class PlanBatchNorm2d(nn.BatchNorm2d):
    """Batch norm with one set of running statistics per depth plan (switchable batch norm).

    Training uses and updates the shared running statistics, except where ``update_stats`` is
    off: a block that the mask drops but that still runs (its gate's gradient needs its output)
    normalises with the batch's statistics and leaves the running ones alone. Evaluation uses
    row ``selector.index`` of ``plan_mean`` / ``plan_var`` when the network selected a plan.
    """

    def __init__(self, num_features: int) -> None:
        super().__init__(num_features)
        self.register_buffer("plan_mean", torch.zeros(0, num_features))
        self.register_buffer("plan_var", torch.ones(0, num_features))
        self.selector = _PlanSelector()
        self.update_stats = True

    def forward(self, x: Tensor) -> Tensor:
        if self.training and not self.update_stats:
            return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)
        index = self.selector.index
        if not self.training and index is not None:
            mean, var = self.plan_mean[index], self.plan_var[index]
            return F.batch_norm(x, mean, var, self.weight, self.bias, False, 0.0, self.eps)
        return super().forward(x)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        _resize_buffers(self, state_dict, prefix, ("plan_mean", "plan_var"))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def _resize_buffers(module: nn.Module, state_dict, prefix: str, names: Sequence[str]) -> None:
    """Give ``module``'s per-plan buffers the number of plans the incoming state holds."""
    for name in names:
        incoming = state_dict.get(prefix + name)
        if incoming is not None:
            current = getattr(module, name)
            setattr(module, name, torch.empty_like(current).resize_(incoming.shape))


class ResidualBlock(nn.Module):
    """``relu(shortcut(x) + F(x))``, or with a gate value ``m``, ``relu(shortcut(x) + m * F(x))``.

    ``m`` (a 0-d tensor, a mask entry) is cast to ``F(x)``'s type, so that under autocast the
    block stays in bf16 (CUDA's autocast would otherwise run ``addcmul`` in fp32).
    """

    residual: nn.Sequential
    shortcut: nn.Module

    def forward(self, x: Tensor, scale: Tensor | None = None) -> Tensor:
        residual = self.residual(x)
        if scale is None:
            residual += self.shortcut(x)
        else:  # shortcut + m * F(x) in one kernel
            residual = torch.addcmul(self.shortcut(x), residual, scale.to(residual.dtype))
        return torch.relu_(residual)


class BasicBlock(ResidualBlock):
    """Two 3x3 convolutions (ResNet-18/34 and the CIFAR ResNets)."""

    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int = 1) -> None:
        super().__init__()
        self.residual = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, stride, 1, bias=False),
            PlanBatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, 1, 1, bias=False),
            PlanBatchNorm2d(width),
        )
        self.shortcut = _shortcut(in_channels, width, stride)


class Bottleneck(ResidualBlock):
    """1x1 reduce, 3x3, 1x1 expand by 4 (ResNet-50/101/152)."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.residual = nn.Sequential(
            nn.Conv2d(in_channels, width, 1, bias=False),
            PlanBatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, stride, 1, bias=False),
            PlanBatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, out_channels, 1, bias=False),
            PlanBatchNorm2d(out_channels),
        )
        self.shortcut = _shortcut(in_channels, out_channels, stride)


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
        PlanBatchNorm2d(out_channels),
    )


_BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class SkippableResNet(nn.Module):
    """A residual network with a CIFAR stem whose gateable blocks can be skipped.

    ``forward(x)`` runs every block; ``forward(x, s=0.4)`` runs only the blocks of
    the 0.4 depth plan; ``forward(x, mask=m)`` scales gateable block ``i`` by
    ``m[i]`` (a training mask from :class:`coop_utils.gating.BlockGate`).

    Shapes: ``x`` is ``(N, 3, image_size, image_size)``; logits are ``(N, num_classes)``.
    """

    def __init__(self, arch: str, num_classes: int, image_size: int) -> None:
        super().__init__()
        spec = ARCHITECTURES[arch]
        block_type = _BLOCKS[spec.block]
        self.arch = arch
        self.num_classes = num_classes
        self.image_size = image_size
        self.stage_sizes = spec.stage_sizes
        self.gate: nn.Module | None = None
        #: ``torch.compile`` options of the blocks in training passes (None: eager), see
        #: :meth:`compile_blocks`
        self.compile_options: dict[str, Any] | None = None

        stem_width = spec.widths[0]
        self.stem = nn.Sequential(
            nn.Conv2d(3, stem_width, 3, 1, 1, bias=False),
            PlanBatchNorm2d(stem_width),
            nn.ReLU(inplace=True),
        )
        blocks: list[nn.Module] = []
        self.stage_of_block: list[int] = []
        self.stage_channels: list[int] = []
        in_channels = stem_width
        for stage, (size, width) in enumerate(zip(spec.stage_sizes, spec.widths, strict=True)):
            for index in range(size):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(block_type(in_channels, width, stride))
                in_channels = width * block_type.expansion
                self.stage_of_block.append(stage)
            self.stage_channels.append(in_channels)
        self.blocks = nn.ModuleList(blocks)
        self.feature_channels = in_channels
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, num_classes)

        starts = [sum(spec.stage_sizes[:stage]) for stage in range(len(spec.stage_sizes))]
        #: global indices of the blocks that can be skipped, in order
        self.gateable_blocks: list[int] = [i for i in range(len(blocks)) if i not in starts]
        #: global index of the last block of each stage
        self.stage_last_blocks = [
            start + n - 1 for start, n in zip(starts, spec.stage_sizes, strict=True)
        ]
        # Per-depth batch norm: row p of ``bn_plans`` marks the blocks of plan p, whose statistics
        # are row p of every PlanBatchNorm2d's ``plan_mean`` / ``plan_var`` (none until set).
        self.register_buffer("bn_plans", torch.zeros(0, len(blocks), dtype=torch.bool))
        self._plan_rows: dict[tuple[int, ...], int] | None = None
        self._selector = _PlanSelector()
        # He initialisation for convolutions; batch norms keep their default weight 1, bias 0.
        for module in self.modules():
            if isinstance(module, PlanBatchNorm2d):
                module.selector = self._selector
            elif isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        # Zero the last BN of every residual branch: each block starts as identity,
        # so a network with blocks removed starts as a sound network too.
        for block in self.blocks:
            nn.init.zeros_(block.residual[-1].weight)

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def num_gateable(self) -> int:
        return len(self.gateable_blocks)

    def inference_mask(self, scaling_factor: float) -> Tensor:
        """Hard 0/1 mask over gateable blocks for the depth plan of ``scaling_factor``."""
        if self.gate is not None:
            return self.gate.inference_mask(scaling_factor)
        return first_blocks_mask(self.stage_sizes, scaling_factor)

    def active_blocks(self, scaling_factor: float = 1.0) -> list[int]:
        """Global indices of the residual blocks that run at ``scaling_factor``."""
        mask = self.inference_mask(scaling_factor).tolist()
        keep = dict(zip(self.gateable_blocks, mask, strict=True))
        return [index for index in range(self.num_blocks) if keep.get(index, 1.0)]

    def _check_input(self, x: Tensor) -> None:
        if not isinstance(x, Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(
                f"expected an image batch of shape (N, 3, {self.image_size}, {self.image_size}), "
                f"got {shape}"
            )
        if x.shape[1] != 3:
            raise ValueError(f"expected 3 input channels (RGB), got {x.shape[1]}")
        if tuple(x.shape[2:]) != (self.image_size, self.image_size):
            raise ValueError(
                f"{self.arch} was built for {self.image_size}x{self.image_size} images, "
                f"got {x.shape[2]}x{x.shape[3]}"
            )

    def _check_mask(self, mask: Tensor) -> None:
        if not isinstance(mask, Tensor) or mask.shape != (self.num_gateable,):
            shape = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
            raise ValueError(
                f"{self.arch} has {self.num_gateable} gateable blocks: expected a mask of "
                f"shape ({self.num_gateable},), got {shape}"
            )

    @property
    def has_plan_stats(self) -> bool:
        """Whether per-depth batch-norm statistics are stored (see :meth:`set_plan_stats`)."""
        return self.bn_plans.shape[0] > 0

    def plan_index(self, blocks: Sequence[int]) -> int | None:
        """Row of the stored per-depth statistics for the plan running ``blocks``, if any."""
        if self._plan_rows is None:
            rows = self.bn_plans.tolist()
            self._plan_rows = {
                tuple(i for i, on in enumerate(row) if on): index for index, row in enumerate(rows)
            }
        return self._plan_rows.get(tuple(blocks))

    def set_plan_stats(self, plans: Sequence[Sequence[int]], stats: Sequence[dict]) -> None:
        """Store batch-norm statistics per plan: ``stats[p][name] = (mean, var)`` for every
        :class:`PlanBatchNorm2d` ``name`` of the network, measured on plan ``plans[p]``."""
        device = self.bn_plans.device
        marks = torch.zeros(len(plans), self.num_blocks, dtype=torch.bool, device=device)
        for row, blocks in enumerate(plans):
            marks[row, list(blocks)] = True
        self.bn_plans = marks
        for name, module in self.named_modules():
            if isinstance(module, PlanBatchNorm2d):
                empty = module.running_mean.new_zeros(0, module.num_features)
                means = [plan[name][0] for plan in stats]
                variances = [plan[name][1] for plan in stats]
                module.plan_mean = torch.stack(means).to(device) if stats else empty
                module.plan_var = torch.stack(variances).to(device) if stats else empty.clone()
        self._plan_rows = None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        _resize_buffers(self, state_dict, prefix, ("bn_plans",))
        self._plan_rows = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _select_plan_stats(self, scales: Sequence[object]) -> None:
        """In evaluation, point every batch norm at the statistics of the plan about to run."""
        index = None
        if not self.training and self.has_plan_stats:
            blocks = [i for i, scale in enumerate(scales) if scale is not None]
            index = self.plan_index(blocks)
            if index is None:
                warnings.warn(
                    f"no per-depth batch-norm statistics for the plan of blocks {blocks}; "
                    "using the shared statistics",
                    stacklevel=3,
                )
        self._selector.index = index

    def _block_scales(
        self, s: float | None, mask: Tensor | None, run_dropped: bool
    ) -> tuple[list[Tensor | float | None], set[int]]:
        """Per block: ``None`` to skip it, ``1.0`` to run it plainly, or a tensor to scale it;
        and the blocks that run although the mask drops them (their statistics stay frozen)."""
        if s is not None and mask is not None:
            raise ValueError("pass either a scaling factor s or a mask, not both")
        scales: list[Tensor | float | None] = [1.0] * self.num_blocks
        if mask is None and s is None:
            return scales, set()
        if mask is None:
            check_scaling_factor(s)
            mask = self.inference_mask(s)
            differentiable = False
        else:
            self._check_mask(mask)
            differentiable = mask.requires_grad and torch.is_grad_enabled()
        # A dropped block runs only when its gate's straight-through gradient needs its output
        # (d loss / d m_i = <grad, F_i(x)>, the ``all`` estimator); the ``kept`` estimator and
        # inference skip it, so a sub-network costs what its plan costs.
        frozen = set()
        values = mask.detach().tolist()
        for position, (block, value) in enumerate(zip(self.gateable_blocks, values, strict=True)):
            if value == 0.0:
                if differentiable and run_dropped:
                    scales[block] = mask[position]
                    frozen.add(block)
                else:
                    scales[block] = None
            elif differentiable or value != 1.0:
                scales[block] = mask[position]
        return scales, frozen

    def forward_features(
        self,
        x: Tensor,
        s: float | None = None,
        mask: Tensor | None = None,
        taps: Sequence[int] | None = None,
        run_dropped: bool = False,
    ) -> list[Tensor]:
        """Feature maps after the blocks in ``taps`` (default: the last block of each stage).

        Blocks after the last tap are not run, so an early exit costs only its prefix. With a
        differentiable ``mask``, ``run_dropped`` also runs the blocks it drops (the ``all`` gate
        estimator); their batch norms then leave the running statistics alone.
        """
        self._check_input(x)
        scales, frozen = self._block_scales(s, mask, run_dropped)
        run = _run_block
        if self.compile_options is not None and self.training and torch.is_grad_enabled():
            run = compiled_block(**self.compile_options)
        self._select_plan_stats(scales)
        taps = self.stage_last_blocks if taps is None else sorted(set(taps))
        if not taps or taps[0] < 0 or taps[-1] >= self.num_blocks:
            raise ValueError(f"taps must be block indices in [0, {self.num_blocks}), got {taps}")
        wanted = set(taps)
        out = self.stem(x)
        features = []
        for index in range(taps[-1] + 1):
            block, scale = self.blocks[index], scales[index]
            if scale is not None:
                with _frozen_stats(block, index in frozen and self.training):
                    out = run(block, out, None if isinstance(scale, float) else scale)
            if index in wanted:
                features.append(out)
        return features

    def compile_blocks(self, **options: Any) -> None:
        """Run each residual block of a training pass through ``torch.compile`` (``options``
        go to it, e.g. ``backend="eager"``); evaluation and calibration stay eager.

        The loop over the blocks stays in Python: which blocks a Gumbel mask keeps changes
        every pass, and a graph of the whole network would be compiled again for each mask.
        A block's graph depends only on its shapes and on how it runs (plainly, scaled by its
        gate value, or scaled with frozen statistics), so a network compiles at most
        :func:`block_graph_bound` graphs, however many masks it meets.
        """
        self.compile_options = dict(options)

    def classify(self, features: Tensor) -> Tensor:
        """Logits from the last stage's feature map, in fp32 even under autocast: bf16 logits
        tie often enough (8 bits of mantissa) to bias top-k accuracy."""
        return _fp32_linear(self.fc, torch.flatten(self.pool(features), 1))

    def forward(
        self,
        x: Tensor,
        s: float | None = None,
        mask: Tensor | None = None,
        run_dropped: bool = False,
    ) -> Tensor:
        return self.classify(self.forward_features(x, s=s, mask=mask, run_dropped=run_dropped)[-1])


def _run_block(block: ResidualBlock, x: Tensor, scale: Tensor | None) -> Tensor:
    return block(x, scale)


#: the compiled block function of each set of ``torch.compile`` options
_COMPILED_BLOCKS: dict[tuple[tuple[str, Any], ...], Callable[..., Tensor]] = {}
#: the most graphs one compiled block function may hold (dynamo's ``recompile_limit``)
BLOCK_GRAPH_LIMIT = 64


def block_graph_bound(net: SkippableResNet) -> int:
    """The most block graphs a network's training passes compile at one input size: per stage,
    its first block (always plain) and its gateable blocks (plain, scaled, or scaled with
    frozen statistics)."""
    return 4 * len(net.stage_sizes)


def compiled_block(**options: Any) -> Callable[..., Tensor]:
    """``_run_block`` compiled with ``options`` and static shapes, once per set of options.

    Every block of every network shares it: dynamo keeps one graph per distinct block shape and
    way of running (:func:`block_graph_bound`), up to :data:`BLOCK_GRAPH_LIMIT`.
    """
    key = tuple(sorted(options.items()))
    if key not in _COMPILED_BLOCKS:
        config = torch._dynamo.config
        name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
        setattr(config, name, max(getattr(config, name), BLOCK_GRAPH_LIMIT))
        _COMPILED_BLOCKS[key] = torch.compile(_run_block, dynamic=False, **options)
    return _COMPILED_BLOCKS[key]


@contextlib.contextmanager
def _frozen_stats(block: nn.Module, frozen: bool):
    """Within the block, batch norms use the batch's statistics without updating their own."""
    norms = [m for m in block.modules() if isinstance(m, PlanBatchNorm2d)] if frozen else []
    for norm in norms:
        norm.update_stats = False
    try:
        yield
    finally:
        for norm in norms:
            norm.update_stats = True


def _fp32_linear(layer: nn.Linear, inputs: Tensor) -> Tensor:
    """``layer(inputs)`` computed in fp32, outside any autocast region."""
    with torch.autocast(inputs.device.type, enabled=False):
        return layer(inputs.float())


def _conv_bn_relu(in_channels: int, out_channels: int, kernel: int = 1) -> list[nn.Module]:
    """A ``kernel`` x ``kernel`` convolution of stride ``kernel``, BN and ReLU."""
    return [
        nn.Conv2d(in_channels, out_channels, kernel, kernel, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


class ExitHead(nn.Module):
    """Classifier on an intermediate feature map; returns the logits and the pooled features.

    ``stride=None`` (BranchyNet): a 1x1 convolution to ``width``, BN, ReLU, at the exit's own
    resolution. ``stride=k`` (BYOT, as in the reference code): a bottleneck, 1x1 to ``width / 4``,
    a k x k convolution of stride k, 1x1 to ``width``, each with BN and ReLU, so that the exit
    reaches the final stage's resolution and width before it is pooled.
    """

    def __init__(
        self, in_channels: int, width: int, num_classes: int, stride: int | None = None
    ) -> None:
        super().__init__()
        if stride is None:
            layers = _conv_bn_relu(in_channels, width)
        else:
            middle = width // 4
            layers = _conv_bn_relu(in_channels, middle) + _conv_bn_relu(middle, middle, stride)
            layers += _conv_bn_relu(middle, width)
        self.project = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(width, num_classes)
        for module in self.project:
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """The logits (in fp32 even under autocast, as the backbone's) and the pooled features."""
        pooled = self.project(features)
        return _fp32_linear(self.fc, pooled), pooled


class EarlyExitNetwork(nn.Module):
    """A backbone with classifier exits after some of its blocks (BYOT, BranchyNet).

    The last exit is the backbone's own head. ``net(x, s=d)`` runs the deepest exit
    whose depth (share of blocks run) is at most ``d``, computing only the blocks
    before it, so exit networks answer the same cost calls as a
    :class:`SkippableResNet`. ``bottleneck=True`` gives every exit BYOT's bottleneck head,
    which downsamples it to the final stage's shape (:class:`ExitHead`).
    """

    def __init__(
        self, backbone: SkippableResNet, exit_blocks: Sequence[int], bottleneck: bool = False
    ) -> None:
        super().__init__()
        exits = sorted(set(exit_blocks) | {backbone.num_blocks - 1})
        if exits[0] < 0:
            raise ValueError(f"exit blocks must be >= 0, got {exit_blocks}")
        self.backbone = backbone
        self.exit_blocks = exits
        self.image_size = backbone.image_size
        self.stem = backbone.stem  # the cost helpers read the input layout from here
        last_stage = len(backbone.stage_sizes) - 1
        self.heads = nn.ModuleList()
        for block in exits[:-1]:
            stage = backbone.stage_of_block[block]
            stride = 2 ** (last_stage - stage) if bottleneck else None  # each later stage halves
            channels = backbone.stage_channels[stage]
            self.heads.append(
                ExitHead(channels, backbone.feature_channels, backbone.num_classes, stride)
            )

    @staticmethod
    def blocks_at(num_blocks: int, depths: Sequence[float]) -> list[int]:
        """BranchyNet's exits: after the blocks :func:`depth_plan` keeps of one stage of
        ``num_blocks`` at each depth ``d`` (at least one), one exit per distinct block."""
        return sorted({depth_plan((num_blocks,), d)[0] - 1 for d in depths})

    @property
    def exit_depths(self) -> list[float]:
        """Share of the backbone's blocks run by each exit, shallow to deep."""
        return [(block + 1) / self.backbone.num_blocks for block in self.exit_blocks]

    def exit_for(self, s: float) -> int:
        """Index of the deepest exit whose depth is at most ``s``."""
        value = check_scaling_factor(s)
        fitting = [i for i, depth in enumerate(self.exit_depths) if depth <= value + 1e-9]
        if not fitting:
            raise ValueError(
                f"the shallowest exit runs {self.exit_depths[0]:.0%} of the blocks; "
                f"s={value:g} is below it"
            )
        return fitting[-1]

    def active_blocks(self, s: float = 1.0) -> list[int]:
        return list(range(self.exit_blocks[self.exit_for(s)] + 1))

    def _head(self, index: int, features: Tensor) -> tuple[Tensor, Tensor]:
        if index < len(self.heads):
            return self.heads[index](features)
        pooled = torch.flatten(self.backbone.pool(features), 1)
        return _fp32_linear(self.backbone.fc, pooled), pooled

    def forward_exits(self, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Logits and pooled features of every exit, shallow to deep (for training)."""
        features = self.backbone.forward_features(x, taps=self.exit_blocks)
        outputs = [self._head(index, feature) for index, feature in enumerate(features)]
        return [logits for logits, _ in outputs], [pooled for _, pooled in outputs]

    def forward(self, x: Tensor, s: float | None = None) -> Tensor:
        """Logits of one exit: the deepest within ``s``; only its prefix and head run."""
        index = len(self.exit_blocks) - 1 if s is None else self.exit_for(s)
        features = self.backbone.forward_features(x, taps=[self.exit_blocks[index]])[0]
        return self._head(index, features)[0]


def build_model(arch: str, num_classes: int, image_size: int) -> SkippableResNet:
    """Build a skippable residual network, e.g. ``build_model("resnet56", 100, 32)``."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    smallest = 2 ** len(ARCHITECTURES[arch].stage_sizes)
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < smallest:
        raise ValueError(
            f"image_size must be an integer >= {smallest} for {arch}, got {image_size!r}"
        )
    return SkippableResNet(arch, num_classes, image_size)


# --- batch-norm statistics per depth plan ---------------------------------------------------


@contextlib.contextmanager
def train_mode(module: nn.Module, training: bool):
    """Put a module in training or eval mode for a ``with`` block, then restore its mode."""
    was_training = module.training
    module.train(training)
    try:
        yield
    finally:
        module.train(was_training)


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
    with train_mode(module, True):
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
