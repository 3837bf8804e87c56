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

import functools
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

import coop_utils.config as config_module
from coop_utils.config import PROFILES, RunConfig, campaign, load_config
from coop_utils.datasets import DATASETS
from coop_utils.evaluate import matched_epochs
from coop_utils.models import ARCHITECTURES, SCALING_FACTORS, depth_plan
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
#: profiles whose summaries are results, best first; smoke numbers never are
RESULT_PROFILES = ("full", "preview")
#: the short regime's control of independent networks trained for about a cooperative run's
#: compute: the campaign ``compute-matched``, recorded under ``<results>/MATCHED_ROOT``, judged
#: as the run ``MATCHED_NAME``
MATCHED_ROOT = "compute-matched"
MATCHED_NAME = "independent-compute-matched"
#: how a run's name says it is a method's control trained for a cooperative run's compute
#: (``independent-compute-matched``, ``byot-flops-matched``)
CONTROLS = ("compute-matched", "flops-matched")
CONTROL_SUFFIXES = tuple(f"-{control}" for control in CONTROLS)
#: the regimes the verdict judges, the converged one first: ``{regime: {campaign of the
#: profile: the suffix its runs are judged under}}`` (``""``: their own names)
REGIMES = {
    "converged": {"converged": ""},
    "short": {"campaign": "", MATCHED_ROOT: MATCHED_ROOT},
}

_SEED = re.compile(r"^(?P<run>.+)-seed(?P<seed>\d+)$")


class SummaryError(ValueError):
    """A file of ``results/`` that is not what its place says (a summary, a benchmark record)."""


def span(values: Sequence[Any]) -> str:
    """``"24"``, or ``"63–65"`` for several (sorted) values: the epochs or ratios of seeds."""
    return f"{values[0]}" if values[0] == values[-1] else f"{values[0]}–{values[-1]}"


def run_name(file: str) -> str:
    """The run a summary file is a seed of: ``cooperative-seed1`` -> ``cooperative``."""
    match = _SEED.match(file)
    return match["run"] if match else file


def teammates(networks: Any) -> list[str]:
    """The Teammates (``teammate0``, ``teammate1``, ...) among ``networks``, in order."""
    names = [name for name in dict.fromkeys(networks) if name.removeprefix("teammate").isdigit()]
    return sorted(names, key=lambda name: int(name.removeprefix("teammate")))


def images_tested(config: Mapping[str, Any]) -> float:
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


def _frame(rows: list[dict], columns: list[str], network: list[str]) -> pd.DataFrame:
    """``rows`` as a frame: numbers as numbers, the rest as recorded (``None`` where absent),
    with ``mflops`` and ``depth`` (``active_blocks`` over its maximum over the rows of one
    ``network``: the columns that name it)."""
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
    full_depth = frame.groupby(network, sort=False)["active_blocks"].transform("max")
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
        "test_images": images_tested(config),
    }
    recorded |= {key: summary.get(key) for key in COLUMNS if key not in recorded}
    if isinstance(recorded["device"], str):  # summaries written before "1 thread" was said so
        recorded["device"] = recorded["device"].replace("(CPU, 1 threads)", "(CPU, 1 thread)")
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
    summary = _json(path, "a result summary")
    return _summary_rows(summary, path.stem, str(path), path=relative.as_posix(), **location)


def _json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise SummaryError(f"{path}: not {what}: not JSON ({error})") from None


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

    def logs_of(self, rows: pd.DataFrame) -> dict[str, list[dict[str, str]]]:
        """``{file: per-epoch rows}`` of the summaries of ``rows`` whose log is committed."""
        files = summaries(rows)
        return {
            run.file: self.logs[run.path] for run in files.itertuples() if run.path in self.logs
        }

    def campaign(
        self, dataset: str, names: Sequence[str] | None = None, root: str | None = None
    ) -> tuple[str | None, pd.DataFrame]:
        """``(profile, rows)`` of the campaign of the best profile (full before preview, smoke
        never) with any summary on ``dataset`` (of the runs ``names``, every seed of each, if
        given), summaries sorted by name; ``(None, no rows)`` when none is recorded. ``root``:
        the campaign recorded in that results folder (``"converged"``), not the main one."""
        for profile in RESULT_PROFILES:
            rows = campaign_rows(self.frame, profile, dataset, root)
            if names is not None:
                rows = rows[rows["run"].isin(names)]
            if not rows.empty:
                return profile, rows.sort_values("file", kind="stable", ignore_index=True)
        return None, empty()


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
    benchmarks = {path.stem: _json(path, "a benchmark record") for path in records}
    return Results(root, frame, logs, benchmarks)


