"""Everything ``results/`` records, read once: one tidy frame of the result summaries, the
per-epoch logs beside them, the benchmark records, and where the weights and samples lie.

The layout, under a results root:

- ``<profile>/<dataset>/<file>.json``: the campaign's summaries (``root`` is the profile);
- ``<root>/<profile>/<dataset>/<file>.json``: summaries kept apart from the campaign, such as
  ``compute-matched/`` (the compute-matched control) and ``pilot/``;
- ``logs/<file>.csv`` beside each summary: its per-epoch log;
- ``benchmarks/<name>.json``: the benchmark records;
- ``weights/<profile>/<dataset>/<file>/<network>.pt`` and ``samples/<profile>/<dataset>.npz``.

A summary named ``<run>-seed<N>`` is seed ``N`` of ``<run>`` (its config's ``seed`` decides).
The frame has one row per summary, network and scaling factor (:data:`COLUMNS`); the metrics
keep the names a summary gives them (``top1``, ``active_blocks``, ...).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from coop_utils.config import RunConfig, campaign, load_config
from coop_utils.data import DATASETS
from coop_utils.runs import behaviour_digests, digest_key, read_log, results_path

#: the measured numbers of a network at one depth, as a summary names them
METRICS = ("top1", "top5", "val_top1", "flops", "latency_ms", "active_blocks")
#: the frame's columns: where a summary lies, what ran, what it measured, how it was recorded
COLUMNS = (
    "root", "profile", "dataset", "file", "path",
    "run", "method", "variant", "seed", "network", "s", *METRICS, "mflops", "depth",
    "epochs", "training_flops", "wall_time_s", "test_images",
    "device", "date", "behaviour_digest", "code_digest", "config_hash", "data_fingerprint",
    "precision", "config",
)  # fmt: skip
#: the frame's columns of numbers (the others hold what the summaries hold, ``None`` if absent)
NUMBERS = (*METRICS, "s", "mflops", "depth", "seed", "epochs", "training_flops", "wall_time_s")
NUMBERS += ("test_images",)
#: the folders of a results root that hold no summaries
NOT_SUMMARIES = ("benchmarks", "weights", "samples", "logs")

_SEED = re.compile(r"^(?P<run>.+)-seed(?P<seed>\d+)$")


class SummaryError(ValueError):
    """A file where a result summary should be that is not one."""


def run_name(file: str) -> str:
    """The run a summary file is a seed of: ``cooperative-seed1`` -> ``cooperative``."""
    match = _SEED.match(file)
    return match["run"] if match else file


def teammates(networks: Any) -> list[str]:
    """The Teammates (``teammate0``, ``teammate1``, ...) among ``networks``, in order."""
    names = [name for name in dict.fromkeys(networks) if name.removeprefix("teammate").isdigit()]
    return sorted(names, key=lambda name: int(name.removeprefix("teammate")))


def test_images(config: Mapping[str, Any]) -> float:
    """How many test images a run's accuracies were measured on (``nan``: an unknown dataset)."""
    info = DATASETS.get(config.get("dataset"))
    if info is None:
        return math.nan
    classes = config.get("num_classes") or info.num_classes
    if config.get("data") == "generated":
        return classes * config["generated_test_per_class"]
    return classes * info.test_per_class


def metrics_frame(metrics: Mapping[str, Mapping[str, Mapping[str, float]]]) -> pd.DataFrame:
    """One row per network and depth of a run's ``metrics`` (``{network: {s: row}}``), in their
    order, with ``mflops`` and ``depth`` (the share of the network's blocks run)."""
    return _frame(_metric_rows(metrics), ["network", "s", *METRICS], ["network"])


def _metric_rows(metrics: Mapping[str, Mapping[str, Mapping[str, float]]]) -> list[dict]:
    return [
        {"network": network, "s": float(key), **{m: row.get(m, math.nan) for m in METRICS}}
        for network, by_depth in metrics.items()
        for key, row in by_depth.items()
    ]


