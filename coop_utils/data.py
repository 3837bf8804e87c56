"""CIFAR-100 and Tiny ImageNet in their real on-disk formats.

Download with checksums, a decode-once tensor cache, batch-wise augmentation on the training
device, and generators of small datasets in the same formats for tests and the smoke profile.
`COOP_DATA_ROOT` (default `data/`) holds the datasets and is never written to except by a
download; `COOP_CACHE_DIR` (default `~/.cache/coop_utils`) holds the decoded tensors.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import pickle
import shutil
import socket
import struct
import tarfile
import tempfile
import urllib.parse
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.datasets import CIFAR100
from torchvision.datasets.utils import calculate_md5, download_url
from torchvision.io import ImageReadMode, decode_jpeg
from tqdm.auto import tqdm

from coop_utils.config import RunConfig

logger = logging.getLogger(__name__)

SPLITS = ("train", "test")
GENERATED_MARKER = "COOP_GENERATED"
DOWNLOAD_TIMEOUT_S = 30
_CACHE_FORMAT_VERSION = 1
_DECODE_CHUNK = 512


@dataclass(frozen=True)
class DatasetInfo:
    """Where a dataset comes from and its official shape."""

    folder: str
    url: str
    md5: str
    num_classes: int
    image_size: int
    train_per_class: int
    test_per_class: int


DATASETS: dict[str, DatasetInfo] = {
    "cifar100": DatasetInfo(
        folder="cifar-100-python",
        url=CIFAR100.url,
        md5=CIFAR100.tgz_md5,
        num_classes=100,
        image_size=32,
        train_per_class=500,
        test_per_class=100,
    ),
    "tiny-imagenet": DatasetInfo(
        folder="tiny-imagenet-200",
        url="http://cs231n.stanford.edu/tiny-imagenet-200.zip",
        md5="90528d7ca1a48142e341f4ef8d21d0de",
        num_classes=200,
        image_size=64,
        train_per_class=500,
        test_per_class=50,
    ),
}


class DatasetError(RuntimeError):
    """A dataset that cannot be loaded as it is on disk."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """The dataset is neither present nor downloadable."""


class ChecksumError(DatasetError):
    """A file whose md5 differs from the published one."""


class ImageDecodeError(DatasetError):
    """An image file that does not decode to the dataset's image shape."""


