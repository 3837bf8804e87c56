"""One run's data in batches: the validation split, the channel statistics, and batch loaders
that shuffle, crop, flip and normalise on the training device.

:func:`prepare_data` loads a run's splits (:func:`coop_utils.datasets.load_dataset`; for
generated data, made once by :func:`coop_utils.generated.generated_root`), keeps the classes
it asks for, resizes and splits them, and wraps them in batch loaders (:class:`BatchLoader`).
The augmentation of a sample depends only on (seed, epoch), so a resumed run sees the same
batches.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from coop_utils.config import RunConfig
from coop_utils.datasets import load_dataset
from coop_utils.generated import generated_root

# --- splits, statistics and batches -----------------------------------------------------------


def train_val_split(
    labels: torch.Tensor | Sequence[int], fraction: float = 0.05, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stratified, seeded split of sample indices: round(fraction x count) of each class go to
    validation (at least one sample stays in train). Returns sorted (train_idx, val_idx)."""
    if not 0 <= fraction < 1:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    labels = torch.as_tensor(labels, dtype=torch.int64)
    generator = torch.Generator().manual_seed(seed)
    shuffled = torch.randperm(len(labels), generator=generator)
    # A stable sort by label keeps the random order within each class.
    order = shuffled[torch.sort(labels[shuffled], stable=True).indices]
    counts = torch.bincount(labels)
    val_counts = torch.minimum(torch.floor(counts * fraction + 0.5).long(), (counts - 1).clamp(0))
    class_starts = torch.cumsum(counts, 0) - counts
    sorted_labels = labels[order]
    rank_in_class = torch.arange(len(labels)) - class_starts[sorted_labels]
    is_val = rank_in_class < val_counts[sorted_labels]
    return order[~is_val].sort().values, order[is_val].sort().values


