"""The run store: where a run lives, atomic checkpoints, one writer at a time, result summaries.

A run lives in ``runs/<dataset>/<method>/<config-hash>/``:

- ``config.json``: the configuration, written when the run starts;
- ``checkpoint.pt``: the state after the last finished epoch (or at Ctrl-C), written
  atomically (temp file, then rename) and read with ``torch.load(weights_only=True)``;
- ``log.csv``: one row per epoch;
- ``metrics.json``: the final evaluation, written last: its presence marks a finished run.

A finished run's summary goes to ``results/<profile>/<dataset>/<method>[-<variant>].json``.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import hashlib
import json
import os
import pickle
import platform
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import filelock
import torch

from coop_utils.config import RunConfig

PACKAGE_DIR = Path(__file__).resolve().parent
#: the package's modules that a training run executes: the sources :func:`code_digest` covers
TRAINING_MODULES = (
    "config.py",
    "data.py",
    "models.py",
    "gating.py",
    "losses.py",
    "training.py",
    "runs.py",
    "evaluate.py",
    "systems.py",
)

#: records of ``benchmarks/code_equivalence.py``: pairs of code digests proven to train the same
EQUIVALENCE_DIR = PACKAGE_DIR.parent / "results" / "code-equivalence"


class RunBusyError(RuntimeError):
    """Another process is writing the same run."""


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read (cut short, empty, or not a checkpoint)."""


def run_dir(config: RunConfig) -> Path:
    return Path(config.run_root) / config.dataset / config.method / config.hash()


def results_path(config: RunConfig) -> Path:
    """``results/<profile>/<dataset>/<method>[-<variant>][-seed<N>].json`` (seed 0 unnamed)."""
    name = config.method + (f"-{config.variant}" if config.variant else "")
    name += f"-seed{config.seed}" if config.seed else ""
    return Path(config.results_root) / config.profile / config.dataset / f"{name}.json"


def _atomic_write(path: Path, write: Any) -> None:
    """Write through ``write(file_object)`` into a temp file beside ``path``, then rename it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, content: Any) -> None:
    _atomic_write(path, lambda f: f.write((json.dumps(content, indent=2) + "\n").encode()))


def save_checkpoint(path: Path, state: Mapping[str, Any]) -> None:
    """``torch.save`` atomically: a crash leaves the previous checkpoint whole."""
    _atomic_write(path, lambda f: torch.save(dict(state), f))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint; an unreadable one raises :class:`CheckpointError`, a one-line message
    that names the file and how to restart the run without it (the file itself is kept)."""
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as error:
        reason = "the file is empty" if path.stat().st_size == 0 else _short_reason(error)
        aside = path.with_name(path.name + ".unreadable")
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({reason}); to restart the run from scratch, "
            f"move it aside: mv {shlex.quote(str(path))} {shlex.quote(str(aside))}"
        ) from error


def _short_reason(error: BaseException) -> str:
    """The error's type and the first sentence of its message, on one line."""
    first_line = (str(error).strip().splitlines() or [""])[0]
    sentence = first_line.split(". ")[0].rstrip(".")
    return f"{type(error).__name__}: {sentence}" if sentence else type(error).__name__


