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
:func:`digests` computes in a fresh process pinned to one thread and to portable CPU kernels
(AVX2 at most), so that the same code gives the same digest on any x86-64 machine;
:func:`behaviour_digest` computes in this process (the tests use it to change code in place).

    python -m coop_utils.behaviour results/preview/tiny-imagenet/cooperative.json ...
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

from coop_utils.config import RunConfig

#: the short run a digest trains: keys that set the scale of a run, not what it computes
REGIME: dict[str, Any] = {
    "data": "generated",
    "generated_train_per_class": 20,
    "generated_test_per_class": 4,
    "num_classes": 4,
    "train_fraction": 1.0,
    "val_fraction": 0.05,
    "epochs": 2,
    "max_steps": None,
    "batch_size": 8,
    "bn_batches": 2,
    "eval_every": 1,
    "seed": 0,
    "variant": "",
    "profile": "smoke",
    "device": "cpu",
    "precision": "fp32",
    "compile": False,
}
#: keys of the metrics and of the per-epoch log that measure time, not computation
TIMINGS = ("latency_ms", "images_per_s")
#: environment of the digest process: one thread, and CPU kernels every x86-64 machine of the
#: last decade runs alike (ATen's vectorised kernels, oneDNN and MKL all capped at AVX2)
PINNED_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "ATEN_CPU_CAPABILITY": "avx2",
    "DNNL_MAX_CPU_ISA": "AVX2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_CBWR": "AVX2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
}


def digest_config(config: RunConfig, work: str | os.PathLike) -> RunConfig:
    """The short run that stands for ``config``: its every key, bar those of :data:`REGIME`,
    with its run and results folders in ``work``."""
    work = Path(work)
    return config.replace(
        **REGIME, run_root=str(work / "runs"), results_root=str(work / "results"), data_root=None
    )


def digest_key(config: RunConfig) -> str:
    """Configurations with one key share one digest (they differ only in scale or name)."""
    return digest_config(config, ".").hash()


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
    from coop_utils import training  # the digest runs training: nothing in training imports this

    with contextlib.ExitStack() as stack:
        folder = Path(work) if work else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        short = digest_config(config, folder)
        stack.enter_context(_isolated(Path(cache) if cache else folder / "cache"))
        if short.method == "cooperative" and short.bn_stats == "shared":
            training.train(short.replace(bn_stats="per_depth"), progress=False)
        run = training.train(short, progress=False)
        outcome = json.loads((run.directory / "metrics.json").read_text())
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


def digests(configs: Iterable[RunConfig]) -> dict[str, str]:
    """``{digest_key(config): digest}`` for ``configs``, computed in one fresh, pinned process
    (:data:`PINNED_ENV`) with the package as it is on disk; one short run per distinct key."""
    unique = {digest_key(config): config for config in configs}
    if not unique:
        return {}
    payload = json.dumps([config.to_dict() for config in unique.values()])
    package_root = str(Path(__file__).resolve().parent.parent)
    pythonpath = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
    env = {**os.environ, **PINNED_ENV, "PYTHONPATH": pythonpath}
    done = subprocess.run(
        [sys.executable, "-m", "coop_utils.behaviour", "--configs-from-stdin"],
        input=payload,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if done.returncode:
        raise RuntimeError(f"the behaviour digest process failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summary_config(summary: dict[str, Any]) -> RunConfig:
    """The configuration a results summary records."""
    return config_from_dict(summary["config"])


def config_from_dict(values: dict[str, Any]) -> RunConfig:
    """A configuration from its ``to_dict`` form (lists back to tuples)."""
    fields = RunConfig.__dataclass_fields__
    return RunConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()
                        if k in fields})


def _main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m coop_utils.behaviour",
        description="Print the behaviour digest of results summaries (or of configurations "
        "read as JSON from standard input).",
    )
    parser.add_argument("summaries", nargs="*", type=Path, help="results summary files")
    parser.add_argument("--configs-from-stdin", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.configs_from_stdin:  # the pinned process of :func:`digests`
        configs = [config_from_dict(values) for values in json.loads(sys.stdin.read())]
        with tempfile.TemporaryDirectory(prefix="behaviour-") as work:
            result = {
                digest_key(config): behaviour_digest(
                    config, Path(work) / str(number), cache=Path(work) / "cache"
                )
                for number, config in enumerate(configs)
            }
        print(json.dumps(result))
        return 0
    configs = {path: summary_config(json.loads(path.read_text())) for path in args.summaries}
    found = digests(configs.values())
    for path, config in configs.items():
        print(f"{found[digest_key(config)]}  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
