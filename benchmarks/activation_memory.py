"""How much GPU memory does each method's training step need? Saved activations, counted.

For the full profile's network, ResNet-152, at 32 px (CIFAR-100) and 64 px (Tiny ImageNet),
every method's step is run on the CPU as training runs it (pass by pass,
``System.backward_step``) and, beside it, as one forward and one backward over all its passes.
The bytes that autograd saves for backward are counted while they are alive
(:class:`coop_utils.memory.SavedActivations`) under bf16 autocast, as on CUDA, where autocast
also runs ``addcmul`` in the widest type of its inputs (emulated here: the CPU's autocast does
not). Saved activations grow linearly with the batch: they are counted at batches of 1 and 2
and extrapolated to ``--batch``. The Teammates' sub-networks run at the largest factors a step
can draw (0.9 and 0.8), the costliest step.

A step's memory is then estimated as its peak of saved activations plus the parameters, their
gradients and the optimizer's momentum (fp32, 12 bytes a parameter); cuDNN's workspaces and the
allocator's slack are not counted, so the batch that "fits" keeps 10 % of the card free.

    python benchmarks/activation_memory.py                   # both sizes, every method
    python benchmarks/activation_memory.py --sizes 64 --methods cooperative independent

A few minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

from coop_utils.config import load_config
from coop_utils.memory import SavedActivations
from coop_utils.systems import StepRandomness, build_system

METHODS = ("cooperative", "independent", "byot", "branchynet")
DATASET_OF_SIZE = {32: ("cifar100", 100), 64: ("tiny-imagenet", 200)}
#: the card, and the share of it a step's estimate may take
CARD_BYTES = 80 * 10**9
USABLE_SHARE = 0.9


class CudaAutocastPromotion(TorchFunctionMode):
    """Under autocast, ``addcmul`` runs in the widest type of its tensor inputs, as CUDA's
    autocast does (its "promote" list); the CPU's autocast leaves the types as they are."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.addcmul and torch.is_autocast_enabled("cpu"):
            tensors = [a for a in args if isinstance(a, Tensor)]
            widest = max((t.dtype for t in tensors), key=lambda d: torch.finfo(d).bits)
            args = tuple(a.to(widest) if isinstance(a, Tensor) else a for a in args)
        return func(*args, **kwargs)


def _peak(step: Callable[[], object]) -> int:
    autocast = torch.autocast("cpu", dtype=torch.bfloat16)
    with SavedActivations() as saved, CudaAutocastPromotion(), autocast:
        step()
    return saved.peak


def measure(method: str, image_size: int, batch: int, arch: str = "resnet152") -> dict[str, int]:
    """Peak saved bytes of one step at ``batch``: pass by pass and with one backward."""
    dataset, num_classes = DATASET_OF_SIZE[image_size]
    config = load_config(
        "full", dataset=dataset, method=method, image_size=image_size, arch=arch, device="cpu"
    )
    torch.manual_seed(0)
    system = build_system(config, num_classes, image_size)
    system = system.to(memory_format=torch.channels_last)
    images = torch.randn(batch, 3, image_size, image_size)
    images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.arange(batch) % num_classes
    costliest = sorted(config.sampled_factors)[-config.factors_per_teammate :]

    def randomness() -> StepRandomness:
        drawn = StepRandomness(torch.Generator().manual_seed(1), torch.Generator().manual_seed(2))
        drawn.epoch_factors = [list(costliest) for _ in range(config.teammates)]
        return drawn

    def one_backward() -> None:
        loss, _ = system(images, labels, randomness())
        loss.backward()

    peaks = {
        "pass_by_pass": _peak(lambda: system.backward_step(images, labels, randomness())),
        "one_backward": _peak(one_backward),
    }
    peaks["parameters"] = sum(p.numel() for p in system.parameters())
    return peaks


def estimate(method: str, image_size: int, batch: int, arch: str = "resnet152") -> dict[str, float]:
    """Saved activations at ``batch`` (from batches of 1 and 2), the step's memory, and the
    largest batch (a multiple of 8) whose estimate fits the usable share of the card."""
    one, two = measure(method, image_size, 1, arch), measure(method, image_size, 2, arch)
    row: dict[str, float] = {"method": method, "image_size": image_size, "batch": batch}
    static = 12 * one["parameters"]
    for key in ("pass_by_pass", "one_backward"):
        slope = two[key] - one[key]
        intercept = one[key] - slope
        row[f"{key}_gib"] = (intercept + slope * batch) / 2**30
        room = USABLE_SHARE * CARD_BYTES - static - intercept
        row[f"{key}_fits"] = 8 * math.floor(room / slope / 8)
    row["static_gib"] = static / 2**30
    row["step_gib"] = row["static_gib"] + row["pass_by_pass_gib"]
    return row


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64], choices=[32, 64])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args(argv)
    print(
        f"ResNet-152, bf16 autocast, batch {args.batch}: saved activations (GiB) at the step's "
        f"peak, and the largest batch within {USABLE_SHARE:.0%} of {CARD_BYTES / 1e9:.0f} GB"
    )
    print(
        f"{'method':<12} {'px':>3} {'pass by pass':>13} {'one backward':>13} {'params+':>8} "
        f"{'step':>6} {'fits':>5} {'fits (one)':>10}"
    )
    for size in args.sizes:
        for method in args.methods:
            row = estimate(method, size, args.batch)
            print(
                f"{method:<12} {size:>3} {row['pass_by_pass_gib']:>13.1f} "
                f"{row['one_backward_gib']:>13.1f} {row['static_gib']:>8.1f} "
                f"{row['step_gib']:>6.1f} {row['pass_by_pass_fits']:>5} "
                f"{row['one_backward_fits']:>10}",
                flush=True,
            )


if __name__ == "__main__":
    main()
