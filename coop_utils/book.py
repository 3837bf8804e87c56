"""The book: execute the chapters with papermill, then build the Jupyter Book.

``python -m coop_utils book`` builds the *reader's book*: every chapter shows the recorded
results (``results/<profile>/<dataset>/*.json``) and the committed weights
(``results/weights/<profile>/<dataset>/<run>/<network>.pt``) and trains nothing.
``--train`` (implied at the smoke profile, which the tests and CI run) also trains, or reuses,
each chapter's own runs at ``--profile`` in its "Run it yourself" section.

Each ``notebooks/NN_*.py`` is converted with jupytext and executed with papermill into
``book/executed/`` with the parameters of ``params/<profile>.yaml`` (its ``chapters:`` section
holds each chapter's own settings), then ``jupyter-book build --warningiserror --keep-going``
runs. The chapters call the helpers of the first half of this module.
"""

from __future__ import annotations

import argparse
import datetime
import html
import inspect
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd
import yaml

from coop_utils.config import (
    ABLATIONS,
    PARAMS_DIR,
    PROFILES,
    RunConfig,
    load_config,
    parse_override,
)
from coop_utils.training import load_system
from coop_utils.verdict import (
    DEPTH_COST_COMMAND,
    RESULT_PROFILES,
    Summary,
    campaign_state,
    deployed_teammate,
    group_seeds,
    summaries_of,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
EXECUTED_DIR = Path("book") / "executed"
#: what a book root holds besides the executed chapters
BOOK_SOURCES = ("_config.yml", "_toc.yml", "book")
#: parameters every chapter declares; the rest are the chapter's own
BASE_PARAMETERS = ("profile", "data_root", "device", "seed", "run_root", "results_root", "train")
#: the profile whose campaign (``params/<profile>.yaml``, ``campaign``) the reader's book reports
CAMPAIGN_PROFILE = "preview"


def resolve_path(path: str | os.PathLike) -> Path:
    """``path`` if absolute, else relative to the repository root (not to the kernel's cwd)."""
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else REPO_ROOT / candidate


def _show(*items: Any) -> None:
    """Display figures, tables and markdown strings in this order (a figure once: the inline
    backend skips closed figures, which would otherwise follow every table at the cell's end)."""
    import matplotlib.pyplot as plt
    from IPython.display import Markdown, display

    for item in items:
        display(Markdown(item) if isinstance(item, str) else item)
        if isinstance(item, plt.Figure):
            plt.close(item)


# --- what a chapter calls ---------------------------------------------------------------------


@dataclass(frozen=True)
class Chapter:
    """The settings a chapter was executed with, and the configs of the runs it shows."""

    profile: str
    device: str
    seed: int
    data_root: str
    run_root: Path
    results_root: Path
    trains: bool = False

    @property
    def overrides(self) -> dict[str, Any]:
        """Config keys every run of the chapter takes: device, seed, and where data, runs and
        results live."""
        return {
            "device": self.device,
            "seed": self.seed,
            "data_root": self.data_root,
            "run_root": str(self.run_root),
            "results_root": str(self.results_root),
        }

    @property
    def torch_device(self):
        """The device this chapter measures on (``auto``: CUDA if available, else the CPU)."""
        from coop_utils.training import resolve_device

        return resolve_device(self.device)

    def config(self, dataset: str, method: str = "cooperative", **changes: Any) -> RunConfig:
        """``params/<profile>.yaml`` for ``dataset`` and ``method``, with ``changes``."""
        return load_config(
            self.profile, dataset=dataset, method=method, **self.overrides, **changes
        )

    def ablation(self, dataset: str, name: str, **changes: Any) -> RunConfig:
        """The cooperative run with one ablation switch (see :data:`ABLATIONS`) flipped."""
        if name not in ABLATIONS:
            raise ValueError(f"unknown ablation {name!r}; known: {', '.join(ABLATIONS)}")
        return self.config(dataset, variant=name, **ABLATIONS[name], **changes)

    def train(self, configs: Mapping[str, RunConfig], optional: bool = True) -> dict[str, Any]:
        """Run it yourself: the command of each run, then, when this build trains, the runs
        themselves (a finished one reused): ``{label: run}`` of those that ran. A dataset that
        is neither on disk nor downloadable gives a note when ``optional``, else the error."""
        from coop_utils.data import DatasetError
        from coop_utils.training import train

        _show("```bash\n" + "\n".join(map(run_command, configs.values())) + "\n```")
        if not self.trains:
            _show(
                "*This build trains nothing. The commands above train these runs; `make book "
                f"PROFILE={self.profile} TRAIN=1` trains them and shows them here.*"
            )
            return {}
        finished = {}
        for label, config in configs.items():
            try:
                finished[label] = train(config, progress=False)
            except DatasetError as error:
                if not optional:
                    raise
                _show(f"**{config.dataset} is not available here: `{label}` not trained.**")
                _show(f"> {error}")
        return finished


def run_command(config: RunConfig) -> str:
    """The ``python -m coop_utils train`` command that trains ``config``'s run."""
    base = load_config(config.profile, dataset=config.dataset, method=config.method).to_dict()
    implied = ABLATIONS.get(config.variant, {})
    named = {"profile", "dataset", "method", "variant", "seed", "device"}
    named |= {"data_root", "run_root", "results_root"}
    command = f"python -m coop_utils train --profile {config.profile} --dataset {config.dataset}"
    command += f" --method {config.method}"
    command += f" --variant {config.variant}" if config.variant else ""
    command += f" --seed {config.seed}" if config.seed else ""
    for key, value in config.to_dict().items():
        if key not in named and key not in implied and value != base[key]:
            command += f" --set {key}={json.dumps(value)}"
    return command


class _OncePerMessage(logging.Filter):
    """Let each distinct log message through once (a chapter loads the same data many times)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        new = record.getMessage() not in self.seen
        self.seen.add(record.getMessage())
        return new


def _show_library_log() -> None:
    """The library's log (what data was loaded, and whether it is generated) on stdout, once."""
    library = logging.getLogger("coop_utils")
    if any(isinstance(f, _OncePerMessage) for h in library.handlers for f in h.filters):
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.addFilter(_OncePerMessage())
    library.addHandler(handler)
    library.setLevel(logging.INFO)
    library.propagate = False


def start_chapter(
    profile: str,
    device: str = "auto",
    seed: int = 0,
    data_root: str | None = None,
    run_root: str = "runs",
    results_root: str = "results",
    train: bool = False,
) -> Chapter:
    """Open a chapter: say what it shows (recorded results; with ``train``, also its own runs
    at ``profile``, which at smoke are not results), set the figure style and the seed, and
    resolve the paths of its runs."""
    import torch
    from IPython.display import HTML, display

    from coop_utils.plots import use_book_style
    from coop_utils.runs import device_name

    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}")
    use_book_style()
    _show_library_log()
    torch.manual_seed(seed)
    data_root = data_root or os.environ.get("COOP_DATA_ROOT") or str(REPO_ROOT / "data")
    chapter = Chapter(
        profile, device, seed, data_root, resolve_path(run_root), resolve_path(results_root), train
    )
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    if profile == "smoke":
        title, kind = "Smoke run: these numbers are not results", "warning"
        text = (
            "This chapter was executed at the <b>smoke</b> profile: its <i>Run it yourself</i> "
            "sections train a tiny network for a few dozen steps on small <b>generated</b> data, "
            "on the CPU, to prove that every cell runs. Those numbers are <b>not results</b>."
        )
    elif train:
        title, kind = f"Executed at the {profile} profile", "note"
        text = f"The <i>Run it yourself</i> sections train (or reuse) {profile} runs."
    else:
        title, kind = "Recorded results", "note"
        text = (
            "This page trains nothing: it shows the runs recorded in <code>results/</code>, "
            f"{campaign_progress(chapter.results_root)[0]}. The <i>Run it yourself</i> sections "
            "give the commands that train them."
        )
    hardware = device_name(chapter.torch_device)
    display(
        HTML(
            f'<div class="admonition {kind}"><p class="admonition-title">{title}</p>'
            f"<p>{text}</p><p>Executed on {hardware}, {when}, torch {torch.__version__}.</p></div>"
        )
    )
    return chapter


