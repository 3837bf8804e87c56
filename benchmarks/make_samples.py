"""A handful of test images for the reader's book: ``results/samples/<profile>/<dataset>.npz``.

The book shows a recorded network's predictions without the dataset, so it needs a few of the
images that network was tested on, exactly as its data pipeline prepared them: the first test
image of ``--count`` classes spread over the profile's classes, resized to the profile's image
size, as uint8, with their labels, their class names, the per-channel mean and standard
deviation of the profile's training images (the normalisation the network expects) and the
number of classes and image size they were prepared for (the book refuses samples that do not
match the recorded run).

    python benchmarks/make_samples.py --data-root /path/to/datasets   # preview, tiny-imagenet
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from coop_utils.config import load_config
from coop_utils.datasets import load_dataset
from coop_utils.loaders import prepare_data


def make_samples(profile: str, dataset: str, data_root: str, count: int, output: Path) -> Path:
    config = load_config(profile, dataset=dataset, data_root=data_root, device="cpu")
    data = prepare_data(config, torch.device("cpu"))
    test = data.test
    classes = load_dataset(dataset, "test", root=data_root).classes
    labels = test.labels.numpy()
    wanted = np.linspace(0, labels.max(), count).round().astype(int)
    chosen = [int(np.flatnonzero(labels == label)[0]) for label in wanted]
    std = 1 / (255 * test._scale.flatten())  # the loader normalises as x * scale + shift
    mean = -test._shift.flatten() * std
    output.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        output,
        images=test.images[chosen].numpy(),
        labels=labels[chosen],
        class_names=np.array([classes[label] for label in labels[chosen]]),
        mean=mean.numpy(),
        std=std.numpy(),
        num_classes=data.num_classes,
        image_size=data.image_size,
    )
    return output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="preview")
    parser.add_argument("--dataset", default="tiny-imagenet")
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--count", type=int, default=16)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    output = args.output or Path("results", "samples", args.profile, f"{args.dataset}.npz")
    path = make_samples(args.profile, args.dataset, args.data_root, args.count, output)
    print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
