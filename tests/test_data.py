"""Tests of coop_utils.datasets, .loaders and .generated: real formats round-trip, the cache,
the batch loader, the validation split and every bad input the loaders name."""

import dataclasses
import functools
import hashlib
import os
import pickle
import shutil
import socket
import tarfile
import threading
import urllib.error
import urllib.request
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.datasets import CIFAR100

from coop_utils import datasets, generated
from coop_utils.datasets import (
    DATASETS,
    SPLITS,
    ChecksumError,
    DatasetNotFoundError,
    ImageDecodeError,
    load_dataset,
)
from coop_utils.generated import make_fake_cifar100, make_fake_tiny_imagenet
from coop_utils.loaders import BatchLoader, channel_stats, crop_and_flip, train_val_split

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_DATA_ROOTS = [
    Path(path)
    for path in (os.environ.get("COOP_DATA_ROOT"), REPO_ROOT.parent / "shared" / "data")
    if path
]


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test writes its decoded-tensor cache into its own temporary folder."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("COOP_CACHE_DIR", str(folder))
    return folder


@pytest.fixture
def tiny_root(tmp_path: Path) -> Path:
    """A generated Tiny ImageNet of 10 classes: 40 train and 30 validation JPEGs."""
    root = tmp_path / "data"
    make_fake_tiny_imagenet(root, images_per_class=4, val_per_class=3, num_classes=10, seed=1)
    return root


@pytest.fixture
def cifar_root(tmp_path: Path) -> Path:
    """A generated CIFAR-100 of 300 train and 100 test images."""
    root = tmp_path / "data"
    make_fake_cifar100(root, num_train=300, num_test=100, seed=1)
    return root


@pytest.fixture(scope="session")
def real_tiny_imagenet(tmp_path_factory: pytest.TempPathFactory) -> dict[str, datasets.Dataset]:
    """Both splits of the real Tiny ImageNet subset, decoded once per test session."""
    roots = [root for root in REAL_DATA_ROOTS if (root / "tiny-imagenet-200").is_dir()]
    if not roots:
        pytest.skip(
            "the real Tiny ImageNet subset is absent: looked for tiny-imagenet-200/ in "
            + ", ".join(str(root) for root in REAL_DATA_ROOTS)
        )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COOP_CACHE_DIR", str(tmp_path_factory.mktemp("real-cache")))
        return {
            split: load_dataset("tiny-imagenet", split, root=roots[0], download=False)
            for split in SPLITS
        }


def decode_with_pil(path: Path) -> torch.Tensor:
    """An independent decode of one image file, 3 x H x W uint8."""
    return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)


def tiny_imagenet_files(folder: Path, split: str) -> tuple[list[Path], list[int]]:
    """The files and labels of a split, read from the layout independently of the loader, in
    the order the loader documents."""
    wnids = (folder / "wnids.txt").read_text().split()
    if split == "train":
        files = [
            path
            for wnid in wnids
            for path in sorted((folder / "train" / wnid / "images").glob("*.JPEG"))
        ]
        return files, [wnids.index(path.name.split("_")[0]) for path in files]
    rows = [
        line.split("\t") for line in (folder / "val/val_annotations.txt").read_text().split("\n")
    ]
    rows = [row for row in rows if len(row) > 1]
    return [folder / "val/images" / row[0] for row in rows], [wnids.index(row[1]) for row in rows]


