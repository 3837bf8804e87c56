"""Distillation losses and the cooperative objective of METHOD.md.

``KD(t -> u) = T^2 * KL(softmax(t / T) || softmax(u / T))`` with the teacher ``t``
detached, averaged over the batch. The objective sums:

- the Leader ``L``: ``CE(z_L, y)``;
- each Teammate ``i``: ``CE(z_i, y) + mean_j KD(z_j -> z_i) + KD(z_L -> z_i)``,
  the mean running over the other Teammates (one other when there are two);
- each sub-network of Teammate ``i`` at ``s < 1``:
  ``w(s) * [CE(z_i^s, y) + KD(z_i -> z_i^s)]`` with ``w(s) = 1 / s`` under SFSL
  (``sfsl_normalise``: ``1 / s`` rescaled to mean 1 over the Teammate's drawn factors, so the
  sub-network terms keep the total weight they have without SFSL).

The switches ``use_leader``, ``mutual`` and ``sfsl`` each remove exactly their term.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

from coop_utils.models import check_scaling_factor


def kd_loss(student: Tensor, teacher: Tensor, temperature: float = 4.0) -> Tensor:
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, batch mean; teacher detached."""
    if not temperature > 0:
        raise ValueError(f"distillation temperature must be > 0, got {temperature!r}")
    if student.shape != teacher.shape:
        raise ValueError(
            f"student and teacher logits differ in shape: {tuple(student.shape)} vs "
            f"{tuple(teacher.shape)}"
        )
    log_student = F.log_softmax(student / temperature, dim=-1)
    log_teacher = F.log_softmax(teacher.detach() / temperature, dim=-1)
    kl = F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True)
    return temperature**2 * kl


def sfsl_weight(scaling_factor: float, sfsl: bool = True) -> float:
    """Scaling Factor Sensitive Loss weight: ``1 / s`` with SFSL, ``1`` without."""
    value = check_scaling_factor(scaling_factor)
    return 1.0 / value if sfsl else 1.0


def sfsl_weights(
    scaling_factors: Sequence[float], sfsl: bool = True, normalise: bool = False
) -> list[float]:
    """The weights of one Teammate's sub-networks; ``normalise`` rescales ``1 / s`` to mean 1."""
    weights = [sfsl_weight(s, sfsl) for s in scaling_factors]
    if normalise and weights:
        mean = sum(weights) / len(weights)
        weights = [weight / mean for weight in weights]
    return weights


def leader_loss(leader_logits: Tensor, targets: Tensor) -> Tensor:
    """The Leader learns from the labels alone."""
    return F.cross_entropy(leader_logits, targets)


def teammate_loss(
    logits: Tensor,
    targets: Tensor,
    other_teammates: Sequence[Tensor] = (),
    leader_logits: Tensor | None = None,
    temperature: float = 4.0,
    mutual: bool = True,
    use_leader: bool = True,
) -> Tensor:
    """``CE + mean_j KD(z_j -> z_i) [mutual] + KD(z_L -> z_i) [use_leader]`` for one Teammate."""
    loss = F.cross_entropy(logits, targets)
    if mutual and other_teammates:
        mutual_terms = [kd_loss(logits, other, temperature) for other in other_teammates]
        loss = loss + sum(mutual_terms) / len(mutual_terms)
    if use_leader:
        if leader_logits is None:
            raise ValueError("use_leader=True needs the Leader's logits")
        loss = loss + kd_loss(logits, leader_logits, temperature)
    return loss


def subnetwork_loss(
    sub_logits: Tensor,
    full_logits: Tensor,
    targets: Tensor,
    scaling_factor: float,
    temperature: float = 4.0,
    sfsl: bool = True,
    weight: float | None = None,
) -> Tensor:
    """``w(s) * [CE(z^s, y) + KD(z -> z^s)]``: a sub-network learns from labels and its Teammate.

    ``weight`` overrides ``w(s)`` (see :func:`sfsl_weights` for the normalised variant).
    """
    weight = sfsl_weight(scaling_factor, sfsl) if weight is None else weight
    ce = F.cross_entropy(sub_logits, targets)
    return weight * (ce + kd_loss(sub_logits, full_logits, temperature))


