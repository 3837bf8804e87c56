"""CIFAR-100 and Tiny ImageNet in their real on-disk formats: the files a split is read from.

The registry of the datasets (:data:`DATASETS`: where each comes from, its official shape),
where a dataset lies, its download with checksums, the fingerprint of the files a split is
read from, their decoding, a decode-once tensor cache, and the writing of a dataset folder
whole or not at all (:func:`build_folder`). :func:`load_dataset` holds a whole split in
memory; :mod:`coop_utils.loaders` makes a run's batches of it, and :mod:`coop_utils.generated`
writes small datasets in the same formats.
`COOP_DATA_ROOT` (default `data/`) holds the datasets and is never written to except by a
download; `COOP_CACHE_DIR` (default `~/.cache/coop_utils`) holds the decoded tensors.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pickle
import shutil
import socket
import tarfile
import tempfile
import urllib.parse
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torchvision.datasets import CIFAR100
from torchvision.datasets.utils import calculate_md5, download_url
from torchvision.io import ImageReadMode, decode_jpeg
from tqdm.auto import tqdm

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
