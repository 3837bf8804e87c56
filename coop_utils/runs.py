"""The run store: where a run lives, atomic checkpoints, one writer at a time, result summaries.

A run lives in ``runs/<dataset>/<method>/<config-hash>/``:

- ``config.json``: the configuration, written when the run starts;
- ``checkpoint.pt``: the state after the last finished epoch (or at Ctrl-C), written
  atomically (temp file, then rename) and read with ``torch.load(weights_only=True)``;
- ``log.csv``: one row per epoch;
- ``metrics.json``: the final evaluation, written last: its presence marks a finished run.

A finished run's summary goes to ``results/<profile>/<dataset>/<method>[-<variant>].json``.

Whether a run stands for today's code is decided here too: each run records its provenance
(behaviour digest, data fingerprint, precision; code digest and commit as information), a
finished run is reused and an interrupted one resumed only while these match today's, and a
stale one is moved aside (:func:`finished_run`). The behaviour digest is computed by
:mod:`coop_utils.behaviour` in a pinned process (:func:`behaviour_digests`).
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
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import filelock
import torch

from coop_utils.config import ABLATIONS, RunConfig, load_config
from coop_utils.datasets import SPLITS, cache_dir, data_fingerprint
from coop_utils.generated import generated_root

PACKAGE_DIR = Path(__file__).resolve().parent
#: the package's modules that a training run executes: the sources :func:`code_digest` covers
TRAINING_MODULES = (
    "config.py",
    "datasets.py",
    "generated.py",
    "loaders.py",
    "models.py",
    "gating.py",
    "losses.py",
    "training.py",
    "runs.py",
    "evaluate.py",
    "systems.py",
)


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


def parse_json(text: str | bytes, source: object) -> Any:
    """The value of the JSON ``text``; text that is not JSON raises a one-line ValueError naming
    ``source`` (its file, or what holds it). All the JSON the package reads outside
    :mod:`coop_utils.results` is parsed here."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{source} is not JSON: {error}") from None


def read_json(path: str | os.PathLike) -> Any:
    """The JSON file ``path``, parsed by :func:`parse_json`."""
    return parse_json(Path(path).read_bytes(), path)


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


def _run_lock(directory: Path) -> filelock.FileLock:
    # flock or an error, never a soft lock: the file holds its owner, which a contender reads
    return filelock.FileLock(directory / "lock", fallback_to_soft=False)