def show_source(function: Any):
    """The library's own source of ``function``, as a highlighted code block."""
    from IPython.display import Markdown

    source = textwrap.dedent(inspect.getsource(function)).rstrip()  # a method is indented
    return Markdown(f"```python\n{source}\n```")


# --- recorded results -------------------------------------------------------------------------


def campaign_progress(
    results_root: str | os.PathLike, profile: str = CAMPAIGN_PROFILE
) -> tuple[str, list[str]]:
    """``("N of M campaign runs recorded so far", [names still missing])`` for the profile's
    campaign: a run counts once its summary is in ``results_root`` with the campaign's config
    (by whatever code: see :func:`verdict.campaign_state`)."""
    from coop_utils.runs import results_path

    planned = campaign_state(profile, resolve_path(results_root))
    missing = [
        results_path(config).stem
        for config, state in planned
        if state in ("to run", "recorded with another config")
    ]
    done = len(planned) - len(missing)
    return f"{done} of {len(planned)} {profile} campaign runs recorded so far", missing


def progress_note(results_root: str | os.PathLike) -> str:
    """Markdown: how much of the campaign is recorded, and which runs are still to come."""
    line, missing = campaign_progress(results_root)
    still = f" Still to come: {', '.join(f'`{name}`' for name in missing)}." if missing else ""
    return f"**{line[0].upper()}{line[1:]}** (`params/{CAMPAIGN_PROFILE}.yaml`).{still}"


