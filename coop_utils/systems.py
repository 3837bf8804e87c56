"""What one training step computes, per method: each method is a *system*.

A system is an ``nn.Module`` that holds a method's networks, returns the training loss of a
batch from ``forward`` (and accumulates its gradients in ``backward_step``), re-estimates its
batch-norm statistics after training (``calibrate``) and lists what to evaluate
(``evaluations``). How steps are run (data, optimiser, schedule, checkpoints, resume, torchrun)
is :mod:`coop_utils.training`'s.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from coop_utils.config import RunConfig
from coop_utils.gating import add_gate
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
    calibrate_batchnorm,
    depth_plan,
    precise_batchnorm,
)


def autocast(device: torch.device, precision: str):
    """bf16 autocast for ``precision == "bf16"``; nothing for fp32."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


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

    def __init__(self, config: RunConfig) -> None:
        super().__init__()
        self.config = config
        self.precision = config.resolved_precision()

    def calibrate(self, batches: list[Tensor]) -> None:
        """After training, every method alike: re-estimate batch-norm statistics from clean
        training images (the cooperative Teammates per depth plan, every other network once),
        under the autocast of training and evaluation, so that the statistics are those of the
        activations that evaluation normalises."""
        if batches:
            with autocast(batches[0].device, self.precision):
                self._calibrate(batches)

    def _calibrate(self, batches: list[Tensor]) -> None:
        raise NotImplementedError

    def start_epoch(self, randomness: StepRandomness) -> None:
        """Per-epoch choices (the cooperative method draws its scaling factors here)."""

    def backward_step(
        self, images: Tensor, labels: Tensor, randomness: StepRandomness
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Accumulate the gradients of the batch's loss; return the loss (detached) and terms."""
        with autocast(images.device, self.precision):
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
        pool, count = self.config.sampled_factors, self.config.factors_per_teammate
        orders = [torch.randperm(len(pool), generator=generator) for _ in self.teammates]
        return [[pool[i] for i in order[:count].tolist()] for order in orders]

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
        block, so that a dropped block's gate gets its exact straight-through gradient.
        """
        mask = net.gate.sample(s, self.config.tau, generator=randomness.gumbel)
        return net(images, mask=mask, run_dropped=self.config.gate_gradient == "all")

    def _calibrate(self, batches: list[Tensor]) -> None:
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
        cast = functools.partial(autocast, images.device, self.precision)
        leader_logits = None
        if self.leader is not None:
            with cast():
                leader_logits = self.leader(images)
                terms["leader"] = leader_loss(leader_logits, labels)
            terms["leader"].backward()
            leader_logits = leader_logits.detach()
        with cast():
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
                with cast():
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
        return sum(terms.values()), {name: value.detach() for name, value in terms.items()}

    def backward_step(
        self, images: Tensor, labels: Tensor, randomness: StepRandomness
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The gradients of ``forward``'s loss, one network at a time: the networks share
        nothing, so each backward right after its forward frees its activations before the
        next network runs (one network's graph at a time instead of all of them)."""
        terms = {}
        for factors, net in zip(self.factors, self.nets, strict=True):
            with autocast(images.device, self.precision):
                term = F.cross_entropy(net(images, s=factors[0]), labels)
            term.backward()
            terms[f"independent@{factors[0]:g}"] = term.detach()
        return sum(terms.values()), terms

    def _calibrate(self, batches: list[Tensor]) -> None:
        for factors, net in zip(self.factors, self.nets, strict=True):
            precise_batchnorm(net, batches, lambda images, n=net, s=factors[0]: n(images, s=s))

    def evaluations(self) -> Iterator[tuple[str, nn.Module, float]]:
        for factors, net in zip(self.factors, self.nets, strict=True):
            for s in factors:
                yield "independent", net, s


class ExitSystem(System):
    """A backbone with early exits. BYOT: an exit per stage with a bottleneck head, trained
    with :func:`coop_utils.losses.byot_loss`. BranchyNet: at each scaling factor, an exit after
    the blocks ``depth_plan`` keeps of the whole network taken as one stage, one per distinct
    block, the backbone's head being the last (:meth:`EarlyExitNetwork.blocks_at`); trained with
    the weighted sum of the exits' cross-entropies (``branchynet_weights``, shallow to deep;
    default 1 for every exit, as in the authors' code)."""

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
        return sum(terms.values()), {name: value.detach() for name, value in terms.items()}

    def _calibrate(self, batches: list[Tensor]) -> None:
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