@dataclass(repr=False, eq=False)
class Dataset:
    """One split held in memory: uint8 images N x 3 x H x W, int64 labels N, class names."""

    name: str
    split: str
    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    source: Path
    generated: bool
    fingerprint: str = ""  # data_fingerprint of the files it was loaded from

    def __len__(self) -> int:
        return len(self.labels)

    def class_counts(self) -> torch.Tensor:
        """Images per class, indexed by label."""
        return torch.bincount(self.labels, minlength=len(self.classes))

    def describe(self) -> str:
        """One line: what was loaded, how many per class, from where, and whether it is real."""
        counts = self.class_counts()
        low, high = int(counts.min()), int(counts.max())
        per_class = f"{low}" if low == high else f"{low}-{high}"
        _, channels, height, width = self.images.shape
        text = (
            f"{self.name} {self.split}: {len(self):,} images of {channels}x{height}x{width}, "
            f"{len(self.classes)} classes, {per_class} per class, from {self.source}"
        )
        if self.generated:
            return f"GENERATED data in the {self.name} format, not real {self.name}: {text}"
        return text

    def __repr__(self) -> str:
        return f"Dataset({self.describe()})"


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The folder that holds the datasets: `root`, else `COOP_DATA_ROOT`, else `data/`."""
    return Path(root if root is not None else os.environ.get("COOP_DATA_ROOT", "data"))


def cache_dir() -> Path:
    """The folder of decoded-tensor caches: `COOP_CACHE_DIR`, else `~/.cache/coop_utils`."""
    return Path(os.environ.get("COOP_CACHE_DIR", Path.home() / ".cache" / "coop_utils"))


def load_dataset(
    name: str,
    split: str,
    root: str | os.PathLike | None = None,
    download: bool = True,
    verify: bool = True,
) -> Dataset:
    """Load a whole split into memory, decoding it once and serving the cache afterwards.

    Tiny ImageNet's official `val` split is our `test` split. Train images come class by class
    in `wnids.txt` order, files sorted by name; test images in `val_annotations.txt` order.
    `verify=False` skips the md5 checks (of the archive and of the CIFAR-100 pickles): only for
    data made by `make_fake_cifar100`, whose pickles cannot match the published digests.
    A cached split is served without hashing its files again: its cache key holds their paths,
    sizes and modification times.
    """
    folder, index = _locate(name, split, data_root(root), download, verify)
    salt = f"{_CACHE_FORMAT_VERSION}\t{name}/{split}/verify={verify and name == 'cifar100'}"
    cache_path = cache_dir() / f"{name}-{split}-{_fingerprint(index.file_stats, salt)}.pt"
    tensors = _read_cache(cache_path)
    if tensors is None:
        tensors = _DECODERS[name](folder, split, index, verify)
        _write_cache(cache_path, tensors)
    dataset = Dataset(
        name=name,
        split=split,
        images=tensors["images"],
        labels=tensors["labels"],
        classes=list(tensors["classes"]),
        source=folder,
        generated=(folder / GENERATED_MARKER).is_file(),
        fingerprint=_fingerprint(index.file_stats, f"{name}/{split}", mtimes=False),
    )
    # A subset of the official split is a warning: its numbers are not comparable with results
    # on the full split.
    info = DATASETS[name]
    counts = dataset.class_counts()
    official = info.train_per_class if split == "train" else info.test_per_class
    if len(counts) == info.num_classes and bool((counts == official).all()):
        logger.info("loaded %s", dataset.describe())
    else:
        logger.warning(
            "loaded a subset of the official split (which has %d classes x %d images): %s",
            info.num_classes,
            official,
            dataset.describe(),
        )
    return dataset


def data_fingerprint(name: str, split: str, root: str | os.PathLike | None = None) -> str:
    """SHA-256 (16 hex digits) of the relative paths and byte sizes of the files a split is
    loaded from: it names the data a run saw, and survives copies to other machines (which
    change modification times). Cheap: a directory listing and a stat per file, no decoding.
    A missing dataset raises the loader's :class:`DatasetNotFoundError`; nothing is downloaded.
    """
    _, index = _locate(name, split, data_root(root), download=False, verify=False)
    return _fingerprint(index.file_stats, f"{name}/{split}", mtimes=False)


def _locate(
    name: str, split: str, root: Path, download: bool, verify: bool
) -> tuple[Path, _SourceIndex]:
    """The dataset's folder under ``root`` (downloaded first if it is absent and ``download``)
    and the index of the split's files."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise ValueError(
            f"unknown split {split!r}; known splits: {', '.join(SPLITS)} "
            "(Tiny ImageNet's official val split is 'test')"
        )
    folder = root / DATASETS[name].folder
    if not folder.exists():
        if not download:
            raise DatasetNotFoundError(_not_found_message(name, root, "download=False"))
        _download_and_extract(name, root, verify)
    return folder, _INDEXERS[name](folder, split)


def _not_found_message(name: str, root: Path, reason: str) -> str:
    info = DATASETS[name]
    return (
        f"dataset {name} not found at {(root / info.folder).resolve()} ({reason}). "
        f"Download {info.url} and extract it into {root.resolve()}, "
        f"or set COOP_DATA_ROOT to the folder that holds {info.folder}/."
    )