# --- queries ----------------------------------------------------------------------------------


def full_depth(rows: pd.DataFrame) -> pd.Series:
    """One network's row at its costliest (full) depth."""
    return rows.loc[rows["flops"].idxmax()]


def summaries(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per summary of ``frame`` (its first network and depth), in order."""
    return frame.drop_duplicates("path")


def config_of(rows: pd.DataFrame) -> RunConfig:
    """The config the first seed of recorded rows was trained with, completed by its
    profile's defaults."""
    values = dict(rows.sort_values("seed", kind="stable")["config"].iloc[0])
    return load_config(values.pop("profile"), **values)


def campaign_rows(
    frame: pd.DataFrame, profile: str, dataset: str | None = None, root: str | None = None
) -> pd.DataFrame:
    """The rows of the profile's main campaign (``<profile>/<dataset>/``), of one dataset if
    given; ``root``: of the campaign recorded in that folder (``<root>/<profile>/<dataset>/``)."""
    rows = frame[(frame["root"] == (root or profile)) & (frame["profile"] == profile)]
    return rows if dataset is None else rows[rows["dataset"] == dataset]


def best_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows the verdict judges: the recorded runs of the campaigns of every regime
    (:func:`regime_plan`) of the best profile that has recorded a cooperative run (full before
    preview; smoke never), each with its ``regime`` and named as judged (the short regime's
    control: ``MATCHED_NAME``); a summary of another config than its campaign's is left out."""
    for profile in RESULT_PROFILES:
        plan = regime_plan(profile, frame)
        plan = plan[plan["recorded"]]
        if not (plan["run"] == "cooperative").any():
            continue
        judged = plan.set_index("path")
        rows = frame[frame["path"].isin(judged.index)]
        rows = rows.assign(
            regime=rows["path"].map(judged["regime"]), run=rows["path"].map(judged["run"])
        )
        return rows.reset_index(drop=True)
    return empty().assign(regime=pd.Series(dtype=object))


def regime_plan(
    profile: str, frame: pd.DataFrame | None = None, regimes: Sequence[str] = tuple(REGIMES)
) -> pd.DataFrame:
    """Every run the campaigns of ``regimes`` (:data:`REGIMES`) of the profile plan, in order:
    its ``regime``, ``campaign``, ``dataset``, ``run`` (as judged), ``seed``, ``epochs``,
    ``path`` under the results root, ``config_hash`` and whether ``frame`` holds its summary
    ``recorded`` with that config."""
    params = Path(config_module.PARAMS_DIR) / f"{profile}.yaml"
    text = params.read_text() if params.exists() else ""
    plan = pd.DataFrame(list(_plan_rows(profile, tuple(regimes), text)), columns=_PLAN)
    hashes = {} if frame is None else dict(summaries(frame)[["path", "config_hash"]].values)
    recorded = [hashes.get(path) == hash_ for path, hash_ in plan[["path", "config_hash"]].values]
    return plan.assign(recorded=pd.Series(recorded, dtype=bool))


_PLAN = ["regime", "campaign", "dataset", "run", "seed", "epochs", "path", "config_hash"]


@functools.lru_cache(maxsize=16)
def _plan_rows(profile: str, regimes: tuple[str, ...], params: str) -> tuple[tuple, ...]:
    """The rows of :func:`regime_plan` before its summaries are read, once per ``params``
    (the text of the profile's file)."""
    default = Path(load_config(profile).results_root) if profile in PROFILES else Path()
    rows = []
    for regime in regimes:
        for name, suffix in REGIMES[regime].items():
            for config in _planned(profile, name):
                run = results_path(config.replace(seed=0)).stem + (f"-{suffix}" if suffix else "")
                path = _relative(results_path(config), default)
                rows.append((regime, name, config.dataset, run, config.seed, config.epochs, path))
                rows[-1] += (config.hash(),)
    return tuple(rows)


def _planned(profile: str, name: str) -> list[RunConfig]:
    """:func:`planned_configs`, none for a profile without a campaign of this name."""
    try:
        return planned_configs(profile, name) if profile in PROFILES else []
    except ValueError as error:
        if "has no campaign" in str(error):
            return []
        raise


#: the campaign of the learning-budget pilot, and how its runs' names end: ``-budget-e<N>``
BUDGET_CAMPAIGN = "budget-pilot"
_BUDGET = re.compile(r"-budget-e\d+$")
#: what a run of the budget pilot shares with its campaign's runs to stand beside them
_BUDGET_KEYS = ("dataset", "num_classes", "image_size", "arch", "batch_size", "lr_schedule")


def budget_rows(frame: pd.DataFrame, profile: str = "preview") -> pd.DataFrame:
    """The budget pilot's recorded runs (campaign :data:`BUDGET_CAMPAIGN`, with its planned
    config) and any other ``<run>-budget-e<N>`` summary beside them on the same data, backbone
    and schedule (a cooperative run at a budget, say), each with its ``epochs``."""
    planned = _planned(profile, BUDGET_CAMPAIGN)
    if not planned:
        return empty()
    default = Path(load_config(profile).results_root)
    hashes = {_relative(results_path(c), default): c.hash() for c in planned}
    folder = hashes and next(iter(hashes)).rsplit("/", 1)[0]
    files = summaries(frame)
    keys = {key: getattr(planned[0], key) for key in _BUDGET_KEYS}
    chosen = [
        row.path
        for row in files.itertuples()
        if hashes.get(row.path) == row.config_hash
        or (
            row.path.rsplit("/", 1)[0] == folder
            and row.path not in hashes
            and _BUDGET.search(row.run)
            and all(row.config.get(k) == v for k, v in keys.items())
        )
    ]
    return frame[frame["path"].isin(chosen)].reset_index(drop=True)


def _relative(path: Path, root: Path) -> str:
    """``path`` under the results ``root`` (a campaign's own folder, such as
    ``results/converged``, is a folder of it)."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def planned_seeds(profile: str) -> dict[str, int]:
    """``{run name: seeds}`` that the ``campaign`` of ``params/<profile>.yaml`` trains (the name
    of a results file without its seed); empty for a profile without a campaign."""
    planned: dict[str, int] = {}
    for run in campaign(profile) if profile in PROFILES else []:
        name = run["method"] + (f"-{run['variant']}" if run.get("variant") else "")
        planned[name] = planned.get(name, 0) + 1
    return planned


def planned_configs(profile: str, name: str = "campaign", **overrides: Any) -> list[RunConfig]:
    """The configs of the profile's campaign ``name`` (:func:`coop_utils.config.campaign`), in
    order, with ``overrides``. A run with ``match_training_flops`` takes the epochs at which its
    training FLOPs match those of the named run of the same seed
    (:func:`coop_utils.evaluate.matched_epochs`)."""
    runs = campaign(profile, name=name)
    configs: dict[tuple[str, int], RunConfig] = {}
    planned = []
    for run in runs:
        run = run | overrides
        matched = run.pop("match_training_flops", None)
        config = load_config(profile, **run)
        key = config.method + (f"-{config.variant}" if config.variant else "")
        if matched:
            reference = configs.get((matched, config.seed))
            if reference is None:
                raise ValueError(
                    f"campaign {name!r} of profile {profile!r}: {key} seed "
                    f"{config.seed} matches the training FLOPs of {matched!r} seed "
                    f"{config.seed}, which no earlier run of the campaign trains"
                )
            config = config.replace(epochs=_matched_epochs(config, reference))
        configs[(key, config.seed)] = config
        planned.append(config)
    return planned


@functools.cache
def _matched_epochs(control: RunConfig, reference: RunConfig) -> int:
    """:func:`matched_epochs`, computed once per pair (it counts the FLOPs of every step, one
    image at a time: on one thread, as more only wait on each other on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return matched_epochs(control, reference)
    finally:
        torch.set_num_threads(threads)


def campaign_state(
    profile: str,
    results_root: str | os.PathLike | Results | None = None,
    behaviour: bool = False,
    name: str = "campaign",
) -> list[tuple[RunConfig, str]]:
    """Each run of the profile's campaign ``name`` (:func:`coop_utils.config.campaign`), in
    order: its config (at ``results_root``, or what was read there, else the profile's) and
    the state of its summary there: "to run", "recorded with another config" or "recorded".
    With ``behaviour``, a recorded run whose behaviour digest is not today's code's
    (:func:`coop_utils.runs.behaviour_digests`, a few seconds per configuration unless cached)
    is "recorded by code that trains it otherwise (<its digest> -> <today's>)"."""
    read = results_root if isinstance(results_root, Results) else None
    results_root = read.root if read else results_root
    planned = planned_configs(profile, name)
    if not planned:
        return []
    default = Path(load_config(profile).results_root)
    base = default if results_root is None else Path(results_root)
    planned = [  # a campaign's own folder is a folder of the results root
        c.replace(results_root=str(base / _relative(Path(c.results_root), default)))
        for c in planned
    ]
    recorded = summaries((read or load(base)).frame).set_index("path")
    found = []
    for config in planned:
        path = _relative(results_path(config), base)
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


# --- a run's numbers --------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One summary's numbers as the verdict reads them: its values in the frame (``config``,
    ``device``, ``test_images``, ...: its first row) and its ``metrics`` by network and scaling
    factor (``{network: {s: {"top1": ..., ...}}}``, without the numbers it does not record)."""

    summary: pd.Series
    metrics: Mapping[str, Mapping[float, Mapping[str, float]]]

    @classmethod
    def of(cls, rows: pd.DataFrame) -> Run:
        """The run of one summary's rows."""
        metrics: dict[str, dict[float, dict[str, float]]] = {}
        for row in rows[["network", "s", *METRICS]].to_dict("records"):
            by_depth = metrics.setdefault(row.pop("network"), {})
            by_depth[row.pop("s")] = {key: value for key, value in row.items() if value == value}
        return cls(rows.iloc[0], metrics)

    @property
    def config(self) -> Mapping[str, Any]:
        return self.summary["config"]

    @property
    def seed(self) -> int:
        return int(self.summary["seed"])

    @property
    def deployed(self) -> str:
        """Its deployed Teammate (:func:`deployed_teammate`)."""
        return deployed_teammate(self.metrics)

    def row(self, network: str, s: float) -> Mapping[str, float] | None:
        """``network``'s numbers at ``s``, or ``None``."""
        by_depth = self.metrics[network]
        return next((row for key, row in by_depth.items() if abs(key - s) < 1e-6), None)

    def top1(self, network: str, s: float) -> float:
        row = self.row(network, s)
        if row is None:
            recorded = ", ".join(f"{key:g}" for key in self.metrics[network])
            raise ValueError(f"no accuracy recorded at s={s:g}; recorded: {recorded}")
        return row["top1"]

    def plans(self, network: str, factors: Sequence[float]) -> dict[int, list[float]]:
        """``{blocks kept: [its factors]}``: the depth plans of ``factors`` in ``network``."""
        plans: dict[int, list[float]] = {}
        for s in factors:
            plans.setdefault(int(self.row(network, s)["active_blocks"]), []).append(s)
        return plans

    def full_depth(self, network: str) -> Mapping[str, float]:
        """``network``'s numbers at its costliest (full) depth."""
        return max(self.metrics[network].values(), key=lambda row: row["flops"])

    def curve(self, network: str) -> tuple[np.ndarray, np.ndarray]:
        """Measured FLOPs and top-1 of ``network``'s depths, cheapest first; the depths of one
        plan (several factors, equal FLOPs) averaged."""
        top1 = pd.DataFrame(list(self.metrics[network].values())).groupby("flops")["top1"].mean()
        return top1.index.to_numpy(dtype=float), top1.to_numpy(dtype=float)


def group_seeds(frame: pd.DataFrame) -> dict[str, list[Run]]:
    """``{run: [each of its seeds, by seed]}``, runs in the frame's order."""
    grouped: dict[str, list[Run]] = {}
    for _, rows in frame.groupby("path", sort=False):
        grouped.setdefault(rows["run"].iloc[0], []).append(Run.of(rows))
    return {
        name: sorted(runs, key=lambda run: run.summary["seed"]) for name, runs in grouped.items()
    }


def deployed_teammate(metrics: Mapping[str, Any]) -> str:
    """The Teammate to deploy: best mean validation top-1 over depths (never the test split)."""
    candidates = teammates(metrics)
    if not candidates:
        raise ValueError(f"no Teammate in these metrics: {', '.join(metrics)}")

    def validation(name: str) -> float:
        rows = metrics[name].values()
        return float(np.mean([row.get("val_top1", -math.inf) for row in rows]))

    return max(candidates, key=validation)  # max keeps the first of equal Teammates


def deployed(rows: pd.DataFrame) -> str:
    """:func:`deployed_teammate` of one summary's rows."""
    return deployed_teammate(Run.of(rows).metrics)


def shown_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Each summary's rows of the network it is judged by: its deployed Teammate, else its only
    (first) network."""
    parts = []
    for _, rows in frame.groupby("path", sort=False):
        network = deployed(rows) if teammates(rows["network"]) else rows["network"].iloc[0]
        parts.append(rows[rows["network"] == network])
    return pd.concat(parts) if parts else frame.iloc[:0]


def depth_plans(
    config: Mapping[str, Any],
) -> tuple[tuple[int, ...], list[tuple[float, tuple[int, ...]]]]:
    """The stage sizes of the config's backbone, and each scaling factor of its grid with the
    depth plan it runs (blocks kept per stage)."""
    sizes = ARCHITECTURES[config["arch"]].stage_sizes
    grid = config.get("scaling_factors") or SCALING_FACTORS
    return sizes, [(float(s), depth_plan(sizes, float(s))) for s in grid]


# --- at equal measured FLOPs -----------------------------------------------------------------

#: the exit baselines, by method: their exits are compared with the deployed Teammate's depths
EXIT_BASELINES = {"byot": "BYOT", "branchynet": "BranchyNet"}


def matched_exits(cooperative: list[Run], exits: list[Run], method: str) -> list[float]:
    """The exits below their own full depth that cost at least our shallowest depth (measured
    FLOPs, every seed): only those have a depth of ours that runs within their cost."""
    cheapest = max(run.curve(run.deployed)[0][0] for run in cooperative)
    rows = exits[0].metrics[method]
    full = exits[0].full_depth(method)["flops"]
    return [key for key, row in rows.items() if cheapest <= row["flops"] < full]


def at_flops(run: Run, points: Sequence[float]) -> tuple[float, float]:
    """A cooperative run's deployed Teammate: full-depth top-1, and the top-1 of its deepest
    depth whose measured FLOPs do not exceed each of ``points`` (what it runs within that
    cost; never interpolated between depths), averaged."""
    flops, top1 = run.curve(run.deployed)
    within = [top1[np.searchsorted(flops, point, side="right") - 1] for point in points]
    return float(top1[-1]), float(np.mean(within))


def exit_accuracy(run: Run, method: str, keys: Sequence[float]) -> tuple[float, float]:
    """An exit network's full-depth top-1, and its top-1 at the exits ``keys``, averaged."""
    rows = run.metrics[method]
    return run.full_depth(method)["top1"], float(np.mean([rows[key]["top1"] for key in keys]))


#: the matched-cost table's column of our accuracy
OURS_WITHIN = "ours within its FLOPs (%)"


def matched_cost_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Every exit of the exit baselines beside the deployed Teammate within the exit's measured
    FLOPs (its deepest depth that costs no more), means over seeds; the exits not compared are
    listed with the reason."""
    groups, rows = group_seeds(frame), []
    cooperative = groups.get("cooperative")
    for method, name in EXIT_BASELINES.items():
        runs = groups.get(method)
        if not cooperative or not runs:
            continue
        inside = matched_exits(cooperative, runs, method)
        exits = runs[0].metrics[method]
        full = runs[0].full_depth(method)["flops"]
        for key, row in sorted(exits.items(), key=lambda i: i[1]["flops"]):
            theirs = np.mean([run.metrics[method][key]["top1"] for run in runs])
            ours, compared = math.nan, "no: cheaper than our shallowest"
            if key in inside:
                ours = np.mean([at_flops(run, [row["flops"]])[1] for run in cooperative])
                compared = "yes"
            elif row["flops"] >= full:
                compared = "no: full depth"
            rows.append((name, float(key), row["flops"] / 1e6, theirs, ours, compared))
    columns = ["method", "exit (share of blocks)", "MFLOPs", "exit top-1 (%)"]
    table = pd.DataFrame(rows, columns=[*columns, OURS_WITHIN, "compared"])
    table["gap (pts)"] = table[OURS_WITHIN] - table["exit top-1 (%)"]
    return table.round(2)


# --- what the runs cost -----------------------------------------------------------------------


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


def step_costs(record: Mapping[str, Any]) -> dict[str, Any]:
    """What the ``train_step`` benchmark's record measured: a cooperative step (``ours``, ms),
    one full-depth network's (``single``), and one step of each independent network
    (``theirs``: one network per distinct depth plan of the grid, ``plans`` of them, each
    estimated by the step's Teammate passes at that plan; ``None`` unless the record's passes
    cover every plan)."""
    measured = record["results"]
    sizes = ARCHITECTURES[measured["arch"]].stage_sizes
    passes: dict[int, list[float]] = {}  # blocks run -> the Teammate passes at that plan
    for part, ms in measured.get("parts_ms", {}).items():
        if part.startswith("Teammate"):
            s = 1.0 if part.endswith("full depth") else float(part.rsplit("s=", 1)[1])
            passes.setdefault(sum(depth_plan(sizes, s)), []).append(ms)
    plans = {sum(depth_plan(sizes, s)) for s in SCALING_FACTORS}
    theirs = None
    if plans <= set(passes):
        theirs = sum(float(np.mean(passes[blocks])) for blocks in plans)
    ours, single = measured["cooperative_step_ms"], measured["single_network_step_ms"]
    return {"ours": ours, "single": single, "theirs": theirs, "plans": len(plans)}