def tree_snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Size and modification time of everything under `folder`, to prove nothing changed."""
    return {
        str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted(folder.rglob("*"))
    }


# --- real formats --------------------------------------------------------------------------


def test_generated_cifar100_round_trips_through_the_torchvision_reader(cifar_root: Path) -> None:
    folder = cifar_root / "cifar-100-python"
    with (folder / "meta").open("rb") as file:
        meta = pickle.load(file, encoding="bytes")
    for split, filename in (("train", "train"), ("test", "test")):
        with (folder / filename).open("rb") as file:
            written = pickle.load(file, encoding="bytes")
        dataset = load_dataset("cifar100", split, root=cifar_root, download=False, verify=False)
        assert torch.equal(dataset.images, torch.from_numpy(written[b"data"]).view(-1, 3, 32, 32))
        assert dataset.labels.tolist() == written[b"fine_labels"]
        assert dataset.labels.dtype == torch.int64
        assert dataset.classes == [name.decode() for name in meta[b"fine_label_names"]]
        assert dataset.generated
        assert "GENERATED" in repr(dataset)
        assert "GENERATED" in dataset.describe()


def test_generated_cifar100_has_the_real_pickle_format(cifar_root: Path) -> None:
    """Python 2 pickles: byte-string keys under encoding="bytes", str under "latin1"."""
    folder = cifar_root / "cifar-100-python"
    raw = (folder / "train").read_bytes()
    assert raw.startswith(b"\x80\x02")
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in raw
    train = pickle.loads(raw, encoding="bytes")
    assert set(train) == {b"data", b"fine_labels", b"coarse_labels", b"filenames", b"batch_label"}
    assert train[b"data"].dtype == np.uint8 and train[b"data"].shape == (300, 3072)
    assert train[b"batch_label"] == b"training batch 1 of 1"
    assert all(isinstance(name, bytes) for name in train[b"filenames"])
    assert set(pickle.loads(raw, encoding="latin1")) == {key.decode() for key in train}
    with (folder / "meta").open("rb") as file:
        meta = pickle.load(file, encoding="bytes")
    assert set(meta) == {b"fine_label_names", b"coarse_label_names"}
    assert len(meta[b"fine_label_names"]) == 100 and len(meta[b"coarse_label_names"]) == 20


def test_generated_tiny_imagenet_round_trips(tiny_root: Path) -> None:
    """Labels equal the layout's; pixels equal PIL's decode of the written JPEG files (JPEG is
    lossy, so the comparison is with what the files hold, not with the arrays before saving)."""
    folder = tiny_root / "tiny-imagenet-200"
    for split in SPLITS:
        files, labels = tiny_imagenet_files(folder, split)
        dataset = load_dataset("tiny-imagenet", split, root=tiny_root, download=False)
        assert dataset.labels.tolist() == labels
        assert torch.equal(dataset.images, torch.stack([decode_with_pil(path) for path in files]))
        assert dataset.classes == [f"fake class {label:03d}" for label in range(10)]
        assert dataset.generated and "GENERATED" in repr(dataset)
        grayscale = [n for n, path in enumerate(files) if Image.open(path).mode == "L"]
        assert grayscale, "the generator writes some grayscale JPEGs"
        for position in grayscale:
            assert torch.equal(dataset.images[position, 0], dataset.images[position, 1])
            assert torch.equal(dataset.images[position, 0], dataset.images[position, 2])


def test_generated_images_are_learnable(cifar_root: Path) -> None:
    """A tiny network's loss falls within a few dozen steps, as the smoke profile needs."""
    torch.manual_seed(0)
    dataset = load_dataset("cifar100", "train", root=cifar_root, download=False, verify=False)
    model = torch.nn.Sequential(
        torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(), torch.nn.Linear(48, 100)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    loader = BatchLoader(dataset.images, dataset.labels, batch_size=50, seed=0)
    losses = []
    for epoch in range(6):
        loader.set_epoch(epoch)
        for images, labels in loader:
            loss = F.cross_entropy(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    assert len(losses) == 36
    assert np.mean(losses[-6:]) < 0.6 * np.mean(losses[:3])


def test_real_tiny_imagenet_subset(real_tiny_imagenet: dict[str, datasets.Dataset]) -> None:
    """The loader against the folder read independently: whatever subset it holds (the shared
    copy has 400 training images per class and the whole validation split)."""
    train, test = real_tiny_imagenet["train"], real_tiny_imagenet["test"]
    folder = train.source
    wnids = (folder / "wnids.txt").read_text().split()
    train_files, train_labels = tiny_imagenet_files(folder, "train")
    test_files, test_labels = tiny_imagenet_files(folder, "test")
    assert len(train.classes) == len(test.classes) == len(wnids)
    assert train.images.shape == (len(train_files), 3, 64, 64) and train.images.dtype == torch.uint8
    assert test.images.shape == (len(test_files), 3, 64, 64)
    assert train.labels.tolist() == train_labels and test.labels.tolist() == test_labels
    for dataset, labels in ((train, train_labels), (test, test_labels)):  # files per class
        assert dataset.class_counts().tolist() == np.bincount(labels, minlength=len(wnids)).tolist()
    assert not train.generated and "GENERATED" not in repr(train)
    for position in (0, len(test_files) // 2 + 1, len(test_files) - 1):
        assert torch.equal(test.images[position], decode_with_pil(test_files[position]))
    first_of_class_7 = train_labels.index(7)
    first_file = sorted((folder / "train" / wnids[7] / "images").glob("*.JPEG"))[0]
    assert train_files[first_of_class_7] == first_file
    assert torch.equal(train.images[first_of_class_7], decode_with_pil(first_file))
    assert torch.equal(train.images[-1], decode_with_pil(train_files[-1]))


def test_loading_a_subset_reports_counts_per_class(
    tiny_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dataset = load_dataset("tiny-imagenet", "train", root=tiny_root, download=False)
    assert dataset.class_counts().tolist() == [4] * 10
    assert "40 images" in dataset.describe() and "4 per class" in dataset.describe()
    assert "subset of the official split" in caplog.text and "4 per class" in caplog.text


# --- cache ------------------------------------------------------------------------------------


def test_cache_is_reused(tiny_root: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = load_dataset("tiny-imagenet", "train", root=tiny_root, download=False)
    assert len(list(cache.glob("tiny-imagenet-train-*.pt"))) == len(list(cache.iterdir())) == 1

    def no_decode(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded again although the cache is valid")

    monkeypatch.setattr(datasets, "decode_images", no_decode)
    again = load_dataset("tiny-imagenet", "train", root=tiny_root, download=False)
    assert torch.equal(first.images, again.images) and torch.equal(first.labels, again.labels)
    assert first.classes == again.classes


def test_cache_is_invalidated_when_a_source_file_changes(tiny_root: Path, cache: Path) -> None:
    folder = tiny_root / "tiny-imagenet-200"
    files, _ = tiny_imagenet_files(folder, "train")
    before = load_dataset("tiny-imagenet", "train", root=tiny_root, download=False)
    changed = files[5]
    old_mtime = changed.stat().st_mtime_ns
    Image.new("RGB", (64, 64), (250, 10, 10)).save(changed, quality=95)
    os.utime(changed, ns=(old_mtime + 10**9, old_mtime + 10**9))
    after = load_dataset("tiny-imagenet", "train", root=tiny_root, download=False)
    assert torch.equal(after.images[5], decode_with_pil(changed))
    assert not torch.equal(after.images[5], before.images[5])
    assert torch.equal(after.images[6:], before.images[6:])
    assert len(list(cache.glob("tiny-imagenet-train-*.pt"))) == 2


def test_an_unreadable_cache_is_rebuilt(tiny_root: Path, cache: Path) -> None:
    first = load_dataset("tiny-imagenet", "test", root=tiny_root, download=False)
    (cache_file,) = cache.glob("*.pt")
    cache_file.write_bytes(b"not a torch file")
    again = load_dataset("tiny-imagenet", "test", root=tiny_root, download=False)
    assert torch.equal(first.images, again.images)


def test_a_read_only_dataset_root_works(tiny_root: Path, cifar_root: Path) -> None:
    """The loaders write nothing into the dataset root. Tests may run as root, which ignores
    permission bits, so the tree is also compared before and after."""
    before = tree_snapshot(tiny_root)
    paths = [tiny_root, *tiny_root.rglob("*")]
    for path in paths:
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        for split in SPLITS:
            assert len(load_dataset("tiny-imagenet", split, root=tiny_root, download=False))
            assert len(load_dataset("cifar100", split, root=cifar_root, verify=False))
    finally:
        for path in paths:
            path.chmod(0o755 if path.is_dir() else 0o644)
    assert tree_snapshot(tiny_root) == before


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_an_interrupted_cache_write_leaves_no_file(
    tiny_root: Path, cache: Path, monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    def half_write(content: object, path: Path) -> None:
        Path(path).write_bytes(b"half a cache")
        raise error

    monkeypatch.setattr(torch, "save", half_write)
    if isinstance(error, OSError):
        assert len(load_dataset("tiny-imagenet", "test", root=tiny_root, download=False)) == 30
    else:
        with pytest.raises(KeyboardInterrupt):
            load_dataset("tiny-imagenet", "test", root=tiny_root, download=False)
    assert list(cache.iterdir()) == []


# --- data fingerprint -------------------------------------------------------------------------


def test_the_data_fingerprint_names_the_files_and_not_where_or_when_they_were_copied(
    tiny_root: Path, tmp_path: Path
) -> None:
    fingerprint = datasets.data_fingerprint("tiny-imagenet", "train", root=tiny_root)
    assert len(fingerprint) == 16 and int(fingerprint, 16) >= 0
    assert datasets.data_fingerprint("tiny-imagenet", "train", root=tiny_root) == fingerprint
    assert datasets.data_fingerprint("tiny-imagenet", "test", root=tiny_root) != fingerprint
    loaded = load_dataset("tiny-imagenet", "train", root=tiny_root, download=False)
    assert loaded.fingerprint == fingerprint
    copy = tmp_path / "copy"
    shutil.copytree(tiny_root, copy, copy_function=shutil.copy)  # new mtimes
    assert datasets.data_fingerprint("tiny-imagenet", "train", root=copy) == fingerprint
    first = tiny_imagenet_files(tiny_root / "tiny-imagenet-200", "train")[0][0]
    os.utime(first, ns=(10**18, 10**18))
    assert datasets.data_fingerprint("tiny-imagenet", "train", root=tiny_root) == fingerprint


def test_the_data_fingerprint_changes_with_a_file_size_or_an_added_image(tiny_root: Path) -> None:
    folder = tiny_root / "tiny-imagenet-200"
    fingerprints = {datasets.data_fingerprint("tiny-imagenet", "train", root=tiny_root)}
    files, _ = tiny_imagenet_files(folder, "train")
    with files[3].open("ab") as image:
        image.write(b"\0")
    fingerprints.add(datasets.data_fingerprint("tiny-imagenet", "train", root=tiny_root))
    shutil.copy(files[0], files[0].with_name("extra_0.JPEG"))
    fingerprints.add(datasets.data_fingerprint("tiny-imagenet", "train", root=tiny_root))
    assert len(fingerprints) == 3


def test_the_data_fingerprint_of_cifar100_and_of_a_missing_dataset(
    cifar_root: Path, tmp_path: Path
) -> None:
    loaded = load_dataset("cifar100", "test", root=cifar_root, verify=False)
    assert loaded.fingerprint == datasets.data_fingerprint("cifar100", "test", root=cifar_root)
    with pytest.raises(DatasetNotFoundError) as from_loader:
        load_dataset("cifar100", "train", root=tmp_path / "empty", download=False)
    with pytest.raises(DatasetNotFoundError) as from_fingerprint:
        datasets.data_fingerprint("cifar100", "train", root=tmp_path / "empty")
    assert str(from_fingerprint.value) == str(from_loader.value)
    assert not (tmp_path / "empty").exists()


# --- batch loader -----------------------------------------------------------------------------


def test_crop_and_flip_matches_a_per_image_reference() -> None:
    generator = torch.Generator().manual_seed(0)
    batch = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=generator)
    offsets_y, offsets_x = torch.randint(0, 9, (2, 16), generator=generator)
    crops = crop_and_flip(batch, 4, offsets_y, offsets_x, num_flipped=5)
    padded = F.pad(batch, (4, 4, 4, 4))
    for n in range(16):
        y, x = int(offsets_y[n]), int(offsets_x[n])
        expected = padded[n, :, y : y + 32, x : x + 32]
        assert torch.equal(crops[n], expected.flip(-1) if n >= 11 else expected)


def test_training_batches_are_crops_and_flips_in_the_normalised_range() -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(1, 256, (24, 3, 64, 64), dtype=torch.uint8, generator=generator)
    loader = BatchLoader(images, torch.arange(24), batch_size=8, train=True, seed=3)
    mean, std = channel_stats(images)
    low, high = (-mean / std).view(1, 3, 1, 1), ((1 - mean) / std).view(1, 3, 1, 1)
    padded = F.pad(images, (8, 8, 8, 8))
    flipped_any = False
    batches = list(loader)
    assert len(batches) == len(loader) == 3
    for batch, labels in batches:
        assert batch.shape == (8, 3, 64, 64) and batch.dtype == torch.float32
        assert labels.dtype == torch.int64
        assert bool((batch >= low - 1e-5).all()) and bool((batch <= high + 1e-5).all())
        pixels = torch.round((batch * std.view(1, 3, 1, 1) + mean.view(1, 3, 1, 1)) * 255)
        for crop, label in zip(pixels.to(torch.uint8), labels.tolist(), strict=True):
            windows = padded[label].unfold(1, 64, 1).unfold(2, 64, 1).permute(1, 2, 0, 3, 4)
            candidates = torch.cat(
                [windows.reshape(-1, 3, 64, 64), windows.flip(-1).reshape(-1, 3, 64, 64)]
            )
            matches = (candidates == crop).flatten(1).all(1).nonzero().flatten().tolist()
            assert matches, f"sample {label} is no crop of its padded image"
            flipped_any |= matches[0] >= 17 * 17
    assert flipped_any


def test_evaluation_batches_are_the_normalised_images_in_order() -> None:
    images = torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8)
    mean, std = torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.2, 0.25, 0.3])
    loader = BatchLoader(images, torch.arange(10), 4, train=False, mean=mean, std=std)
    batches = list(loader)
    assert [len(labels) for _, labels in batches] == [4, 4, 2]
    expected = (images.float() / 255 - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    assert torch.allclose(torch.cat([batch for batch, _ in batches]), expected, atol=1e-5)
    assert torch.cat([labels for _, labels in batches]).tolist() == list(range(10))


def test_training_batches_are_reproducible_for_a_seed_and_epoch() -> None:
    images = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8)

    def epoch_batches(seed: int, epoch: int) -> list[torch.Tensor]:
        loader = BatchLoader(images, torch.arange(40), 8, seed=seed)
        loader.set_epoch(epoch)
        return [torch.cat([batch.flatten(), labels.float()]) for batch, labels in loader]

    reference = epoch_batches(seed=0, epoch=2)
    assert all(map(torch.equal, reference, epoch_batches(seed=0, epoch=2)))
    assert not all(map(torch.equal, reference, epoch_batches(seed=0, epoch=3)))
    assert not all(map(torch.equal, reference, epoch_batches(seed=1, epoch=2)))


@pytest.mark.parametrize(("num_samples", "drop_last"), [(12, True), (13, False), (13, True)])
def test_training_shards_are_disjoint_and_cover_the_data(num_samples: int, drop_last: bool) -> None:
    images = torch.zeros((num_samples, 3, 32, 32), dtype=torch.uint8)
    shards = []
    for rank in range(3):
        loader = BatchLoader(
            images,
            torch.arange(num_samples),
            2,
            seed=5,
            rank=rank,
            world_size=3,
            drop_last=drop_last,
            mean=[0.5] * 3,
            std=[0.5] * 3,
        )
        loader.set_epoch(1)
        shards.append(torch.cat([labels for _, labels in loader]).tolist())
    lengths = {len(shard) for shard in shards}
    assert len(lengths) == 1, "every rank gets as many samples"
    everything = [sample for shard in shards for sample in shard]
    if drop_last:
        # Truncated to a multiple of 3, then each rank drops its incomplete last batch.
        assert len(everything) == len(set(everything)) == 3 * (num_samples // 3 // 2 * 2)
    else:
        # 13 padded to 15 as DistributedSampler does: 5 per rank, the last batch kept.
        assert set(everything) == set(range(num_samples)) and len(everything) == 15


def test_evaluation_shards_cover_every_sample_exactly_once() -> None:
    images = torch.zeros((13, 3, 32, 32), dtype=torch.uint8)
    shards = [
        torch.cat(
            [
                labels
                for _, labels in BatchLoader(
                    images, torch.arange(13), 2, train=False, rank=rank, world_size=4
                )
            ]
        ).tolist()
        for rank in range(4)
    ]
    assert sum(shards, []) == list(range(13))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_batches_on_cuda_equal_batches_on_cpu() -> None:
    images = torch.randint(0, 256, (20, 3, 64, 64), dtype=torch.uint8)
    on_cpu = BatchLoader(images, torch.arange(20), 8, seed=1, drop_last=False)
    on_gpu = BatchLoader(images, torch.arange(20), 8, seed=1, drop_last=False, device="cuda")
    for (cpu_batch, cpu_labels), (gpu_batch, gpu_labels) in zip(on_cpu, on_gpu, strict=True):
        assert gpu_batch.device.type == "cuda"
        assert torch.allclose(cpu_batch, gpu_batch.cpu(), atol=1e-5)
        assert torch.equal(cpu_labels, gpu_labels.cpu())


def test_train_val_split_is_stratified_seeded_and_disjoint() -> None:
    labels = torch.arange(10).repeat_interleave(torch.tensor([40, 60] * 5))
    train_idx, val_idx = train_val_split(labels, fraction=0.05, seed=0)
    assert torch.bincount(labels[val_idx]).tolist() == [2, 3] * 5
    assert sorted(train_idx.tolist() + val_idx.tolist()) == list(range(len(labels)))
    assert torch.equal(val_idx, train_val_split(labels, fraction=0.05, seed=0)[1])
    assert not torch.equal(val_idx, train_val_split(labels, fraction=0.05, seed=1)[1])
    assert len(train_val_split(labels, fraction=0.0)[1]) == 0


# --- bad input --------------------------------------------------------------------------------


def test_unknown_dataset_or_split_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cifar100, tiny-imagenet"):
        load_dataset("imagenet", "train", root=tmp_path, download=False)
    with pytest.raises(ValueError, match="train, test"):
        load_dataset("tiny-imagenet", "val", root=tmp_path, download=False)


@pytest.mark.parametrize("name", list(DATASETS))
def test_a_missing_dataset_names_itself_the_path_the_url_and_the_variable(
    name: str, tmp_path: Path, cache: Path
) -> None:
    with pytest.raises(DatasetNotFoundError) as raised:
        load_dataset(name, "train", root=tmp_path / "empty", download=False)
    message = str(raised.value)
    for part in (name, str(tmp_path / "empty" / DATASETS[name].folder), DATASETS[name].url):
        assert part in message
    assert "COOP_DATA_ROOT" in message
    assert not (tmp_path / "empty").exists() and not cache.exists()


def test_a_failed_download_is_reported_like_a_missing_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_network(url: str, root: Path, filename: str) -> None:
        (root / filename).write_bytes(b"partial")
        raise urllib.error.URLError("no network here")

    monkeypatch.setattr(datasets, "download_url", no_network)
    with pytest.raises(DatasetNotFoundError) as raised:
        load_dataset("tiny-imagenet", "train", root=tmp_path / "root")
    message = str(raised.value)
    assert "no network here" in message and "COOP_DATA_ROOT" in message
    assert DATASETS["tiny-imagenet"].url in message
    assert list((tmp_path / "root").iterdir()) == []


def test_a_download_times_out_and_the_timeout_is_lifted_afterwards(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every socket of the download has the timeout, so a machine without network fails fast."""
    timeouts = []

    def unreachable(request, *args, **kwargs):
        timeouts.append(socket.getdefaulttimeout())
        raise urllib.error.URLError(TimeoutError("timed out"))

    monkeypatch.setattr(urllib.request, "urlopen", unreachable)
    previous = socket.getdefaulttimeout()
    with pytest.raises(DatasetNotFoundError, match="the download failed: .*timed out"):
        load_dataset("cifar100", "train", root=tmp_path / "root")
    assert timeouts and set(timeouts) == {datasets.DOWNLOAD_TIMEOUT_S}
    assert socket.getdefaulttimeout() == previous
    assert list((tmp_path / "root").iterdir()) == []


def test_a_download_with_the_wrong_md5_is_removed_and_both_digests_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    content = b"this is not the CIFAR-100 archive"
    monkeypatch.setattr(
        datasets, "download_url", lambda url, root, filename: (root / filename).write_bytes(content)
    )
    with pytest.raises(ChecksumError) as raised:
        load_dataset("cifar100", "train", root=tmp_path / "root")
    assert hashlib.md5(content).hexdigest() in str(raised.value)
    assert CIFAR100.tgz_md5 in str(raised.value)
    assert list((tmp_path / "root").iterdir()) == []


@pytest.mark.parametrize("name", list(DATASETS))
def test_a_download_is_checked_and_extracted_into_place(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The download path end to end: an archive of generated data served over local http."""
    made = tmp_path / "made"
    info = DATASETS[name]
    if name == "cifar100":
        make_fake_cifar100(made, num_train=20, num_test=10)
        archive = tmp_path / "cifar-100-python.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(made / info.folder, arcname=info.folder)
    else:
        make_fake_tiny_imagenet(made, images_per_class=2, val_per_class=1, num_classes=3)
        archive = Path(shutil.make_archive(str(tmp_path / "tiny"), "zip", made, info.folder))
        assert zipfile.is_zipfile(archive)
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(archive.parent))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/{archive.name}"
    monkeypatch.setitem(DATASETS, name, dataclasses.replace(info, url=url, md5=md5))
    root = tmp_path / "root"
    # Generated CIFAR-100 pickles cannot match the published digests: verify=False skips both.
    try:
        dataset = load_dataset(name, "test", root=root, verify=name != "cifar100")
    finally:
        server.shutdown()
        server.server_close()
    assert dataset.generated and len(dataset) == (10 if name == "cifar100" else 3)
    assert [path.name for path in root.iterdir()] == [info.folder]


@pytest.mark.parametrize(
    ("content", "problem"),
    [(b"\xff\xd8 definitely not a JPEG", "cannot decode"), (None, "expected (3, 64, 64)")],
)
def test_a_bad_image_is_named_by_its_path_and_leaves_no_cache(
    tiny_root: Path, cache: Path, content: bytes | None, problem: str
) -> None:
    files, _ = tiny_imagenet_files(tiny_root / "tiny-imagenet-200", "train")
    if content is None:
        Image.new("RGB", (32, 32)).save(files[9], format="JPEG")
    else:
        files[9].write_bytes(content)
    with pytest.raises(ImageDecodeError) as raised:
        load_dataset("tiny-imagenet", "train", root=tiny_root, download=False)
    assert str(files[9]) in str(raised.value) and problem in str(raised.value)
    assert not cache.exists() or list(cache.iterdir()) == []


def test_a_dataset_folder_missing_part_of_its_layout_names_the_missing_path(
    tiny_root: Path,
) -> None:
    folder = tiny_root / "tiny-imagenet-200"
    (folder / "val/val_annotations.txt").unlink()
    with pytest.raises(datasets.DatasetError, match="val_annotations.txt"):
        load_dataset("tiny-imagenet", "test", root=tiny_root, download=False)
    shutil.rmtree(folder / "train" / "n90000003")
    with pytest.raises(datasets.DatasetError, match="n90000003"):
        load_dataset("tiny-imagenet", "train", root=tiny_root, download=False)


def test_a_generated_folder_appears_whole_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = make_fake_tiny_imagenet(tmp_path, images_per_class=1, val_per_class=1, num_classes=2)
    with pytest.raises(FileExistsError, match=f"{made} exists"):
        make_fake_tiny_imagenet(tmp_path, images_per_class=1, val_per_class=1, num_classes=2)

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError("no space left on device")

    monkeypatch.setattr(generated, "_save_jpeg", disk_full)
    with pytest.raises(OSError, match="no space left"):
        make_fake_tiny_imagenet(tmp_path / "other", images_per_class=1, num_classes=2)
    assert list((tmp_path / "other").iterdir()) == []  # the half-made folder is removed


def test_the_loader_rejects_a_batch_larger_than_its_shard() -> None:
    images = torch.zeros((10, 3, 32, 32), dtype=torch.uint8)
    with pytest.raises(ValueError, match="drop_last=False"):
        BatchLoader(images, torch.arange(10), 8, rank=1, world_size=2)
    with pytest.raises(ValueError, match="never drops"):
        BatchLoader(images, torch.arange(10), 8, train=False, drop_last=True)