# --- download ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """A timeout for the sockets opened in a ``with`` block (torchvision's download sets none),
    so that a machine without network fails fast."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _download_and_extract(name: str, root: Path, verify: bool) -> None:
    """Download the official archive and extract it so the dataset folder appears whole or
    not at all: download and md5 check in a temp folder, extraction there, then rename."""
    info = DATASETS[name]
    root.mkdir(parents=True, exist_ok=True)
    archive_name = Path(urllib.parse.urlparse(info.url).path).name
    staging = Path(tempfile.mkdtemp(dir=root, prefix=f".{info.folder}-"))
    try:
        archive, extraction = staging / archive_name, staging / "extracted"
        try:
            with _socket_timeout(DOWNLOAD_TIMEOUT_S):
                download_url(info.url, staging, archive_name)
        except OSError as error:
            raise DatasetNotFoundError(
                _not_found_message(name, root, f"the download failed: {error}")
            ) from error
        if verify and (actual := calculate_md5(archive)) != info.md5:
            raise ChecksumError(
                f"the download of {name} from {info.url} has md5 {actual}, expected "
                f"{info.md5}; the file was removed. Try again, or download it by hand and "
                f"extract it into {root.resolve()}."
            )
        # Not torchvision's extract_archive: its tar extraction has no "data" filter, which
        # refuses absolute paths and links out of the folder.
        if archive_name.endswith(".zip"):
            with zipfile.ZipFile(archive) as opened:
                opened.extractall(extraction)
        else:
            with tarfile.open(archive) as opened:
                opened.extractall(extraction, filter="data")
        if not (extraction / info.folder).is_dir():
            raise DatasetError(f"{info.url} does not contain the folder {info.folder}/")
        os.replace(extraction / info.folder, root / info.folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# --- a dataset folder built beside its place ----------------------------------------------------


@contextlib.contextmanager
def build_folder(root: Path, folder: str) -> Iterator[Path]:
    """A temp folder beside ``root/folder`` to write a dataset folder in: renamed to
    ``root/folder`` when the ``with`` block ends, removed if the block raises, so the folder
    appears whole or not at all. FileExistsError if ``root/folder`` exists, or if another
    process creates it meanwhile (theirs is kept: complete, since it too arrived by rename)."""
    target = root / folder
    root.mkdir(parents=True, exist_ok=True)
    if target.exists():
        raise FileExistsError(f"{target} exists; remove it or write into another root")
    building = Path(tempfile.mkdtemp(dir=root, prefix=f".{folder}-"))
    try:
        yield building
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    try:
        os.replace(building, target)
    except OSError:
        shutil.rmtree(building, ignore_errors=True)
        if target.exists():
            raise FileExistsError(f"{target} was created by another process meanwhile") from None
        raise


# --- source index and fingerprint -------------------------------------------------------------


@dataclass
class _SourceIndex:
    """The files a split is decoded from, with their labels and the stats that key its cache."""

    file_stats: list[tuple[str, os.stat_result]]
    files: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)


def _fingerprint(
    file_stats: list[tuple[str, os.stat_result]], salt: str, mtimes: bool = True
) -> str:
    """Hash of ``salt`` and the files' paths, sizes and (unless ``mtimes`` is False)
    modification times: a changed source gets a new cache key."""
    lines = [salt]
    for path, stat in file_stats:
        lines.append(f"{path}\t{stat.st_size}" + (f"\t{stat.st_mtime_ns}" if mtimes else ""))
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def _require(paths: Sequence[Path], name: str) -> None:
    missing = [str(path) for path in paths if not path.exists()]
    if missing:
        raise DatasetError(f"{name} layout is incomplete: missing {', '.join(missing)}")


def _cifar100_index(folder: Path, split: str) -> _SourceIndex:
    names = [CIFAR100.train_list[0][0], CIFAR100.test_list[0][0], CIFAR100.meta["filename"]]
    _require([folder / name for name in names], "cifar100")
    return _SourceIndex(file_stats=[(name, (folder / name).stat()) for name in names])


