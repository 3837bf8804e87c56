"""The behaviour digest: what the code does with a run's configuration, as one short hash.

A recorded run stays valid as long as today's code would train it the same way. Whether it
would is decided by behaviour, not by the bytes of the source: the configuration is trained
for a few steps on a small generated dataset, written in the dataset's real on-disk format
(JPEG folders for Tiny ImageNet, pickled batches for CIFAR-100) and read back through the
real decoder, on the CPU in fp32 from a fixed seed. The digest is a SHA-256 of what that
short run produced: every parameter and buffer (per-depth batch-norm statistics and gate
logits included), the final metrics and the per-epoch log, timings left out.

So a docstring, a comment, a renaming or a reordering that keeps the arithmetic leaves the
digest as it was, and a change to what training does (a loss weight, the sampling of the
scaling factors, the augmentation, the decoding of the images) changes it.

Every summary records the digest of the code that trained it (``behaviour_digest``), and the
test suite recomputes it for every committed summary (``tests/test_behaviour.py``).
:func:`coop_utils.runs.behaviour_digests` runs this module in a fresh process pinned to one
thread and to portable CPU kernels (AVX2 at most), so that the same code gives the same digest
on any x86-64 machine; :func:`behaviour_digest` computes in this process (the tests use it to
change code in place). Nothing in the training code imports this module: it runs training.

    python -m coop_utils.behaviour results/preview/tiny-imagenet/cooperative.json ...
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from coop_utils import training
from coop_utils.config import RunConfig
from coop_utils.runs import (
    behaviour_digests,
    configs_from_json,
    digest_config,
    digest_key,
    read_run_file,
    summary_config,
)

#: keys of the metrics and of the per-epoch log that measure time, not computation
TIMINGS = ("latency_ms", "images_per_s")


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    return tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _without_timings(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if k not in TIMINGS}
    return value


@contextlib.contextmanager
def _isolated(cache: Path) -> Iterator[None]:
    """One thread and the data cache ``cache`` for a ``with`` block."""
    threads, previous = torch.get_num_threads(), os.environ.get("COOP_CACHE_DIR")
    torch.set_num_threads(1)
    os.environ["COOP_CACHE_DIR"] = str(cache)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        if previous is None:
            os.environ.pop("COOP_CACHE_DIR", None)
        else:
            os.environ["COOP_CACHE_DIR"] = previous


def behaviour_digest(
    config: RunConfig, work: str | os.PathLike | None = None, cache: str | os.PathLike | None = None
) -> str:
    """The behaviour digest of ``config`` with the code loaded in this process (16 hex digits).

    ``work`` holds the short run (default: a temporary folder), ``cache`` the generated images
    and their decoded tensors (default: in ``work``). Digests computed one after another may
    share a cache made in the same process, which decodes each image file once.

    The ``shared-bn`` ablation evaluates the trained cooperative run of its configuration
    instead of training: that run is trained first, as in the campaign.
    """
    with contextlib.ExitStack() as stack:
        folder = Path(work) if work else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        short = digest_config(config, folder)
        stack.enter_context(_isolated(Path(cache) if cache else folder / "cache"))
        if short.method == "cooperative" and short.bn_stats == "shared":
            training.train(short.replace(bn_stats="per_depth"), progress=False)
        run = training.train(short, progress=False)
        outcome = read_run_file(run.directory, "metrics.json")
        weights = Path(outcome.get("weights_from", run.directory))
        state = torch.load(weights / "checkpoint.pt", map_location="cpu", weights_only=True)
        with (run.directory / "log.csv").open(newline="") as handle:
            log = [_without_timings(row) for row in csv.DictReader(handle)]
    digest = hashlib.sha256()
    for name, tensor in sorted(state["system"].items()):
        digest.update(name.encode())
        digest.update(_tensor_bytes(tensor))
    record = {"metrics": _without_timings(run.metrics), "log": log}
    digest.update(json.dumps(record, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m coop_utils.behaviour",
        description="Print the behaviour digest of results summaries (or of configurations "
        "read as JSON from standard input).",
    )
    parser.add_argument("summaries", nargs="*", type=Path, help="results summary files")
    parser.add_argument("--configs-from-stdin", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.configs_from_stdin:  # the pinned process of :func:`digests`
        configs = configs_from_json(sys.stdin.read())
        with tempfile.TemporaryDirectory(prefix="behaviour-") as work:
            result = {
                digest_key(config): behaviour_digest(
                    config, Path(work) / str(number), cache=Path(work) / "cache"
                )
                for number, config in enumerate(configs)
            }
        print(json.dumps(result))
        return 0
    configs = {path: summary_config(path) for path in args.summaries}
    found = behaviour_digests(configs.values(), cache=False)
    for path, config in configs.items():
        print(f"{found[digest_key(config)]}  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