def recorded(
    results_root: str | os.PathLike, dataset: str, names: Sequence[str] | None = None
) -> tuple[str | None, dict[str, Summary]]:
    """``(profile, {name: summary})`` of the best profile (full before preview, smoke never)
    with any summary on ``dataset`` (of the runs ``names``, every seed of each, if given);
    ``(None, {})`` when none is recorded."""
    for profile in RESULT_PROFILES:
        summaries = summaries_of(resolve_path(results_root), profile).get(dataset, {})
        if names is not None:
            summaries = {n: s for n, s in summaries.items() if set(group_seeds({n: s})) & {*names}}
        if summaries:
            return profile, dict(sorted(summaries.items()))
    return None, {}


def recorded_label(summaries: Mapping[str, Summary], dataset: str) -> str:
    """Markdown naming the recorded runs shown: profile, backbone, hardware, dates, code."""
    if not summaries:
        return (
            f"**No run on {dataset} is recorded yet**: this section fills itself in as the "
            "campaign's runs are recorded."
        )
    runs = list(summaries.values())
    configs = [run.get("config", {}) for run in runs]
    profile = configs[0].get("profile", "?")
    dates = sorted(str(run.get("date", "undated"))[:10] for run in runs)
    facts = [
        ", ".join(
            sorted({f"{c.get('arch', '?')} for {c.get('epochs', '?')} epochs" for c in configs})
        ),
        ", ".join(sorted({str(run.get("device", "unknown hardware")) for run in runs})),
        dates[0] if dates[0] == dates[-1] else f"{dates[0]} to {dates[-1]}",
        "code " + ", ".join(sorted({str(run.get("code_digest", "unknown")) for run in runs})),
    ]
    names = ", ".join(
        f"`{name}`" + (f" ({len(seeds)} seeds)" if len(seeds) > 1 else "")
        for name, seeds in group_seeds(summaries).items()
    )
    return f"**Recorded {profile} runs on {dataset}** ({'; '.join(facts)}): {names}."


def recorded_network(results_root, profile: str, dataset: str, name: str, network: str):
    """A recorded run's network committed in ``weights/<profile>/<dataset>/<name>/`` (fp16, as
    :func:`export.save_network` writes it), in eval mode, or ``None`` if it is not committed."""
    from coop_utils.export import load_network

    path = resolve_path(results_root) / "weights" / profile / dataset / name / f"{network}.pt"
    return load_network(path)[0] if path.exists() else None


class Samples(NamedTuple):
    """A few test images: normalised for the network, as uint8 to show, labels, class names."""

    images: Any
    raw: Any
    labels: Any
    names: list[str]


def recorded_samples(results_root, profile: str, dataset: str) -> Samples | None:
    """The committed test images of ``benchmarks/make_samples.py``, if any."""
    import numpy as np
    import torch

    path = resolve_path(results_root) / "samples" / profile / f"{dataset}.npz"
    if not path.exists():
        return None
    data = np.load(path)
    raw = torch.from_numpy(data["images"])
    mean, std = (torch.from_numpy(data[key]).view(1, -1, 1, 1) for key in ("mean", "std"))
    images = (raw.float() / 255 - mean) / std
    return Samples(images, raw, torch.from_numpy(data["labels"]), list(data["class_names"]))