def _tiny_imagenet_index(folder: Path, split: str) -> _SourceIndex:
    wnids_path, words_path = folder / "wnids.txt", folder / "words.txt"
    annotations_path = folder / "val" / "val_annotations.txt"
    needed = [wnids_path, words_path]
    needed += [folder / "train"] if split == "train" else [annotations_path, folder / "val/images"]
    _require(needed, "tiny-imagenet")
    wnids = wnids_path.read_text().split()
    names = dict(line.partition("\t")[::2] for line in words_path.read_text().splitlines())
    file_stats = [("wnids.txt", wnids_path.stat()), ("words.txt", words_path.stat())]
    files: list[str] = []
    labels: list[int] = []
    if split == "train":
        for label, wnid in enumerate(wnids):
            images_dir = folder / "train" / wnid / "images"
            if not images_dir.is_dir():
                raise DatasetError(f"tiny-imagenet layout is incomplete: missing {images_dir}")
            with os.scandir(images_dir) as entries:
                image_entries = sorted(
                    (entry for entry in entries if entry.name.lower().endswith((".jpeg", ".jpg"))),
                    key=lambda entry: entry.name,
                )
            files += [entry.path for entry in image_entries]
            labels += [label] * len(image_entries)
            file_stats += [
                (f"train/{wnid}/images/{entry.name}", entry.stat()) for entry in image_entries
            ]
    else:
        label_of = {wnid: label for label, wnid in enumerate(wnids)}
        with os.scandir(folder / "val" / "images") as entries:
            stats = {entry.name: entry.stat() for entry in entries}
        file_stats.append(("val/val_annotations.txt", annotations_path.stat()))
        for line_number, line in enumerate(annotations_path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            where = f"{annotations_path}, line {line_number}"
            fields = line.split("\t")
            if len(fields) < 2:
                raise DatasetError(f"{where}: expected 'filename<TAB>wnid<TAB>box', got {line!r}")
            filename, wnid = fields[:2]
            if wnid not in label_of:
                raise DatasetError(f"{where}: class {wnid!r} is not in {wnids_path}")
            if filename not in stats:
                raise DatasetError(f"{where}: {folder / 'val/images' / filename} does not exist")
            files.append(str(folder / "val" / "images" / filename))
            labels.append(label_of[wnid])
            file_stats.append((f"val/images/{filename}", stats[filename]))
    if not files:
        raise DatasetError(f"no images found for tiny-imagenet {split} in {folder}")
    return _SourceIndex(file_stats, files, labels, [names.get(wnid) or wnid for wnid in wnids])


# --- decoding ---------------------------------------------------------------------------------


class _PresenceCheckedCIFAR100(CIFAR100):
    """torchvision's CIFAR-100 reader with the md5 checks reduced to presence checks
    (torchvision skips the digest where it is None): the digests are checked beforehand."""

    train_list = [[name, None] for name, _ in CIFAR100.train_list]
    test_list = [[name, None] for name, _ in CIFAR100.test_list]
    meta = {**CIFAR100.meta, "md5": None}


def _decode_cifar100(
    folder: Path, split: str, index: _SourceIndex, verify: bool
) -> dict[str, object]:
    if verify and (mismatches := _cifar100_checksum_mismatches(folder)):
        hint = ""
        if (folder / GENERATED_MARKER).is_file():
            hint = f" {folder} was made by make_fake_cifar100: load it with verify=False."
        raise ChecksumError(
            f"CIFAR-100 files do not match the published checksums: {'; '.join(mismatches)}.{hint}"
        )
    try:
        cifar = _PresenceCheckedCIFAR100(folder.parent, train=split == "train", download=False)
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError) as error:
        raise ImageDecodeError(f"cannot read the CIFAR-100 pickles in {folder}: {error}") from error
    return {
        "images": torch.from_numpy(cifar.data).permute(0, 3, 1, 2).contiguous(),
        "labels": torch.tensor(cifar.targets, dtype=torch.int64),
        "classes": list(cifar.classes),
    }


def _cifar100_checksum_mismatches(folder: Path) -> list[str]:
    """Each CIFAR-100 file whose md5 differs from torchvision's, with both digests."""
    expected = CIFAR100.train_list + CIFAR100.test_list
    expected += [[CIFAR100.meta["filename"], CIFAR100.meta["md5"]]]
    return [
        f"{folder / name} has md5 {actual}, expected {md5}"
        for name, md5 in expected
        if (actual := calculate_md5(folder / name)) != md5
    ]


