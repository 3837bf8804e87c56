"""Small generated datasets in the real on-disk formats, for tests and the smoke profile.

:func:`make_fake_cifar100` writes CIFAR-100's Python 2 pickles and :func:`make_fake_tiny_imagenet`
Tiny ImageNet's JPEG folders, of learnable images (a colour and a stripe pattern per class);
both mark the folder `COOP_GENERATED`, so that whatever loads it is labelled GENERATED.
:func:`generated_root` makes a profile's generated data once, in the cache folder.
"""

from __future__ import annotations

import os
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image

from coop_utils.config import RunConfig
from coop_utils.datasets import DATASETS, GENERATED_MARKER, build_folder, cache_dir


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
        call = f"make_fake_cifar100(num_train={num_train}, num_test={num_test}, seed={seed})"
        _mark_generated(building, call, "CIFAR-100")
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
        call = (
            f"make_fake_tiny_imagenet(images_per_class={images_per_class}, "
            f"val_per_class={val_per_class}, num_classes={num_classes}, seed={seed})"
        )
        _mark_generated(building, call, "Tiny ImageNet")
    return root / info.folder


def _save_jpeg(pixels: np.ndarray, path: Path, grayscale: bool) -> None:
    image = Image.fromarray(pixels)
    (image.convert("L") if grayscale else image).save(path, format="JPEG", quality=95)


def _mark_generated(folder: Path, call: str, dataset: str) -> None:
    """The `COOP_GENERATED` marker of a generated folder: the call that made it, and that it is
    not the real ``dataset``."""
    (folder / GENERATED_MARKER).write_text(f"generated by {__name__}.{call}: not {dataset}\n")


# --- a profile's generated data ---------------------------------------------------------------


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