@contextlib.contextmanager
def hold_run(directory: Path) -> Iterator[None]:
    """Hold the run's lock for the duration; a second writer gets :class:`RunBusyError`."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "lock"
    lock = _run_lock(directory)
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


def run_progress(config: RunConfig) -> str:
    """Where a run not recorded yet stands in ``runs/``, for a campaign's ``--list``: "" (never
    started here), "finished, not yet recorded", or how many epochs its log holds and whether
    another process trains it now (its lock held) or it waits to resume."""
    directory = run_dir(config)
    if (directory / "metrics.json").exists():
        return f"finished in {directory}, not yet recorded"
    if not (directory / "checkpoint.pt").exists():
        return ""
    done = len(read_log(directory / "log.csv")) if (directory / "log.csv").exists() else 0
    epochs = f"{done} of {config.epochs} epochs done"
    lock = _run_lock(directory)
    try:
        lock.acquire(blocking=False)
    except filelock.Timeout:
        owner = (directory / "lock").read_text().strip() or "another process"
        return f"training ({owner}), {epochs}"
    lock.release()
    return f"interrupted, {epochs}: resumes from its checkpoint"


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


#: the short run a behaviour digest trains in place of a configuration's own: the keys that set
#: a run's scale (data size, epochs, batch), its name and where it runs, not what it computes
DIGEST_REGIME: dict[str, Any] = {
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
#: the digest process: one thread, and CPU kernels that every x86-64 machine of the last decade
#: runs alike (ATen's vectorised kernels, oneDNN and MKL all capped at AVX2)
DIGEST_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "ATEN_CPU_CAPABILITY": "avx2",
    "DNNL_MAX_CPU_ISA": "AVX2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_CBWR": "AVX2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
}


def digest_config(config: RunConfig, work: str | os.PathLike = ".") -> RunConfig:
    """The short run that stands for ``config`` in its behaviour digest: every key of ``config``
    bar those of :data:`DIGEST_REGIME`, with its run and results folders in ``work``."""
    work = Path(work)
    return config.replace(
        **DIGEST_REGIME,
        run_root=str(work / "runs"),
        results_root=str(work / "results"),
        data_root=None,
    )


def digest_key(config: RunConfig) -> str:
    """Configurations with one key share one behaviour digest: they differ in scale or name."""
    return digest_config(config).hash()


def package_digest() -> str:
    """SHA-256 (16 hex digits) of every module of the package and torch's version: the key of
    the behaviour-digest cache (any edit computes the digests again)."""
    digest = hashlib.sha256(torch.__version__.encode())
    for path in sorted(PACKAGE_DIR.glob("*.py")):
        digest.update(f"{path.name}\n".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def behaviour_digests(configs: Iterable[RunConfig], cache: bool = True) -> dict[str, str]:
    """``{digest_key(config): behaviour digest}`` of ``configs`` with the package on disk.

    The digests are computed by ``python -m coop_utils.behaviour`` in a fresh process pinned by
    :data:`DIGEST_ENV`, one short run per distinct key (a few seconds each). With ``cache``,
    digests already computed for these very sources are read from the data cache folder.
    """
    wanted = {digest_key(config): config for config in configs}
    path = cache_dir() / "behaviour" / f"{package_digest()}.json"
    known = read_json(path) if cache and path.exists() else {}
    missing = [config for key, config in wanted.items() if key not in known]
    if missing:
        pythonpath = os.pathsep.join(
            filter(None, [str(PACKAGE_DIR.parent), os.environ.get("PYTHONPATH")])
        )
        done = subprocess.run(
            [sys.executable, "-m", "coop_utils.behaviour", "--configs-from-stdin"],
            input=configs_to_json(missing),
            capture_output=True,
            text=True,
            env={**os.environ, **DIGEST_ENV, "PYTHONPATH": pythonpath},
            check=False,
        )
        if done.returncode:
            raise RuntimeError(f"the behaviour digest process failed:\n{done.stderr[-3000:]}")
        known |= parse_json(done.stdout.strip().splitlines()[-1], "the digest process's output")
        if cache:
            atomic_write_json(path, known)
    return {key: known[key] for key in wanted}


def retrain_command(config: RunConfig) -> str:
    """The command that trains ``config``'s run again: ``python -m coop_utils train`` with its
    profile, dataset, method, variant and seed, and ``--set`` for every other key that differs
    from what those give (a named ablation's switches included)."""
    named = {"dataset": config.dataset, "method": config.method, "seed": config.seed}
    named |= ABLATIONS.get(config.variant, {}) | (
        {"variant": config.variant} if config.variant else {}
    )
    base = load_config(config.profile, **named).to_dict()
    words = ["python", "-m", "coop_utils", "train", "--profile", config.profile]
    words += ["--dataset", config.dataset, "--method", config.method]
    words += ["--variant", config.variant] if config.variant else []
    words += ["--seed", str(config.seed)] if config.seed else []
    for key, value in config.to_dict().items():
        if value != base[key] and key not in ("run_root", "data_root", "device"):
            shown = value if isinstance(value, str) else json.dumps(value)
            words += ["--set", f"{key}={shown}"]
    return shlex.join(words)


def configs_to_json(configs: Iterable[RunConfig]) -> str:
    """The configurations the behaviour-digest process reads on its standard input."""
    return json.dumps([config.to_dict() for config in configs])


def configs_from_json(text: str) -> list[RunConfig]:
    """The configurations of :func:`configs_to_json`."""
    return [config_from_dict(values) for values in parse_json(text, "the configurations")]


def config_from_dict(values: Mapping[str, Any]) -> RunConfig:
    """A configuration from its ``to_dict`` form (a summary's ``config``), lists as tuples."""
    fields = RunConfig.__dataclass_fields__
    return RunConfig(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in fields}
    )


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
    threads = torch.get_num_threads()
    return f"{model} (CPU, {threads} thread{'' if threads == 1 else 's'})"


def write_summary(
    config: RunConfig,
    metrics: Mapping[str, Any],
    wall_time_s: float,
    device: torch.device,
    provenance: Mapping[str, Any] | None = None,
) -> Path:
    """Write the results summary of a finished run; a file of another profile is never touched.

    ``provenance`` (behaviour and code digests, data fingerprint, precision, and the training
    compute) goes in at the top level.
    """
    path = results_path(config)
    if path.exists():
        existing = read_json(path)
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


# --- provenance and reuse: whether a run folder or a summary stands for today's code ---------


@dataclass
class Run:
    """A finished (or reused) run: its config, folder, final metrics and per-epoch log."""

    config: RunConfig
    directory: Path
    metrics: dict[str, dict[str, dict[str, float]]]
    log: list[dict[str, str]]
    wall_time_s: float
    reused: bool = False
    summary_path: Path | None = None
    parameter_digest: str = ""