def _frame(rows: list[dict], columns: list[str], runs: list[str]) -> pd.DataFrame:
    """``rows`` as a frame: numbers as numbers, the rest as recorded (``None`` where absent),
    with ``mflops`` and ``depth`` (``active_blocks`` over its maximum in each group of
    ``runs`` and network)."""
    frame = pd.DataFrame(
        {
            column: pd.Series(
                [row[column] for row in rows], dtype=None if column in NUMBERS else object
            )
            for column in columns
            if column not in ("mflops", "depth")
        }
    )
    frame["mflops"] = frame["flops"] / 1e6
    full_depth = frame.groupby(runs, sort=False)["active_blocks"].transform("max")
    frame["depth"] = frame["active_blocks"] / full_depth
    return frame[columns + [c for c in ("mflops", "depth") if c not in columns]]


def _check(summary: Any) -> str:
    """Why ``summary`` is not a result summary, or ""."""
    if not isinstance(summary, dict):
        return "not a JSON object"
    for key in ("config", "metrics"):
        if not isinstance(summary.get(key), dict):
            return f"no {key!r} object"
    if not summary["metrics"]:
        return "no network in 'metrics'"
    for network, by_depth in summary["metrics"].items():
        if not isinstance(by_depth, dict) or not by_depth:
            return f"metrics of {network!r} are not {{scaling factor: row}}"
        for key, row in by_depth.items():
            try:
                float(key)
            except ValueError:
                return f"{network!r} has a depth {key!r} that is not a scaling factor"
            if not isinstance(row, dict) or not isinstance(row.get("top1"), int | float):
                return f"{network!r} at s={key} has no top1"
    return ""


def _summary_rows(
    summary: Mapping[str, Any], file: str, source: str = "", **location: str
) -> list[dict]:
    """The frame's rows of one result summary named ``file`` (its name without ``.json``),
    read from ``source``; ``location`` gives ``root``, ``profile``, ``dataset`` and ``path``
    (default: from its config)."""
    if why := _check(summary):
        raise SummaryError(f"{source or file}: not a result summary: {why}")
    config = summary["config"]
    run = run_name(file)
    match = _SEED.match(file)
    method, _, variant = run.partition("-")
    profile = location.get("profile") or config.get("profile") or ""
    dataset = location.get("dataset") or config.get("dataset") or ""
    recorded = {
        "root": location.get("root") or profile,
        "profile": profile,
        "dataset": dataset,
        "file": file,
        "path": location.get("path") or f"{profile}/{dataset}/{file}.json",
        "run": run,
        "method": config.get("method", method),
        "variant": config.get("variant", variant),
        "seed": int(config.get("seed", match["seed"] if match else 0)),
        "epochs": math.nan if config.get("epochs") is None else config["epochs"],
        "training_flops": summary.get("training_flops", math.nan),
        "wall_time_s": summary.get("wall_time_s", math.nan),
        "test_images": test_images(config),
    }
    recorded |= {key: summary.get(key) for key in COLUMNS if key not in recorded}
    return [recorded | row for row in _metric_rows(summary["metrics"])]


def frame_of(summaries: Mapping[str, Mapping[str, Any]], **location: str) -> pd.DataFrame:
    """The frame of ``{file name: summary}`` (summaries in memory: this build's runs, tests), in
    their order; a seed recorded twice under one run is refused."""
    rows = [row for file, s in summaries.items() for row in _summary_rows(s, file, **location)]
    return _checked(rows)


def _checked(rows: list[dict]) -> pd.DataFrame:
    frame = _frame(rows, list(COLUMNS), ["path", "network"]) if rows else empty()
    _one_file_per_seed(frame)
    return frame


def empty() -> pd.DataFrame:
    """The frame of no summary."""
    return pd.DataFrame(columns=list(COLUMNS))


def _one_file_per_seed(frame: pd.DataFrame) -> None:
    files = frame.drop_duplicates("path")
    twice = files[files.duplicated(["root", "profile", "dataset", "run", "seed"], keep=False)]
    if not twice.empty:
        first, second, *_ = twice.itertuples()
        raise ValueError(
            f"result files {first.file!r} and {second.file!r} are both seed {first.seed} of "
            f"{first.run!r}: remove one (a seed counts once)"
        )