def channel_stats(
    images: torch.Tensor, indices: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact per-channel mean and std, in [0, 1] units, of uint8 images N x C x H x W, computed
    from a histogram of the 256 pixel values so no float copy of the dataset is made."""
    rows = torch.arange(len(images)) if indices is None else torch.as_tensor(indices)
    histogram = torch.zeros(images.shape[1], 256, dtype=torch.float64)
    for chunk in rows.split(4096):
        pixels = images[chunk.to(images.device)].transpose(0, 1).reshape(images.shape[1], -1)
        for channel, values in enumerate(pixels):
            histogram[channel] += torch.bincount(values, minlength=256).double().cpu()
    levels = torch.arange(256, dtype=torch.float64) / 255
    total = histogram.sum(1)
    mean = (histogram * levels).sum(1) / total
    variance = (histogram * levels**2).sum(1) / total - mean**2
    return mean.float(), variance.clamp_min(1e-12).sqrt().float()


def crop_and_flip(
    batch: torch.Tensor,
    padding: int,
    offsets_y: torch.Tensor,
    offsets_x: torch.Tensor,
    num_flipped: int,
) -> torch.Tensor:
    """Zero-pad a batch B x C x H x W by `padding`, cut each sample's H x W window at its offsets
    (0..2 x padding) and mirror the last `num_flipped` samples, without a Python loop.

    Callers put the samples to mirror last: flipping one contiguous slice costs a fraction of
    flipping an indexed subset.
    """
    size, channels, height, width = batch.shape
    padded = F.pad(batch, (padding, padding, padding, padding))
    stride = padded.stride()
    # windows[b, c, y, x] is the H x W crop of sample b at offset (y, x): a view, no copy.
    windows = padded.as_strided(
        (size, channels, 2 * padding + 1, 2 * padding + 1, height, width),
        (stride[0], stride[1], stride[2], stride[3], stride[2], stride[3]),
    )
    crops = windows[torch.arange(size, device=batch.device), :, offsets_y, offsets_x]
    if num_flipped:
        mirrored = crops[size - num_flipped :]
        mirrored.copy_(mirrored.flip(-1))
    return crops


def seeded_generator(*keys: int) -> torch.Generator:
    """A CPU generator seeded from several integers by hashing, so (seed=0, epoch=1) and
    (seed=1, epoch=0) do not share a stream as they would with seed + epoch."""
    seed = int(np.random.SeedSequence(list(keys)).generate_state(1, dtype=np.uint64)[0])
    return torch.Generator().manual_seed(seed)


class BatchLoader:
    """Batches of a dataset held in memory, augmented batch-wise on `device`.

    Training: each epoch a permutation drawn from (seed, epoch), padded (or, with drop_last,
    truncated) to a multiple of `world_size` as DistributedSampler does, rank r taking every
    world_size-th position from r; then random crop (zero padding `padding`, default H // 8:
    4 at 32x32, 8 at 64x64) and horizontal flip, and normalisation. The augmentation of a
    position depends only on (seed, epoch), so a resumed run sees the same batches (within a
    batch, the mirrored samples come last).
    Evaluation: no shuffle, no augmentation; each rank takes a contiguous block, the blocks
    together cover every sample exactly once.
    `mean`/`std` default to the statistics of the images iterated; pass the training set's
    statistics (see `channel_stats`) to the evaluation loader.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        train: bool = True,
        seed: int = 0,
        device: str | torch.device = "cpu",
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool | None = None,
        indices: torch.Tensor | Sequence[int] | None = None,
        mean: Sequence[float] | torch.Tensor | None = None,
        std: Sequence[float] | torch.Tensor | None = None,
        padding: int | None = None,
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(
                f"images must be uint8 N x C x H x W, got {images.dtype} {images.shape}"
            )
        if len(labels) != len(images):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        if not train and drop_last:
            raise ValueError("evaluation never drops samples: drop_last must be False or None")
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = torch.as_tensor(labels, dtype=torch.int64).to(self.device)
        self.indices = (
            torch.arange(len(images)) if indices is None else torch.as_tensor(indices).long().cpu()
        )
        if len(self.indices) == 0:
            raise ValueError("no samples to iterate")
        self.batch_size = batch_size
        self.train = train
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.drop_last = train if drop_last is None else drop_last
        self.padding = images.shape[-1] // 8 if padding is None else padding
        if mean is None or std is None:
            mean, std = channel_stats(self.images, self.indices)
        std = torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        mean = torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        # (x / 255 - mean) / std as one in-place multiply and one in-place add per batch.
        self._scale = (1 / (255 * std)).to(self.device)
        self._shift = (-mean / std).to(self.device)
        self.epoch = 0
        if train and len(self) == 0:
            raise ValueError(
                f"no batch: rank {rank} of {world_size} gets {self.num_samples} samples, fewer "
                f"than batch_size={batch_size} with drop_last; lower the batch size or pass "
                "drop_last=False"
            )

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose shuffle and augmentation the next iteration uses."""
        self.epoch = epoch

    @property
    def num_samples(self) -> int:
        """Samples this rank sees per epoch."""
        total = len(self.indices)
        if not self.train:
            return len(torch.arange(total).tensor_split(self.world_size)[self.rank])
        if self.drop_last:
            return total // self.world_size
        return math.ceil(total / self.world_size)

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.train:
            positions, offsets_y, offsets_x, flips = self._training_epoch()
        else:
            positions = torch.arange(len(self.indices)).tensor_split(self.world_size)[self.rank]
        for batch_number in range(len(self)):
            window = slice(batch_number * self.batch_size, (batch_number + 1) * self.batch_size)
            rows = self.indices[positions[window]].to(self.device, non_blocking=True)
            batch = self.images[rows]
            if self.train:
                batch = crop_and_flip(
                    batch,
                    self.padding,
                    offsets_y[window].to(self.device, non_blocking=True),
                    offsets_x[window].to(self.device, non_blocking=True),
                    int(flips[window].sum()),
                )
            yield batch.float().mul_(self._scale).add_(self._shift), self.labels[rows]

    def _training_epoch(self) -> tuple[torch.Tensor, ...]:
        """This rank's positions and augmentation parameters for the current epoch."""
        total = len(self.indices)
        generator = seeded_generator(self.seed, self.epoch)
        order = torch.randperm(total, generator=generator)
        if self.drop_last:
            order = order[: total - total % self.world_size]
        else:
            padded_size = math.ceil(total / self.world_size) * self.world_size
            order = order.repeat(math.ceil(padded_size / total))[:padded_size]
        offsets = torch.randint(0, 2 * self.padding + 1, (2, len(order)), generator=generator)
        flips = torch.rand(len(order), generator=generator) < 0.5
        mine = slice(self.rank, None, self.world_size)
        positions, offsets, flips = order[mine], offsets[:, mine], flips[mine]
        # Within each batch the mirrored samples go last, so crop_and_flip flips one slice.
        batch_numbers = torch.arange(len(positions)) // self.batch_size
        regroup = torch.argsort(batch_numbers * 2 + flips.long(), stable=True)
        return positions[regroup], offsets[0, regroup], offsets[1, regroup], flips[regroup]


# --- one run's data -------------------------------------------------------------------


@dataclass
class Data:
    """Loaders and shapes of one run's data."""

    train: BatchLoader
    val: BatchLoader | None
    test: BatchLoader
    num_classes: int
    image_size: int
    description: str
    calibration: BatchLoader | None = None  # training images for per-depth batch norm


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
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
    root = generated_root(config) if generated else config.data_root
    train = load_dataset(config.dataset, "train", root=root, verify=not generated)
    test = load_dataset(config.dataset, "test", root=root, verify=not generated)
    num_classes = config.num_classes or len(train.classes)
    if num_classes > len(train.classes):
        raise ValueError(
            f"config key 'num_classes' is {num_classes}, but {config.dataset} has "
            f"{len(train.classes)} classes"
        )
    image_size = config.image_size or train.images.shape[-1]

    keep = torch.nonzero(train.labels < num_classes).flatten()
    if config.train_fraction < 1:
        used, _ = train_val_split(train.labels[keep], 1 - config.train_fraction, seed=0)
        keep = keep[used]
    train_idx, val_idx = train_val_split(train.labels[keep], config.val_fraction, seed=0)
    train_idx, val_idx = keep[train_idx], keep[val_idx]
    test_idx = torch.nonzero(test.labels < num_classes).flatten()

    train_images = _resize(train.images, image_size)
    test_images = _resize(test.images[test_idx], image_size)
    mean, std = channel_stats(train_images, train_idx)
    # One copy of the training images on the device, shared by the three loaders that read it.
    train_images, train_labels = train_images.to(device), train.labels.to(device)
    # Training splits each batch over the processes; evaluation and the re-estimation of the
    # batch-norm statistics (rank 0's) take whole batches of every sample, so that they do not
    # depend on the number of processes.
    single = {"batch_size": config.batch_size, "device": device, "mean": mean, "std": std}
    per_rank = single | {"batch_size": config.batch_size // world_size}
    per_rank |= {"rank": rank, "world_size": world_size}
    train_loader = BatchLoader(
        train_images, train_labels, train=True, seed=config.seed, indices=train_idx, **per_rank
    )
    val_loader = None
    if len(val_idx):
        val_loader = BatchLoader(train_images, train_labels, train=False, indices=val_idx, **single)
    test_loader = BatchLoader(test_images, test.labels[test_idx], train=False, **single)
    # Per-depth batch norm is re-estimated on a seeded random subset of the training images,
    # without augmentation (the test images have none); never on validation or test images.
    subset = train_idx[torch.randperm(len(train_idx), generator=seeded_generator(config.seed, 99))]
    subset = subset[: config.bn_batches * config.batch_size]
    calibration = BatchLoader(train_images, train_labels, train=False, indices=subset, **single)
    description = (
        f"{train.describe()}; using {num_classes} classes at {image_size}x{image_size}: "
        f"{len(train_idx):,} train, {len(val_idx):,} validation, {len(test_idx):,} test images"
    )
    return Data(
        train_loader, val_loader, test_loader, num_classes, image_size, description, calibration
    )