def run_data_fingerprint(config: RunConfig) -> str:
    """SHA-256 (16 hex digits) of the files of every split ``config`` reads (paths and sizes);
    a missing dataset raises :class:`coop_utils.datasets.DatasetError`, downloading nothing."""
    root = generated_root(config) if config.data == "generated" else config.data_root
    fingerprints = [data_fingerprint(config.dataset, split, root) for split in SPLITS]
    return hashlib.sha256("+".join(fingerprints).encode()).hexdigest()[:16]


def read_run_file(directory: str | os.PathLike, name: str) -> dict[str, Any]:
    """One JSON file of a run folder (``config.json``, ``provenance.json``, ``metrics.json``),
    or of a folder of exported weights (``config.json``); ``{}`` where it is absent."""
    path = Path(directory) / name
    return read_json(path) if path.is_file() else {}


def summary_config(path: str | os.PathLike) -> RunConfig:
    """The configuration a results summary records (its other contents are
    :mod:`coop_utils.results`'s to read)."""
    return config_from_dict(read_json(path)["config"])


def provenance(config: RunConfig) -> dict[str, Any]:
    """What a run's numbers depend on beyond its config: the code, the data, the precision.

    The behaviour digest (:func:`coop_utils.runs.behaviour_digests`) decides whether a run stands
    for today's code; the code digest and the git commit are kept as information. Smoke runs,
    never recorded, carry none (the digest's own short runs are smoke runs).
    """
    code, dirty = code_digest()
    current = {
        "code_digest": code,
        "code_dirty": dirty,
        "git_commit": git_commit(),
        "data_fingerprint": run_data_fingerprint(config),
        "precision": config.resolved_precision(),
    }
    if config.profile != "smoke":
        current["behaviour_digest"] = behaviour_digests([config])[digest_key(config)]
    return current


def _staleness(recorded: dict[str, Any], current: dict[str, Any]) -> str:
    """Why a run recorded with ``recorded`` cannot stand for ``current`` ('' if it can): other
    data, precision or behaviour; a run without a behaviour digest (a smoke run, or one made
    before digests were recorded) must have been made by the very same code bytes."""
    by_behaviour = "behaviour_digest" in current and "behaviour_digest" in recorded
    matched = ("behaviour_digest" if by_behaviour else "code_digest", "data_fingerprint")
    changed = [key for key in (*matched, "precision") if recorded.get(key) != current[key]]
    return ", ".join(
        f"{key} {recorded.get(key, 'unrecorded')} -> {current[key]}" for key in changed
    )


def _set_aside_if_stale(directory: Path, current: dict[str, Any], reuse_stale: bool) -> None:
    """Move a run made by other code or data aside (nothing is deleted), unless asked to reuse
    it anyway; then a fresh run starts in its place."""
    if not any((directory / name).exists() for name in ("checkpoint.pt", "metrics.json")):
        return
    why = _staleness(read_run_file(directory, "provenance.json"), current)
    if not why:
        return
    if reuse_stale:
        print(f"reusing {directory} although it is stale ({why}): --reuse-stale", flush=True)
        return
    stamp = time.strftime("%Y%m%dT%H%M%S")
    aside = directory.with_name(f"{directory.name}.stale-{stamp}")
    with hold_run(directory):
        directory.rename(aside)
    print(
        f"retraining {directory}: it was made by other code or data ({why}); "
        f"the old run is kept in {aside}",
        flush=True,
    )


def finished_run(config: RunConfig, current: dict[str, Any], reuse_stale: bool) -> Run | None:
    """The finished run of ``config`` (after setting a stale one aside), if there is one."""
    directory = run_dir(config)
    _set_aside_if_stale(directory, current, reuse_stale)
    if not (directory / "metrics.json").exists():
        return None
    summary = read_run_file(directory, "metrics.json")
    summary_path = results_path(config)
    return Run(
        config,
        directory,
        summary["metrics"],
        read_log(directory / "log.csv"),
        summary["wall_time_s"],
        reused=True,
        summary_path=summary_path if summary_path.exists() else None,
    )


def record_run(config, directory, metrics, wall, data, device, current, **extra) -> Run:
    """Write a run's ``metrics.json`` and results summary; return the run."""
    summary = {
        "metrics": metrics,
        "wall_time_s": wall,
        "data": data.description,
        **extra,
        "provenance": current,
    }
    atomic_write_json(directory / "metrics.json", summary)
    summary_path = write_summary(config, metrics, wall, device, current)
    log = read_log(directory / "log.csv")
    return Run(config, directory, metrics, log, wall, summary_path=summary_path)