def cooperative_objective(
    teammate_logits: Sequence[Tensor],
    subnetwork_logits: Sequence[Sequence[tuple[float, Tensor]]],
    targets: Tensor,
    leader_logits: Tensor | None = None,
    temperature: float = 4.0,
    use_leader: bool = True,
    mutual: bool = True,
    sfsl: bool = True,
    sfsl_normalise: bool = False,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Total cooperative loss and its terms (detached, for logging).

    ``subnetwork_logits[i]`` lists ``(s, logits)`` of Teammate ``i``'s sub-networks.
    """
    if len(subnetwork_logits) != len(teammate_logits):
        raise ValueError(
            f"got sub-networks for {len(subnetwork_logits)} Teammates, "
            f"but {len(teammate_logits)} Teammates"
        )
    terms: dict[str, Tensor] = {}
    if use_leader:
        if leader_logits is None:
            raise ValueError("use_leader=True needs the Leader's logits")
        terms["leader"] = leader_loss(leader_logits, targets)
    for index, (logits, subs) in enumerate(zip(teammate_logits, subnetwork_logits, strict=True)):
        others = [other for j, other in enumerate(teammate_logits) if j != index]
        terms[f"teammate{index}"] = teammate_loss(
            logits, targets, others, leader_logits, temperature, mutual, use_leader
        )
        weights = sfsl_weights([s for s, _ in subs], sfsl, sfsl_normalise)
        for position, ((scaling_factor, sub_logits), weight) in enumerate(
            zip(subs, weights, strict=True)
        ):
            terms[f"teammate{index}/sub{position}@{scaling_factor:g}"] = subnetwork_loss(
                sub_logits, logits, targets, scaling_factor, temperature, weight=weight
            )
    return sum(terms.values()), {name: value.detach() for name, value in terms.items()}


def byot_loss(
    logits: Sequence[Tensor],
    features: Sequence[Tensor],
    targets: Tensor,
    alpha: float = 0.1,
    beta: float = 1e-6,
    temperature: float = 3.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """BYOT's loss as ``train.py`` of luanyunteng/pytorch-be-your-own-teacher computes it.

    ``logits[e]`` and ``features[e]`` (pooled) of every exit, shallow to deep; the deepest is
    the teacher, detached. ``(1 - alpha) * sum_e CE(z_e, y)
    + alpha * T^2 * sum_{e < E} softCE(z_e / T, softmax(z_E / T))
    + beta * sum_{e < E} sum((f_e - f_E)^2 where f_e > 0 or f_E > 0)``: the soft-target
    cross-entropy is a batch mean (it has the gradient of KL), the feature loss a sum over the
    batch and every feature.
    """
    if len(logits) != len(features) or len(logits) < 2:
        raise ValueError(
            f"BYOT needs logits and features of the same exits, at least 2; got "
            f"{len(logits)} logits and {len(features)} features"
        )
    teacher = F.softmax(logits[-1].detach() / temperature, dim=-1)
    target_features = features[-1].detach()
    terms = {f"exit{e}_ce": (1 - alpha) * F.cross_entropy(z, targets) for e, z in enumerate(logits)}
    for e, (z, f) in enumerate(zip(logits[:-1], features[:-1], strict=True)):
        soft_ce = -(teacher * F.log_softmax(z / temperature, dim=-1)).sum(-1).mean()
        terms[f"exit{e}_kd"] = alpha * temperature**2 * soft_ce
        kept = (f > 0) | (target_features > 0)
        terms[f"exit{e}_feature"] = beta * ((f - target_features) ** 2 * kept).sum()
    return sum(terms.values()), {name: value.detach() for name, value in terms.items()}