def _decode_tiny_imagenet(
    folder: Path, split: str, index: _SourceIndex, verify: bool
) -> dict[str, object]:
    size = DATASETS["tiny-imagenet"].image_size
    return {
        "images": decode_images(index.files, size, desc=f"decoding tiny-imagenet {split}"),
        "labels": torch.tensor(index.labels, dtype=torch.int64),
        "classes": index.classes,
    }


def decode_images(paths: Sequence[str], image_size: int, desc: str = "decoding") -> torch.Tensor:
    """Decode JPEG files into one uint8 tensor N x 3 x size x size, grayscale made RGB.

    Chunks of files are read and decoded by libjpeg-turbo in a few threads (it releases the
    GIL); a file that fails is named by its path.
    """
    images = torch.empty((len(paths), 3, image_size, image_size), dtype=torch.uint8)

    def decode_chunk(start: int) -> int:
        chunk_paths = paths[start : start + _DECODE_CHUNK]
        encoded = [
            torch.frombuffer(bytearray(Path(path).read_bytes()), dtype=torch.uint8)
            for path in chunk_paths
        ]
        try:
            decoded = decode_jpeg(encoded, mode=ImageReadMode.RGB)
        except RuntimeError:
            decoded = [
                _decode_one(path, data) for path, data in zip(chunk_paths, encoded, strict=True)
            ]
        for path, image in zip(chunk_paths, decoded, strict=True):
            if image.shape != images.shape[1:]:
                raise ImageDecodeError(
                    f"{path} decodes to {tuple(image.shape)}, expected {tuple(images.shape[1:])}"
                )
        images[start : start + len(decoded)] = torch.stack(decoded)
        return len(decoded)

    pool = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1))
    with warnings.catch_warnings(), tqdm(total=len(paths), unit="img", desc=desc) as progress:
        # torchvision 0.29 deprecates its image decoders in favour of TorchCodec.
        warnings.filterwarnings("ignore", message=".*deprecated", category=DeprecationWarning)
        try:
            for decoded_count in pool.map(decode_chunk, range(0, len(paths), _DECODE_CHUNK)):
                progress.update(decoded_count)
        finally:
            pool.shutdown(cancel_futures=True)
    return images


def _decode_one(path: str, data: torch.Tensor) -> torch.Tensor:
    try:
        return decode_jpeg(data, mode=ImageReadMode.RGB)
    except RuntimeError as error:
        raise ImageDecodeError(f"cannot decode image {path}: {error}") from error


_INDEXERS = {"cifar100": _cifar100_index, "tiny-imagenet": _tiny_imagenet_index}
_DECODERS = {"cifar100": _decode_cifar100, "tiny-imagenet": _decode_tiny_imagenet}


# --- cache ------------------------------------------------------------------------------------


def _read_cache(path: Path) -> dict[str, object] | None:
    """The cached tensors, or None when absent or unreadable (then the split is decoded anew)."""
    if not path.is_file():
        return None
    try:
        # mmap then clone reads the file at memory speed; the clone owns its memory.
        cached = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return {
            "images": cached["images"].clone(),
            "labels": cached["labels"].clone(),
            "classes": list(cached["classes"]),
        }
    except Exception as error:  # whatever makes a cache unreadable, decoding anew fixes it
        logger.warning("ignoring the unreadable cache %s: %s", path, error)
        return None


def _write_cache(path: Path, tensors: dict[str, object]) -> None:
    """Write to a temp file and rename, so a reader never sees half a cache; a cache folder
    that cannot be written costs a decode next time, not the run."""
    temporary: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".tmp")
        os.close(handle)
        temporary = Path(name)
        torch.save(tensors, temporary)
        os.replace(temporary, path)
    except OSError as error:
        logger.warning("could not write the cache %s: %s", path, error)
    finally:
        if temporary is not None:
            temporary.unlink(missing_ok=True)


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


# --- generators of small data in the real formats ---------------------------------------------