def sample_test_images(config: RunConfig, count: int) -> Samples:
    """The first ``count`` test images of ``config``'s data (a run trained here)."""
    import torch

    from coop_utils.data import prepare_data

    test = prepare_data(config, torch.device("cpu")).test
    normalised = next(iter(test))[0][:count]
    labels = test.labels[: len(normalised)]
    return Samples(
        normalised, test.images[: len(normalised)], labels, [str(int(x)) for x in labels]
    )


@dataclass
class Deployed:
    """The Teammate a device would run: recorded (with its committed weights, when they are),
    else trained by this build."""

    label: str  # Markdown: where it comes from
    name: str
    config: RunConfig
    metrics: dict[str, dict[str, float]]  # its rows, by scaling factor
    net: Any  # its weights, or only its architecture when ``trained`` is false
    trained: bool
    samples: Samples | None


def deployed_network(chapter: Chapter, dataset: str, sample_count: int = 8) -> Deployed | None:
    """The deployed Teammate of the recorded cooperative run on ``dataset``, else of this build's
    own run (when it trains), else ``None``."""
    from coop_utils.data import DATASETS
    from coop_utils.models import build_model

    profile, summaries = recorded(chapter.results_root, dataset)
    if "cooperative" in summaries:
        summary = summaries["cooperative"]
        name = deployed_teammate(summary["metrics"])
        values = dict(summary["config"])
        config = load_config(values.pop("profile"), **values)
        net = recorded_network(chapter.results_root, profile, dataset, "cooperative", name)
        trained = net is not None
        if not trained:  # the architecture alone: what FLOPs and latency need
            info = DATASETS[dataset]
            size = config.image_size or info.image_size
            net = build_model(config.arch, config.num_classes or info.num_classes, size).eval()
        label = recorded_label({"cooperative": summary}, dataset)
        samples = recorded_samples(chapter.results_root, profile, dataset)
        return Deployed(label, name, config, summary["metrics"][name], net, trained, samples)
    if not chapter.trains:
        return None
    run = chapter.train({"cooperative": chapter.config(dataset)}).get("cooperative")
    if run is None:
        return None
    name = deployed_teammate(run.metrics)
    net = load_system(run).teammates[int(name.removeprefix("teammate"))]
    label = f"**This build's {run.config.profile} run** (`{run.directory}`)."
    samples = sample_test_images(run.config, sample_count)
    return Deployed(label, name, run.config, run.metrics[name], net, True, samples)


#: the configuration keys a training chapter shows above its run
RUN_KEYS = (
    "data", "arch", "epochs", "batch_size", "lr", "temperature", "teammates", "use_leader",
    "mutual", "sfsl", "gating", "tau", "factors_per_teammate", "num_classes", "image_size",
)  # fmt: skip


def config_table(config: RunConfig, keys: Sequence[str] = RUN_KEYS) -> pd.DataFrame:
    """One row: the values of ``keys`` in ``config``, indexed by its profile."""
    return pd.DataFrame({key: [str(getattr(config, key))] for key in keys}, index=[config.profile])


def accuracy_table(frame: pd.DataFrame, index: str = "network") -> pd.DataFrame:
    """Test top-1 of each network (rows; or each value of ``index``) at each scaling factor
    (columns) of a metrics frame, the mean over seeds where the frame holds several; "–" where
    a network has no such depth."""
    table = frame.pivot_table(index=index, columns="s", values="top1", aggfunc="mean").round(1)
    table.columns = pd.Index([f"{s:g}" for s in table.columns], name="s")
    return dashes(table)  # the Leader has one depth


def dashes(table: pd.DataFrame, decimals: int | Mapping[str, int] | None = None) -> pd.DataFrame:
    """``table`` to show: "–" where a value is missing, numbers with ``decimals`` if given (for
    every numeric column, or ``{column: decimals}``)."""
    if decimals is None or isinstance(decimals, Mapping):
        places = dict(decimals or {})
    else:
        places = dict.fromkeys(table.select_dtypes("number").columns, decimals)
    shown = table.astype(object)
    for column, digits in places.items():
        shown[column] = table[column].map(lambda v, d=digits: f"{v:.{d}f}")
    return shown.where(table.notna(), "–")


def seeds_frame(summaries: Mapping[str, Summary], name: str = "cooperative") -> pd.DataFrame:
    """Every network of every seed of ``name``: :func:`plots.metrics_frame` rows with ``seed``."""
    from coop_utils.plots import metrics_frame

    runs = group_seeds(summaries).get(name, [])
    return pd.concat(
        [metrics_frame(run["metrics"], seed=run["config"].get("seed", 0)) for run in runs]
        or [pd.DataFrame(columns=["network", "s", "top1", "seed"])],
        ignore_index=True,
    )


