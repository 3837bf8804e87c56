"""Cut a class subset of Tiny ImageNet, in the original layout, for a machine that gets a part.

The first ``--classes`` classes of wnids.txt, each with its training images (all, or the first
``--train-per-class`` by file name) and its validation images; wnids.txt, the box files and
val/val_annotations.txt are cut to them, words.txt is kept whole. Images are hard links to
the source where the file system allows, else copies. The folder appears complete or not at
all (built beside the target, then renamed); a generated source keeps its COOP_GENERATED mark.

    python benchmarks/make_subset.py --source /work/shared/data/tiny-imagenet-200 \\
        --classes 64 --out gpu-data/tiny-imagenet-200

Then ``COOP_DATA_ROOT=gpu-data`` (the folder holding tiny-imagenet-200/) loads it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from coop_utils import datasets


def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(source, target)


def _cut_lines(source: Path, target: Path, keep) -> None:
    """Copy the tab-separated lines of ``source`` whose fields ``keep`` accepts."""
    lines = source.read_text().splitlines(keepends=True)
    target.write_text("".join(line for line in lines if line.strip() and keep(line.split("\t"))))


def make_subset(
    source: str | os.PathLike,
    out: str | os.PathLike,
    classes: int,
    train_per_class: int | None = None,
) -> tuple[int, int]:
    """Write the subset folder ``out``; returns its numbers of training and validation images.

    Raises ``ValueError`` for a request the source cannot meet, ``DatasetError`` for a source
    that is not a Tiny ImageNet layout, ``FileExistsError`` if ``out`` exists.
    """
    source, out = Path(source), Path(out)
    if train_per_class is not None and train_per_class < 1:
        raise ValueError(f"--train-per-class must be at least 1, got {train_per_class}")
    train = datasets._tiny_imagenet_index(source, "train")  # the loader's reading of the layout
    val = datasets._tiny_imagenet_index(source, "test")
    wnids = (source / "wnids.txt").read_text().split()
    if not 1 <= classes <= len(wnids):
        raise ValueError(f"--classes must be from 1 to {len(wnids)} (the source's), got {classes}")
    chosen = set(wnids[:classes])
    kept: dict[int, list[Path]] = {}
    for file, label in zip(train.files, train.labels, strict=True):
        if label < classes:
            kept.setdefault(label, []).append(Path(file))
    kept = {label: files[:train_per_class] for label, files in kept.items()}
    val_files = [Path(f) for f, label in zip(val.files, val.labels, strict=True) if label < classes]

    with datasets.build_folder(out.parent, out.name) as building:
        (building / "val" / "images").mkdir(parents=True)
        for file in [*(f for files in kept.values() for f in files), *val_files]:
            _link_or_copy(file, building / file.relative_to(source))
        (building / "wnids.txt").write_text("".join(f"{wnid}\n" for wnid in wnids[:classes]))
        shutil.copy2(source / "words.txt", building / "words.txt")
        annotations = Path("val", "val_annotations.txt")
        _cut_lines(source / annotations, building / annotations, lambda f: f[1] in chosen)
        for label, files in kept.items():
            boxes = Path("train", wnids[label], f"{wnids[label]}_boxes.txt")
            names = {file.name for file in files}
            if (source / boxes).is_file():
                _cut_lines(source / boxes, building / boxes, lambda f, n=names: f[0] in n)
        if (source / datasets.GENERATED_MARKER).is_file():
            shutil.copy2(source / datasets.GENERATED_MARKER, building / datasets.GENERATED_MARKER)
    return sum(len(files) for files in kept.values()), len(val_files)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True, help="a tiny-imagenet-200 folder")
    parser.add_argument("--out", type=Path, required=True, help="the subset folder to create")
    parser.add_argument("--classes", type=int, required=True, help="the first N classes")
    parser.add_argument("--train-per-class", type=int, help="training images per class (all)")
    args = parser.parse_args(argv)
    try:
        num_train, num_val = make_subset(args.source, args.out, args.classes, args.train_per_class)
    except (ValueError, FileExistsError, datasets.DatasetError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(
        f"wrote {args.out}: {args.classes} classes, {num_train:,} training and {num_val:,} "
        "validation images"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