def _pattern_images(
    labels: np.ndarray, num_classes: int, size: int, rng: np.random.Generator
) -> np.ndarray:
    """Learnable images N x size x size x 3 (uint8): a colour and an oriented stripe pattern per
    class, with a random phase, brightness and pixel noise per image."""
    class_colours = rng.uniform(40, 215, (num_classes, 3))
    class_angles = rng.uniform(0, np.pi, num_classes)
    class_frequencies = rng.integers(1, 5, num_classes)
    class_amplitudes = rng.uniform(25, 50, (num_classes, 3)) * rng.choice([-1, 1], (num_classes, 3))
    ys, xs = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    angles = class_angles[labels][:, None, None]
    projection = xs * np.cos(angles) + ys * np.sin(angles)
    phases = rng.uniform(0, 2 * np.pi, len(labels))[:, None, None]
    wave = np.sin(2 * np.pi * class_frequencies[labels][:, None, None] * projection / size + phases)
    stripes = class_amplitudes[labels][:, None, None, :] * wave[..., None]
    images = class_colours[labels][:, None, None, :] + stripes
    images += rng.uniform(-15, 15, (len(labels), 1, 1, 1)) + rng.normal(0, 10, images.shape)
    return np.clip(np.rint(images), 0, 255).astype(np.uint8)