def as_summaries(finished: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """This build's finished runs shaped like results summaries, keyed by their results name."""
    from coop_utils.runs import results_path

    return {
        results_path(run.config).stem: {"config": run.config.to_dict(), "metrics": run.metrics}
        for run in finished.values()
    }


def show_comparison(summaries: Mapping[str, Summary], what: str) -> None:
    """Every method of ``summaries`` (seed 0) at every depth against depth, FLOPs and latency,
    as a figure and a table, then the exit baselines at equal measured FLOPs."""
    from coop_utils import plots
    from coop_utils.verdict import matched_cost_table

    methods = [m for m in ("cooperative", "independent", "byot", "branchynet") if m in summaries]
    frame = pd.concat(plots.method_frame(summaries[m]["metrics"], m) for m in methods)
    matched = matched_cost_table(summaries)
    items = [
        plots.method_comparison_figure(frame, f"Every method at every depth ({what})"),
        plots.comparison_table(frame),
    ]
    if not matched.empty:
        items.append(plots.matched_cost_figure(matched, f"Exits at equal FLOPs ({what})"))
        shown = matched.set_index(["method", "exit (share of blocks)"])
        items.append(dashes(shown, decimals=2))  # an exit not compared has no number
    _show(*items)


def recorded_logs(
    results_root: str | os.PathLike, summaries: Mapping[str, Summary]
) -> dict[str, list[dict[str, str]]]:
    """``{name: per-epoch rows}`` of the recorded runs whose log is committed beside their
    summary (``<profile>/<dataset>/logs/<name>.csv``, written by ``make results``)."""
    from coop_utils.export import log_path
    from coop_utils.runs import read_log

    logs = {}
    for name, summary in summaries.items():
        config = summary.get("config", {})
        summary_path = resolve_path(results_root) / config.get("profile", "?")
        path = log_path(summary_path / config.get("dataset", "?") / f"{name}.json")
        if path.exists():
            logs[name] = read_log(path)
    return logs


def show_recorded_depths(
    results_root: str | os.PathLike,
    dataset: str,
    networks: Sequence[str],
    name: str = "cooperative",
) -> None:
    """The recorded runs of ``name`` on ``dataset``: what ran them, the test top-1 of
    ``networks`` at every depth (figure, then table, mean over seeds) and each seed's training
    curves where its log is committed."""
    profile, summaries = recorded(results_root, dataset, [name])
    _show_depths(
        recorded_label(summaries, dataset),
        seeds_frame(summaries, name).query("network in @networks"),
        recorded_logs(results_root, summaries),
        f"recorded {profile} runs ({dataset})",
    )


def show_run(run: Any, dataset: str, profile: str, networks: Sequence[str]) -> None:
    """This build's run of a chapter: where it lives, the test top-1 of ``networks`` at every
    depth (figure and table) and its training curves."""
    from coop_utils.plots import metrics_frame

    _show_depths(
        f"{'Reused' if run.reused else 'Trained'}: `{run.directory}`, {run.wall_time_s:.0f} s.",
        metrics_frame(run.metrics).query("network in @networks"),
        {run.config.method: run.log},
        f"this build's run ({dataset}, {profile})",
    )


def _show_depths(label: str, frame: pd.DataFrame, logs: Mapping[str, Sequence], title: str) -> None:
    """``label``, then the test top-1 of a metrics frame at every depth (figure and table) and
    the training curves of ``logs``, each where there is something to show."""
    from coop_utils import plots

    items: list[Any] = [label]
    if not frame.empty:
        items += [
            plots.accuracy_by_depth_figure(frame, f"Test accuracy by depth, {title}"),
            accuracy_table(frame),
        ]
    if logs:
        items.append(plots.training_curves_figure(logs, f"Training, {title}"))
    _show(*items)


def verdict_html(table: pd.DataFrame) -> Any:
    """A claim table as a narrow HTML table: claim, dataset, our number, verdict; each claim's
    rule, evidence and (when it is open) what would decide it fold out under it."""
    from IPython.display import HTML

    rows = []
    for row in table.itertuples():
        verdict = str(row.verdict)
        kind = verdict.split(" (")[0].replace(" ", "-")
        decide = f"<p><b>To decide:</b> {html.escape(row.decide)}</p>" if row.decide else ""
        rows.append(
            f"<tr><td><details><summary>{html.escape(row.claim)}</summary><p><b>Rule:</b> "
            f"{html.escape(row.rule)}</p><p><b>Evidence:</b> {html.escape(row.evidence)}</p>"
            f"{decide}</details></td><td>{html.escape(row.dataset)}</td>"
            f"<td>{html.escape(row.measured)}</td>"
            f'<td class="verdict-{kind}">{html.escape(verdict)}</td></tr>'
        )
    return HTML(
        '<table class="verdicts"><thead><tr><th>claim (click for its rule)</th><th>dataset</th>'
        "<th>our number: difference ± 95 % interval</th><th>verdict</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )


# --- recorded benchmarks ----------------------------------------------------------------------

#: the benchmarks whose records the book shows, and the command that writes each record
BENCHMARKS = {
    "depth_cost": DEPTH_COST_COMMAND,
    "train_step": "python benchmarks/train_step.py --record results/benchmarks/train_step.json",
    "data_throughput": "python benchmarks/data_throughput.py "
    "--record results/benchmarks/data_throughput.json",
}


def benchmark_records(results_root: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """``{name: record}`` of each benchmark recorded in ``<results_root>/benchmarks/``."""
    folder = resolve_path(results_root) / "benchmarks"
    paths = {name: folder / f"{name}.json" for name in BENCHMARKS}
    return {name: json.loads(path.read_text()) for name, path in paths.items() if path.exists()}


def benchmark_label(record: Mapping[str, Any]) -> str:
    """Where, when and by which command a benchmark record was measured."""
    return (
        f"*Measured on {record['device']} ({record['cpu_count']} cores), torch {record['torch']}, "
        f"commit {record['git_commit']}, {record['date'][:10]}, by* `{record['command']}`"
    )


# --- the runner -----------------------------------------------------------------------------


def chapter_paths() -> list[Path]:
    """The chapter sources, ``notebooks/NN_name.py``, in order."""
    return sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.py"))


def select_chapters(names: Sequence[str] | None) -> list[Path]:
    """Chapters by number (``1``, ``01``) or by name (``01_dynamic_depth_gating``)."""
    every = chapter_paths()
    if not names:
        return every
    chosen = []
    for name in names:
        matches = [
            path
            for path in every
            if name in (path.stem, path.stem[:2])
            or (name.isdigit() and int(name) == int(path.stem[:2]))
        ]
        if not matches:
            known = ", ".join(path.stem for path in every)
            raise ValueError(f"unknown chapter {name!r}; known: {known}")
        chosen += [path for path in matches if path not in chosen]
    return chosen


def profile_parameters(
    profile: str, params_dir: str | os.PathLike | None = None, train: bool = False
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The parameters every chapter gets at ``profile`` (``train``: whether it trains its own
    runs), and each chapter's own settings."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}")
    path = Path(params_dir or PARAMS_DIR) / f"{profile}.yaml"
    values = yaml.safe_load(path.read_text()) or {}
    base = {
        "profile": profile,
        "data_root": values.get("data_root"),
        "device": values.get("device", "auto"),
        "seed": values.get("seed", 0),
        "run_root": values.get("run_root", "runs"),
        "results_root": values.get("results_root", "results"),
        "train": train,
    }
    settings = values.get("chapters") or {}
    known = {path.stem for path in chapter_paths()}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ValueError(
            f"{path}: 'chapters' names unknown chapter(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(known))}"
        )
    return base, settings


@dataclass
class ChapterRun:
    """How executing one chapter went."""

    name: str
    seconds: float
    output: Path
    error: str | None = None


@dataclass
class BookReport:
    """What ``build_book`` did: each chapter's time and error, and the build's outcome."""

    profile: str
    chapters: list[ChapterRun] = field(default_factory=list)
    build_seconds: float = 0.0
    build_returncode: int | None = None
    build_output: str = ""
    total_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(c.error is None for c in self.chapters) and self.build_returncode in (0, None)

    def timings(self) -> str:
        width = max([len(c.name) for c in self.chapters] + [len("jupyter-book build")])
        lines = [f"{'step':<{width}}  seconds  ({self.profile} profile)"]
        for chapter in self.chapters:
            status = "" if chapter.error is None else "  FAILED"
            lines.append(f"{chapter.name:<{width}}  {chapter.seconds:7.1f}{status}")
        if self.build_returncode is not None:
            status = f"  FAILED (exit {self.build_returncode})" if self.build_returncode else ""
            lines.append(f"{'jupyter-book build':<{width}}  {self.build_seconds:7.1f}{status}")
        lines.append(f"{'total':<{width}}  {self.total_seconds:7.1f}")
        return "\n".join(lines)


def _failure(name: str, error: BaseException) -> str:
    from papermill.exceptions import PapermillExecutionError

    if isinstance(error, PapermillExecutionError):
        first_line = next((line for line in error.source.splitlines() if line.strip()), "")
        return (
            f"chapter {name} failed in cell {error.cell_index} (execution count "
            f"{error.exec_count}, starting {first_line.strip()!r}): {error.ename}: {error.evalue}"
        )
    return f"chapter {name} failed: {type(error).__name__}: {error}"


#: seconds a cell may take when it trains nothing or trains at smoke: a stuck kernel fails,
#: naming the cell, rather than hang a build (preview and full training has no limit)
CELL_TIMEOUT_S = 600
#: cell tags the book removes: the defaults of the parameters and papermill's injected values
REMOVED_TAGS = ("parameters", "injected-parameters")


def _prepare_for_the_book(path: Path) -> None:
    """Tag the parameter cells ``remove-cell`` and drop any widget state, so the HTML page
    shows neither and loads no widget manager."""
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        tags = cell.metadata.get("tags", [])
        if any(tag in tags for tag in REMOVED_TAGS) and "remove-cell" not in tags:
            cell.metadata["tags"] = [*tags, "remove-cell"]
    notebook.metadata.pop("widgets", None)
    nbformat.write(notebook, path)


def execute_chapter(source: Path, output: Path, parameters: Mapping[str, Any]) -> ChapterRun:
    """Convert ``source`` with jupytext and execute it with papermill into ``output``."""
    import jupytext
    import papermill

    started = time.perf_counter()
    output.parent.mkdir(parents=True, exist_ok=True)
    error = None
    trains_long = parameters.get("profile", "smoke") != "smoke" and parameters.get("train", True)
    with tempfile.TemporaryDirectory() as scratch:
        converted = Path(scratch) / f"{source.stem}.ipynb"
        try:
            jupytext.write(jupytext.read(source), converted)
            os.environ["TQDM_DISABLE"] = "1"  # read by tqdm in the kernel: no progress bars
            papermill.execute_notebook(
                str(converted),
                str(output),
                parameters=dict(parameters),
                cwd=str(REPO_ROOT),
                progress_bar=False,
                log_output=False,
                execution_timeout=None if trains_long else CELL_TIMEOUT_S,
            )
            _prepare_for_the_book(output)
        except Exception as exception:  # a failing chapter is reported, the others still run
            error = _failure(source.stem, exception)
    return ChapterRun(source.stem, time.perf_counter() - started, output, error)


def _placeholder(source: Path, output: Path) -> None:
    """A page for a chapter listed in the table of contents but not executed yet."""
    import jupytext
    import nbformat

    title = next(
        (
            cell.source.splitlines()[0]
            for cell in jupytext.read(source).cells
            if cell.cell_type == "markdown" and cell.source.startswith("# ")
        ),
        f"# {source.stem}",
    )
    text = (
        f"{title}\n\nThis chapter has not been executed yet. Run "
        f"`python -m coop_utils book --chapters {source.stem[:2]}` to execute it."
    )
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(text)])
    notebook.metadata["kernelspec"] = dict(
        name="python3", display_name="Python 3", language="python"
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, output)


def _stage_sources(book_root: Path) -> None:
    """Copy the book's prose and configuration into another book root (tests build there)."""
    for name in BOOK_SOURCES:
        source, target = REPO_ROOT / name, book_root / name
        if source.is_dir():
            shutil.copytree(
                source, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("executed")
            )
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def build_book(
    profile: str = "preview",
    train: bool = False,
    chapters: Sequence[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    book_root: str | os.PathLike | None = None,
    build: bool = True,
    echo: Callable[[str], None] = print,
    capture_build: bool = False,
) -> BookReport:
    """Execute ``chapters`` (default: all) at ``profile``, then build the book.

    Without ``train`` (the reader's book) the chapters show recorded results and train nothing;
    with it, or at the smoke profile, each chapter also trains (or reuses) its own runs.

    ``overrides`` set a parameter in every chapter that declares it (``run_root=/tmp/runs``).
    ``book_root`` (default: the repository) receives ``book/executed/`` and ``_build/``; another
    folder gets a copy of the book's prose first, so a test build leaves the repository alone.
    The build is skipped when a chapter fails.
    """
    import jupytext
    import papermill

    started = time.perf_counter()
    train = train or profile == "smoke"
    base, settings = profile_parameters(profile, train=train)
    overrides = dict(overrides or {})
    root = REPO_ROOT if book_root is None else Path(book_root).resolve()
    if root != REPO_ROOT:
        _stage_sources(root)
    report = BookReport(profile)
    unused = set(overrides)
    with tempfile.TemporaryDirectory() as scratch:
        plans = []
        for source in select_chapters(chapters):
            converted = Path(scratch) / f"{source.stem}.ipynb"
            jupytext.write(jupytext.read(source), converted)
            declared = set(papermill.inspect_notebook(str(converted)))
            own = dict(settings.get(source.stem) or {})
            undeclared = sorted(set(own) - declared)
            if undeclared:
                raise ValueError(
                    f"params/{profile}.yaml sets {', '.join(undeclared)} for chapter "
                    f"{source.stem}, which declares only: {', '.join(sorted(declared))}"
                )
            merged = {**base, **own, **overrides}
            parameters = {key: value for key, value in merged.items() if key in declared}
            unused -= declared
            plans.append((source, parameters))
    if unused:
        raise ValueError(
            f"no selected chapter declares the parameter(s) {', '.join(sorted(unused))}"
        )

    mode = f"training at the {profile} profile" if train else "reader's book, training nothing"
    echo(f"executing {len(plans)} chapter(s), {mode}, into {root / EXECUTED_DIR}")
    for source, parameters in plans:
        result = execute_chapter(source, root / EXECUTED_DIR / f"{source.stem}.ipynb", parameters)
        report.chapters.append(result)
        echo(
            f"  {result.name}: {result.seconds:.1f} s" + ("" if result.error is None else " FAILED")
        )
        if result.error is not None:
            echo(f"    {result.error}")

    if build and report.ok:  # no chapter failed
        for source in chapter_paths():
            output = root / EXECUTED_DIR / f"{source.stem}.ipynb"
            if not output.exists():
                _placeholder(source, output)
        echo(f"building the book: jupyter-book build {root} --warningiserror --keep-going")
        build_started = time.perf_counter()
        beside = Path(sys.executable).with_name("jupyter-book")
        jupyter_book = str(beside) if beside.exists() else shutil.which("jupyter-book")
        if jupyter_book is None:
            raise ValueError("jupyter-book is not installed: run `make book` (it creates .venv)")
        completed = subprocess.run(
            [jupyter_book, "build", str(root), "--warningiserror", "--keep-going"],
            capture_output=capture_build,
            text=True,
            check=False,
        )
        report.build_seconds = time.perf_counter() - build_started
        report.build_returncode = completed.returncode
        if capture_build:
            report.build_output = completed.stdout + completed.stderr
    elif not report.ok:
        echo("not building the book: a chapter failed")
    report.total_seconds = time.perf_counter() - started
    echo(report.timings())
    if report.build_returncode == 0:
        echo(f"the book: {root / '_build' / 'html' / 'index.html'}")
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--profile",
        default="preview",
        choices=PROFILES,
        help="the profile of the chapters' runs (default: preview); smoke implies --train",
    )
    parser.add_argument(
        "--train",
        action="store_true",
        help="also train (or reuse) each chapter's own runs at --profile; default: the reader's "
        "book, recorded results only",
    )
    parser.add_argument(
        "--chapters",
        nargs="+",
        metavar="NN",
        help="execute only these chapters (01 or 01_dynamic_depth_gating); default: all",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a chapter parameter in every chapter that declares it (e.g. device=cuda)",
    )
    parser.add_argument("--no-build", action="store_true", help="execute only, build nothing")
    parser.add_argument(
        "--book-root",
        help="folder that receives book/executed/ and _build/ (default: the repository)",
    )


def run(args: argparse.Namespace) -> int:
    overrides = dict(parse_override(item) for item in args.set)
    report = build_book(
        args.profile, args.train, args.chapters, overrides, args.book_root, not args.no_build
    )
    return 0 if report.ok else 1