def summary_paths(results_root: str | os.PathLike) -> list[Path]:
    """Every summary under ``results_root``, sorted: ``<profile>/<dataset>/*.json`` and
    ``<root>/<profile>/<dataset>/*.json``."""
    root = Path(results_root)
    paths = [*root.glob("*/*/*.json"), *root.glob("*/*/*/*.json")]
    return sorted(p for p in paths if not set(p.relative_to(root).parts[:-1]) & {*NOT_SUMMARIES})


def read_summary(path: Path, results_root: str | os.PathLike) -> list[dict]:
    """The frame's rows of the summary at ``path`` (under ``results_root``)."""
    relative = path.relative_to(results_root)
    *roots, profile, dataset, _ = relative.parts
    location = {"root": roots[0] if roots else profile, "profile": profile, "dataset": dataset}
    try:
        summary = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise SummaryError(f"{path}: not a result summary: not JSON ({error})") from None
    return _summary_rows(summary, path.stem, str(path), path=relative.as_posix(), **location)


@dataclass(frozen=True)
class Results:
    """A results root, read: the summaries' :attr:`frame`, each summary's per-epoch log (by its
    ``path``) and the benchmark records (by name)."""

    root: Path
    frame: pd.DataFrame
    logs: Mapping[str, list[dict[str, str]]]
    benchmarks: Mapping[str, dict[str, Any]]

    def weights(self, profile: str, dataset: str, file: str, network: str) -> Path:
        """Where a recorded run's network is committed (fp16, as ``export.save_network``)."""
        return self.root / "weights" / profile / dataset / file / f"{network}.pt"

    def samples(self, profile: str, dataset: str) -> Path:
        """Where ``benchmarks/make_samples.py`` commits a profile's test images of a dataset."""
        return self.root / "samples" / profile / f"{dataset}.npz"


def load(results_root: str | os.PathLike) -> Results:
    """Read ``results_root`` (an absent folder records nothing)."""
    root = Path(results_root)
    paths = summary_paths(root)
    frame = _checked([row for path in paths for row in read_summary(path, root)])
    logs = {}
    for path in paths:
        log = path.parent / "logs" / f"{path.stem}.csv"
        if log.exists():
            logs[path.relative_to(root).as_posix()] = read_log(log)
    records = sorted((root / "benchmarks").glob("*.json"))
    benchmarks = {path.stem: json.loads(path.read_text()) for path in records}
    return Results(root, frame, logs, benchmarks)


# --- queries ----------------------------------------------------------------------------------


def full_depth(rows: pd.DataFrame) -> pd.Series:
    """One network's row at its costliest (full) depth."""
    return rows.loc[rows["flops"].idxmax()]


