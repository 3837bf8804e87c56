"""Which blocks a depth plan keeps: Gumbel-Softmax masks for training, top-k for inference.

Each network learns one logit per gateable block. For a scaling factor ``s``,
stage ``j`` keeps ``k_j - 1`` of its gateable blocks (its first block always runs):

- training: a hard top-(k_j - 1) mask of ``logits + Gumbel noise``, with the
  gradient of a relaxed top-k (``k`` successive tempered softmaxes, Xie & Ermon
  2019) passed straight through;
- inference: the top-(k_j - 1) blocks by logit, ties broken towards earlier
  blocks, so the plans of growing ``s`` are nested.

``mode="first"`` learns nothing and keeps the first blocks of each stage.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from coop_utils.models import SkippableResNet, depth_plan, first_blocks_mask

GATING_MODES = ("gumbel", "first")


def sample_gumbel(
    shape: torch.Size | tuple[int, ...],
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Standard Gumbel noise ``-log(-log(U))``, moved to ``device``.

    The uniform draw happens on the CPU (where the run's seeded generators live) and is then
    moved, so a CPU run and a GPU run of one seed draw the same noise.
    """
    uniform = torch.rand(shape, generator=generator)
    tiny = torch.finfo(uniform.dtype).tiny
    noise = -torch.log((-torch.log(uniform.clamp_min(tiny))).clamp_min(tiny))
    return noise if device is None else noise.to(device)


def relaxed_topk(scores: Tensor, k: int, tau: float) -> Tensor:
    """Soft k-hot vector: the sum of ``k`` softmaxes, each damping what the last chose."""
    soft = torch.zeros_like(scores)
    chosen = torch.zeros_like(scores)
    damped = scores
    for _ in range(k):
        damped = damped + torch.log1p(-chosen.clamp(max=1 - 1e-6))
        chosen = torch.softmax(damped / tau, dim=-1)
        soft = soft + chosen
    return soft


def _topk_mask(scores: Tensor, k: int) -> Tensor:
    """Hard k-hot vector of the largest scores, ties going to earlier positions."""
    mask = torch.zeros_like(scores)
    if k > 0:
        order = torch.sort(scores.detach(), descending=True, stable=True).indices
        mask[order[:k]] = 1.0
    return mask


class BlockGate(nn.Module):
    """Per-network gate: one logit per gateable block of a :class:`SkippableResNet`."""

    def __init__(self, stage_sizes: tuple[int, ...], mode: str = "gumbel") -> None:
        super().__init__()
        if mode not in GATING_MODES:
            raise ValueError(f"unknown gating mode {mode!r}; known: {', '.join(GATING_MODES)}")
        self.mode = mode
        self.stage_sizes = tuple(stage_sizes)
        num_gateable = sum(size - 1 for size in self.stage_sizes)
        # Zero logits tie everywhere, so an untrained gate keeps the first blocks.
        self.logits = nn.Parameter(torch.zeros(num_gateable), requires_grad=mode == "gumbel")

    def _stages(self, scaling_factor: float):
        """Yield ``(slice of gateable positions, blocks to keep among them)`` per stage."""
        plan = depth_plan(self.stage_sizes, scaling_factor)
        start = 0
        for size, keep in zip(self.stage_sizes, plan, strict=True):
            yield slice(start, start + size - 1), keep - 1
            start += size - 1

    def inference_mask(self, scaling_factor: float) -> Tensor:
        """Deterministic hard mask: the top-(k_j - 1) gateable blocks of each stage by logit."""
        if self.mode == "first":
            return first_blocks_mask(self.stage_sizes, scaling_factor).to(self.logits.device)
        mask = torch.zeros_like(self.logits, requires_grad=False)
        for positions, keep in self._stages(scaling_factor):
            mask[positions] = _topk_mask(self.logits[positions], keep)
        return mask

    def sample(
        self, scaling_factor: float, tau: float = 1.0, generator: torch.Generator | None = None
    ) -> Tensor:
        """Training mask: hard top-k of noisy logits, straight-through relaxed-top-k gradient."""
        if self.mode == "first":
            return self.inference_mask(scaling_factor)
        if not tau > 0:
            raise ValueError(f"Gumbel-Softmax temperature tau must be > 0, got {tau!r}")
        noise = sample_gumbel(self.logits.shape, generator=generator, device=self.logits.device)
        noisy = self.logits + noise
        parts = []
        for positions, keep in self._stages(scaling_factor):
            scores = noisy[positions]
            hard = _topk_mask(scores, keep)
            # keep = 0 still ties the stage's logits to the graph (with zero gradient), so that
            # every parameter takes part in every step.
            soft = relaxed_topk(scores, keep, tau) if keep > 0 else scores * 0.0
            parts.append(hard - soft.detach() + soft)
        return torch.cat(parts)


def add_gate(net: SkippableResNet, mode: str = "gumbel") -> BlockGate:
    """Attach a :class:`BlockGate` to ``net`` as ``net.gate`` and return it.

    From then on ``net(x, s=...)`` and ``net.active_blocks(s)`` follow the gate's
    inference plan, and the logits are part of ``net.parameters()`` and its state dict.
    """
    gate = BlockGate(net.stage_sizes, mode=mode).to(net.fc.weight.device)
    net.gate = gate
    return gate