def _balanced_labels(count: int, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` labels, every class as often as ``count`` allows, in a random order."""
    return rng.permutation(np.arange(count) % num_classes)


_NUMPY_RECONSTRUCT = np.empty(0).__reduce__()[0]


class _Python2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 `str` and numpy arrays as numpy 1 did, which is how the
    CIFAR-100 pickles were made: they load with encoding="latin1" (torchvision) to str keys
    and with encoding="bytes" (the CIFAR page's recipe) to b'data', b'fine_labels', ..."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_bytes(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes

    def save_global(self, obj: object, name: str | None = None) -> None:
        if obj is _NUMPY_RECONSTRUCT:
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
        else:
            super().save_global(obj, name)


def _write_python2_pickle(path: Path, content: dict[bytes, object]) -> None:
    with path.open("wb") as file:
        _Python2Pickler(file, protocol=2).dump(content)


def make_fake_cifar100(
    root: str | os.PathLike, num_train: int = 1000, num_test: int = 200, seed: int = 0
) -> Path:
    """Write a small generated dataset as `root/cifar-100-python/{train,test,meta}` in the
    exact CIFAR-100 pickle format, with a `COOP_GENERATED` marker; returns that folder.
    Load it with `load_dataset("cifar100", ..., root=root, verify=False)`."""
    info = DATASETS["cifar100"]
    root = Path(root)
    with build_folder(root, info.folder) as building:
        rng = np.random.default_rng(seed)
        fine_names = [f"fake_fine_{label:02d}".encode() for label in range(info.num_classes)]
        coarse_names = [
            f"fake_coarse_{label:02d}".encode() for label in range(info.num_classes // 5)
        ]
        all_labels = np.concatenate(
            [_balanced_labels(count, info.num_classes, rng) for count in (num_train, num_test)]
        )
        all_images = _pattern_images(all_labels, info.num_classes, info.image_size, rng)
        parts = {"train": slice(0, num_train), "test": slice(num_train, num_train + num_test)}
        for split, part in parts.items():
            labels, images = all_labels[part], all_images[part]
            batch_label = f"{'training' if split == 'train' else 'testing'} batch 1 of 1"
            _write_python2_pickle(
                building / split,
                {
                    b"filenames": [
                        f"{fine_names[label].decode()}_s_{number:06d}.png".encode()
                        for number, label in enumerate(labels)
                    ],
                    b"batch_label": batch_label.encode(),
                    b"fine_labels": labels.tolist(),
                    b"coarse_labels": (labels // 5).tolist(),
                    # Each row: the 1024 red values row by row, then green, then blue.
                    b"data": images.transpose(0, 3, 1, 2).reshape(len(labels), -1),
                },
            )
        _write_python2_pickle(
            building / "meta",
            {b"fine_label_names": fine_names, b"coarse_label_names": coarse_names},
        )
        (building / GENERATED_MARKER).write_text(
            f"generated by coop_utils.data.make_fake_cifar100(num_train={num_train}, "
            f"num_test={num_test}, seed={seed}): not CIFAR-100\n"
        )
    return root / info.folder


def make_fake_tiny_imagenet(
    root: str | os.PathLike,
    images_per_class: int = 10,
    val_per_class: int = 5,
    num_classes: int = 200,
    seed: int = 0,
) -> Path:
    """Write a small generated dataset as `root/tiny-imagenet-200/` in the real layout (wnids,
    words, train/<wnid>/images/*.JPEG with box files, val/images + val_annotations.txt), 64x64
    JPEGs of which every 50th is grayscale, with a `COOP_GENERATED` marker; returns the folder."""
    info = DATASETS["tiny-imagenet"]
    root = Path(root)
    with build_folder(root, info.folder) as building:
        rng = np.random.default_rng(seed)
        wnids = [f"n9{label:07d}" for label in range(num_classes)]
        (building / "wnids.txt").write_text("".join(f"{wnid}\n" for wnid in wnids))
        (building / "words.txt").write_text(
            "".join(f"{wnid}\tfake class {label:03d}\n" for label, wnid in enumerate(wnids))
        )
        num_train = images_per_class * num_classes
        train_labels = np.repeat(np.arange(num_classes), images_per_class)
        val_labels = _balanced_labels(val_per_class * num_classes, num_classes, rng)
        all_images = _pattern_images(
            np.concatenate([train_labels, val_labels]), num_classes, info.image_size, rng
        )
        box = f"0\t0\t{info.image_size - 1}\t{info.image_size - 1}"
        for label, wnid in enumerate(wnids):
            images_dir = building / "train" / wnid / "images"
            images_dir.mkdir(parents=True)
            names = [f"{wnid}_{number}.JPEG" for number in range(images_per_class)]
            for number, filename in enumerate(names):
                position = label * images_per_class + number
                _save_jpeg(
                    all_images[position], images_dir / filename, grayscale=position % 50 == 7
                )
            (building / "train" / wnid / f"{wnid}_boxes.txt").write_text(
                "".join(f"{filename}\t{box}\n" for filename in names)
            )
        (building / "val" / "images").mkdir(parents=True)
        annotations = []
        for number, label in enumerate(val_labels):
            filename = f"val_{number}.JPEG"
            path = building / "val" / "images" / filename
            _save_jpeg(all_images[num_train + number], path, grayscale=number % 50 == 7)
            annotations.append(f"{filename}\t{wnids[label]}\t{box}\n")
        (building / "val" / "val_annotations.txt").write_text("".join(annotations))
        (building / GENERATED_MARKER).write_text(
            f"generated by coop_utils.data.make_fake_tiny_imagenet(images_per_class="
            f"{images_per_class}, val_per_class={val_per_class}, num_classes={num_classes}, "
            f"seed={seed}): not Tiny ImageNet\n"
        )
    return root / info.folder


def _save_jpeg(pixels: np.ndarray, path: Path, grayscale: bool) -> None:
    image = Image.fromarray(pixels)
    (image.convert("L") if grayscale else image).save(path, format="JPEG", quality=95)


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


def generated_root(config: RunConfig) -> Path:
    """Generate the smoke data once, in the cache directory, in the dataset's real format."""
    train_pc, test_pc = config.generated_train_per_class, config.generated_test_per_class
    root = cache_dir() / "generated" / f"{config.dataset}-{train_pc}-{test_pc}"
    folder = root / DATASETS[config.dataset].folder
    if folder.exists():
        return root
    try:
        if config.dataset == "cifar100":
            classes = DATASETS["cifar100"].num_classes
            make_fake_cifar100(root, train_pc * classes, test_pc * classes)
        else:
            make_fake_tiny_imagenet(root, train_pc, test_pc)
    except FileExistsError:
        if not folder.exists():  # not another rank or process that generated it meanwhile
            raise
    return root


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