def append_log(path: Path, row: Mapping[str, Any]) -> None:
    """Append one row to a CSV file, writing the header with the first row."""
    new = not path.exists()
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def read_log(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def truncate_log(path: Path, epochs: int) -> None:
    """Keep the rows of the first ``epochs`` epochs: those a resumed run does not redo."""
    rows = [row for row in read_log(path) if int(row["epoch"]) <= epochs]
    path.unlink(missing_ok=True)
    for row in rows:
        append_log(path, row)


@contextlib.contextmanager
def hold_run(directory: Path) -> Iterator[None]:
    """Hold the run's lock for the duration; a second writer gets :class:`RunBusyError`."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "lock"
    # flock or an error, never a soft lock: the file holds its owner, which a contender reads
    lock = filelock.FileLock(path, fallback_to_soft=False)
    try:
        lock.acquire(blocking=False)
    except filelock.Timeout:
        owner = path.read_text().strip() or "unknown"
        raise RunBusyError(
            f"run {directory} is being trained by another process ({owner}); wait for it to "
            "finish, or stop it: its checkpoint lets this run resume"
        ) from None
    try:
        path.write_text(f"pid {os.getpid()} on {platform.node()}\n")
        yield
    finally:
        lock.release()


def _git(*args: str, cwd: Path = PACKAGE_DIR) -> str:
    """The output of a git command in ``cwd``; empty where git is absent or fails."""
    try:
        result = subprocess.run(["git", *args], capture_output=True, text=True, timeout=5, cwd=cwd)
    except (OSError, subprocess.SubprocessError):
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""


def git_commit() -> str:
    """The short hash of the checked-out commit, or "unknown" outside a git checkout."""
    return _git("rev-parse", "--short", "HEAD") or "unknown"


def code_digest(package_dir: str | os.PathLike | None = None) -> tuple[str, bool]:
    """SHA-256 (16 hex digits) of the :data:`TRAINING_MODULES` sources, and whether git reports
    uncommitted changes to them (False outside a git checkout).

    The digest covers each file's name and bytes in sorted order, so it names the code a run
    executed even where the commit does not (a checkout with local changes, a copy without git).
    """
    folder = Path(package_dir) if package_dir is not None else PACKAGE_DIR
    files = [folder / name for name in sorted(TRAINING_MODULES) if (folder / name).is_file()]
    digest = hashlib.sha256()
    for path in files:
        content = path.read_bytes()
        digest.update(f"{path.name}\t{len(content)}\n".encode())
        digest.update(content)
    dirty = bool(files) and bool(_git("status", "--porcelain", "--", *map(str, files), cwd=folder))
    return digest.hexdigest()[:16], dirty


def same_code(a: str, b: str, records: str | os.PathLike | None = None) -> bool:
    """Whether code digests ``a`` and ``b`` name the same training code: equal, or linked by a
    chain of passing records in ``records`` (default :data:`EQUIVALENCE_DIR`), each proving
    that two versions of the training modules train every campaign run bit for bit alike."""
    if a == b:
        return True
    linked: dict[str, set[str]] = {}
    for path in sorted(Path(records or EQUIVALENCE_DIR).glob("*.json")):
        proof = json.loads(path.read_text())["results"]
        if proof.get("identical") is True:
            old, new = proof["base"]["digest"], proof["new"]["digest"]
            merged = linked.get(old, {old}) | linked.get(new, {new})
            linked.update(dict.fromkeys(merged, merged))
    return b in linked.get(a, ())


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model and the threads torch uses."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    return f"{model} (CPU, {torch.get_num_threads()} threads)"


def write_summary(
    config: RunConfig,
    metrics: Mapping[str, Any],
    wall_time_s: float,
    device: torch.device,
    provenance: Mapping[str, Any] | None = None,
) -> Path:
    """Write the results summary of a finished run; a file of another profile is never touched.

    ``provenance`` (code digest, data fingerprint, precision) goes in at the top level.
    """
    path = results_path(config)
    if path.exists():
        existing = json.loads(path.read_text())
        if existing.get("config", {}).get("profile") != config.profile:
            raise RuntimeError(f"{path} holds a run of another profile; not overwriting it")
    summary = {
        "config": config.to_dict(),
        "config_hash": config.hash(),
        "metrics": metrics,
        "wall_time_s": round(wall_time_s, 1),
        "device": device_name(device),
        "torch": torch.__version__,
        "git_commit": git_commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **(provenance or {}),
    }
    atomic_write_json(path, summary)
    return path


def write_benchmark(
    path: str | os.PathLike,
    name: str,
    results: Mapping[str, Any],
    device: str | torch.device = "cpu",
) -> Path:
    """Record a benchmark's ``results`` at ``path`` (JSON, atomic) with the command that produced
    them, the hardware it ran on (``device``), torch version, git commit and date, for the book."""
    path = Path(path)
    record = {
        "benchmark": name,
        "command": " ".join(["python", *sys.argv]),
        "device": device_name(torch.device(device)),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "git_commit": git_commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "results": dict(results),
    }
    atomic_write_json(path, record)
    return path
