"""Throughput of the data pipeline on a Tiny ImageNet folder, measured side by side on the CPU.

(a) Loading the train split: the first load (index, JPEG decode, cache write) against a cached
    load (index, cache read), both into a fresh temporary COOP_CACHE_DIR.
(b) Training batches (random crop with padding 8, horizontal flip, normalisation): our
    BatchLoader against torchvision ImageFolder + DataLoader with 2 workers and the equivalent
    transforms.

Usage: python benchmarks/data_throughput.py [--root FOLDER_HOLDING_tiny-imagenet-200]
       [--record results/benchmarks/data_throughput.json]
"""

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from coop_utils.datasets import load_dataset
from coop_utils.loaders import BatchLoader, channel_stats
from coop_utils.runs import write_benchmark

REPO_ROOT = Path(__file__).resolve().parents[1]
CACHE_SPEEDUP_TARGET = 20
BATCH_SPEEDUP_TARGET = 10


def default_root() -> Path:
    return Path(os.environ.get("COOP_DATA_ROOT", REPO_ROOT.parent / "shared" / "data"))


def timed_load(root: Path) -> tuple[float, torch.Tensor, torch.Tensor]:
    start = time.perf_counter()
    dataset = load_dataset("tiny-imagenet", "train", root=root, download=False)
    return time.perf_counter() - start, dataset.images, dataset.labels


def seconds_for_batches(batches: Iterable, num_batches: int) -> float:
    """Time to draw `num_batches` batches, after one warm-up batch (worker start-up) and the
    Timer's own two, on the thread count set."""
    # imported here: torch.utils.benchmark warns on import where there is no CUDA runtime
    from torch.utils import benchmark

    iterator = iter(batches)
    next(iterator)
    timer = benchmark.Timer(
        "next(iterator)", globals={"iterator": iterator}, num_threads=torch.get_num_threads()
    )
    return timer.timeit(number=num_batches).mean * num_batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--root",
        type=Path,
        default=default_root(),
        help="folder holding tiny-imagenet-200/ (default: COOP_DATA_ROOT, else ../shared/data)",
    )
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--batches", type=int, default=30, help="timed batches per pipeline")
    parser.add_argument("--workers", type=int, default=2, help="ImageFolder DataLoader workers")
    parser.add_argument("--record", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    default_threads = torch.get_num_threads()

    with tempfile.TemporaryDirectory(prefix="coop-cache-") as cache:
        os.environ["COOP_CACHE_DIR"] = cache
        first_seconds, images, labels = timed_load(args.root)
        cached_seconds = []
        for _ in range(3):
            seconds, cached_images, _ = timed_load(args.root)
            assert torch.equal(images, cached_images), "the cached load differs from the first"
            cached_seconds.append(seconds)
    del cached_images
    count = len(images)
    rows = [
        ("first load (index, decode, cache write)", count, first_seconds),
        ("cached load (index, cache read), median of 3", count, statistics.median(cached_seconds)),
    ]

    timed_images = args.batches * args.batch_size
    mean, std = channel_stats(images)
    for threads in sorted({1, default_threads}):
        torch.set_num_threads(threads)
        loader = BatchLoader(images, labels, args.batch_size, train=True, mean=mean, std=std)
        seconds = seconds_for_batches(loader, args.batches)
        rows.append((f"BatchLoader, {threads} torch thread(s)", timed_images, seconds))
    torch.set_num_threads(default_threads)

    reference_transform = transforms.Compose(
        [
            transforms.RandomCrop(64, padding=8),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(mean.tolist(), std.tolist()),
        ]
    )
    image_folder = datasets.ImageFolder(
        args.root / "tiny-imagenet-200" / "train", transform=reference_transform
    )
    reference_loader = DataLoader(
        image_folder, batch_size=args.batch_size, shuffle=True, num_workers=args.workers
    )
    seconds = seconds_for_batches(reference_loader, args.batches)
    rows.append((f"ImageFolder + DataLoader, {args.workers} workers", timed_images, seconds))

    print(f"Tiny ImageNet train at {args.root / 'tiny-imagenet-200'}: {count:,} images, 64x64")
    print(
        f"CPU: {os.cpu_count()} cores ({platform.machine()}), torch {torch.__version__} with "
        f"{default_threads} threads by default, batch size {args.batch_size}"
    )
    print("The OS page cache is not dropped: source files may already be in memory.")
    print()
    print(f"{'measurement':<48}{'images':>9}{'seconds':>10}{'images/s':>12}")
    rates = {}
    for label, num_images, seconds in rows:
        rates[label] = num_images / seconds
        print(f"{label:<48}{num_images:>9,}{seconds:>10.2f}{rates[label]:>12,.0f}")
    print()
    first_load, cached_load, *ours, reference = rates
    checks = [("cached load / first load", cached_load, first_load, CACHE_SPEEDUP_TARGET)]
    checks += [(f"{label} / ImageFolder", label, reference, BATCH_SPEEDUP_TARGET) for label in ours]
    print(f"{'ratio of images/s':<52}{'value':>8}{'target':>10}  result")
    ratios = []
    for name, numerator, denominator, target in checks:
        value = rates[numerator] / rates[denominator]
        verdict = "PASS" if value >= target else "FAIL"
        print(f"{name:<52}{value:>7.1f}x{f'>= {target}x':>10}  {verdict}")
        ratios.append({"ratio": name, "value": value, "target": target, "met": value >= target})
    if args.record:
        results = {
            "images": count,
            "image_size": 64,
            "batch_size": args.batch_size,
            "workers": args.workers,
            "measurements": [
                {"measurement": label, "images": n, "seconds": seconds, "images_per_s": n / seconds}
                for label, n, seconds in rows
            ],
            "ratios": ratios,
        }
        print(f"recorded: {write_benchmark(args.record, 'data_throughput', results)}")


if __name__ == "__main__":
    main()