def summaries(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per summary of ``frame`` (its first network and depth), in order."""
    return frame.drop_duplicates("path")


def campaign_rows(frame: pd.DataFrame, profile: str, dataset: str | None = None) -> pd.DataFrame:
    """The rows of the profile's campaign (``<profile>/<dataset>/``), of one dataset if given."""
    rows = frame[(frame["root"] == frame["profile"]) & (frame["profile"] == profile)]
    return rows if dataset is None else rows[rows["dataset"] == dataset]


def campaign_state(
    profile: str, results_root: str | os.PathLike | Results | None = None, behaviour: bool = False
) -> list[tuple[RunConfig, str]]:
    """Each run of the profile's campaign, in order: its config (at ``results_root``, or what
    was read there, else the profile's) and the state of its summary there: "to run",
    "recorded with another config" or "recorded". With ``behaviour``, a recorded run whose
    behaviour digest is not today's code's (:func:`coop_utils.runs.behaviour_digests`, a few
    seconds per configuration unless cached) is "recorded by code that trains it otherwise
    (<its digest> -> <today's>)"."""
    read = results_root if isinstance(results_root, Results) else None
    results_root = read.root if read else results_root
    root = {} if results_root is None else {"results_root": str(results_root)}
    planned = [load_config(profile, **root, **overrides) for overrides in campaign(profile)]
    if not planned:
        return []
    base = Path(planned[0].results_root)
    recorded = summaries((read or load(base)).frame).set_index("path")
    found = []
    for config in planned:
        path = results_path(config).relative_to(base).as_posix()
        found.append(recorded.loc[path] if path in recorded.index else None)
    to_check = [c for c, s in zip(planned, found, strict=True) if _same(s, c)]
    today = behaviour_digests(to_check) if behaviour and to_check else {}
    states = []
    for config, summary in zip(planned, found, strict=True):
        if summary is None:
            state = "to run"
        elif not _same(summary, config):
            state = "recorded with another config"
        elif behaviour and summary["behaviour_digest"] != today[digest_key(config)]:
            state = (
                "recorded by code that trains it otherwise "
                f"({summary['behaviour_digest'] or 'no digest'} -> {today[digest_key(config)]})"
            )
        else:
            state = "recorded"
        states.append((config, state))
    return states


def _same(summary: pd.Series | None, config: RunConfig) -> bool:
    return summary is not None and summary["config_hash"] == config.hash()


def evaluation_only(frame: pd.DataFrame) -> pd.Series:
    """Per summary ``path``: whether it re-evaluates another summary of ``frame`` (the
    ``shared-bn`` ablation: the config but its batch-norm statistics, the same seed and the same
    training time), so that its training is counted once."""
    runs = summaries(frame)

    def rest(config: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in config.items() if k not in ("bn_stats", "variant")}

    flags = {}
    for run in runs.itertuples():
        flags[run.path] = run.config.get("bn_stats") == "shared" and any(
            other.path != run.path
            and _equal(other.wall_time_s, run.wall_time_s)
            and rest(other.config) == rest(run.config)
            for other in runs.itertuples()
        )
    return pd.Series(flags, dtype=bool)


def _equal(a: float, b: float) -> bool:
    return a == b or (a != a and b != b)  # two unrecorded times are equal


#: the decimals :func:`campaign_table` rounds each column to (and the book shows)
CAMPAIGN_DECIMALS = {
    "training (h)": 2,
    "per seed (h)": 2,
    "top-1 at full depth (%)": 1,
    "seed range (pts)": 1,
}


def campaign_table(
    frame: pd.DataFrame, decimals: Mapping[str, int] = CAMPAIGN_DECIMALS
) -> pd.DataFrame:
    """What each recorded run of one dataset cost and how far its seeds land apart: seeds,
    hours of training in all and per trained seed (a re-evaluation of another run's networks
    costs none), and the test top-1 at full depth of its Teammates (the only network of the
    others), mean over seeds and range (max - min); rounded to ``decimals`` (``{}``: not)."""
    evaluated = evaluation_only(frame)
    rows = []
    for name, arm in frame.groupby("run", sort=False):
        full, seconds, trained = [], 0.0, 0
        for _, seed in arm.groupby("seed"):
            networks = teammates(seed["network"]) or list(dict.fromkeys(seed["network"]))
            deepest = [full_depth(seed[seed["network"] == n])["top1"] for n in networks]
            full.append(float(np.mean(deepest)))
            if not evaluated[seed["path"].iloc[0]]:
                wall = seed["wall_time_s"].iloc[0]
                seconds, trained = seconds + (0.0 if wall != wall else float(wall)), trained + 1
        rows.append(
            {
                "run": name,
                "seeds": len(full),
                "training (h)": seconds / 3600,
                "per seed (h)": seconds / 3600 / trained if trained else 0.0,
                "top-1 at full depth (%)": float(np.mean(full)),
                "seed range (pts)": max(full) - min(full) if len(full) > 1 else math.nan,
            }
        )
    return pd.DataFrame(rows).set_index("run").round(dict(decimals)) if rows else pd.DataFrame()
