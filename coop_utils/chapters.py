"""What a chapter calls: open it, show the recorded results and the committed weights, and
(when the build trains) train its own runs.

Every result chapter opens with :func:`start_chapter`, shows what ``results/`` records (read
once, by :mod:`coop_utils.results`: the summaries, the per-epoch logs beside them, the
committed weights, the sample images and the benchmark records), and ends with a "Run it
yourself" section whose :meth:`Chapter.train` prints the commands and, only in a build that
trains, runs them. :mod:`coop_utils.book` executes the chapters; nothing here knows how.
"""

from __future__ import annotations

import datetime
import functools
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import HTML, Markdown, display

from coop_utils import plots, results, training, verdict
from coop_utils.config import ABLATIONS, PROFILES, REPO_ROOT, RunConfig, campaign, load_config
from coop_utils.datasets import DATASETS, DatasetError
from coop_utils.export import load_network
from coop_utils.listings import wrap_command
from coop_utils.loaders import prepare_data
from coop_utils.models import build_model
from coop_utils.results import Results
from coop_utils.runs import device_name, results_path
from coop_utils.verdict import DEPTH_COST_COMMAND

#: the profile whose campaign (``params/<profile>.yaml``, ``campaign``) the reader's book reports
CAMPAIGN_PROFILE = "preview"
#: how the book names each network of a cooperative run
NETWORK_NAMES = {
    "teammate0": "Teammate 0",
    "teammate1": "Teammate 1",
    "teammate_mean": "Teammates' mean",
    "leader": "Leader",
}


def resolve_path(path: str | os.PathLike) -> Path:
    """``path`` if absolute, else relative to the repository root (not to the kernel's cwd)."""
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else REPO_ROOT / candidate


def _show(*items: Any) -> None:
    """Display figures, tables and markdown strings in this order (a figure once: the inline
    backend skips closed figures, which would otherwise follow every table at the cell's end)."""
    for item in items:
        display(Markdown(item) if isinstance(item, str) else item)
        if isinstance(item, plt.Figure):
            plt.close(item)


def show(*items: Any) -> None:
    """Display figures, tables and Markdown strings in this order, each figure once."""
    _show(*items)


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

    @functools.cached_property
    def results(self) -> Results:
        """What ``results_root`` records, read once."""
        return results.load(self.results_root)

    @property
    def torch_device(self):
        """The device this chapter measures on (``auto``: CUDA if available, else the CPU)."""
        return training.resolve_device(self.device)

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
        commands = (wrap_command(run_command(config)) for config in configs.values())
        _show("```bash\n" + "\n".join(commands) + "\n```")
        if not self.trains:
            _show(
                "*This build trains nothing. The commands above train these runs; `make book "
                f"PROFILE={self.profile} TRAIN=1` trains them and shows them here.*"
            )
            return {}
        finished = {}
        for label, config in configs.items():
            try:
                finished[label] = training.train(config, progress=False)
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


def _show_library_log() -> None:
    """The library's log (what data was loaded, and whether it is generated) on stdout, set up
    once; each distinct message shows once (a chapter loads the same data many times)."""
    library = logging.getLogger("coop_utils")
    if any(handler.get_name() == __name__ for handler in library.handlers):
        return
    seen: set[str] = set()

    def once(record: logging.LogRecord) -> bool:
        new = record.getMessage() not in seen
        seen.add(record.getMessage())
        return new

    handler = logging.StreamHandler(sys.stdout)
    handler.set_name(__name__)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.addFilter(once)
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
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}")
    plots.use_book_style()
    _show_library_log()
    torch.manual_seed(seed)
    data_root = data_root or os.environ.get("COOP_DATA_ROOT") or str(REPO_ROOT / "data")
    chapter = Chapter(
        profile, device, seed, data_root, resolve_path(run_root), resolve_path(results_root), train
    )
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    hardware = device_name(chapter.torch_device)
    executed = f"Executed on {hardware}, {when}, torch {torch.__version__}."
    if profile != "smoke" and not train:  # the reader's book: one line, the same on every page
        display(
            HTML(
                '<p class="chapter-provenance">Recorded results: this page trains nothing and '
                f"shows the runs of <code>results/</code> ({campaign_progress(chapter.results)[0]})"
                f". {executed}</p>"
            )
        )
        return chapter
    if profile == "smoke":
        title, kind = "Smoke run: these numbers are not results", "warning"
        text = (
            "This chapter was executed at the <b>smoke</b> profile: its <i>Run it yourself</i> "
            "sections train a tiny network for a few dozen steps on small <b>generated</b> data, "
            "on the CPU, to prove that every cell runs. Those numbers are <b>not results</b>."
        )
    else:
        title, kind = f"Executed at the {profile} profile", "note"
        text = f"The <i>Run it yourself</i> sections train (or reuse) {profile} runs."
    display(
        HTML(
            f'<div class="admonition {kind}"><p class="admonition-title">{title}</p>'
            f"<p>{text}</p><p>{executed}</p></div>"
        )
    )
    return chapter


# --- recorded results -------------------------------------------------------------------------


def campaign_progress(
    recorded: Results, profile: str = CAMPAIGN_PROFILE, name: str = "campaign"
) -> tuple[str, list[str]]:
    """``("N of M campaign runs recorded so far", [names still missing])`` for the profile's
    campaign ``name`` (``"all M ... recorded"`` once none is missing): a run counts once its
    summary is recorded with the campaign's config (by whatever code: see
    :func:`results.campaign_state`)."""
    planned = results.campaign_state(profile, recorded, name=name)
    missing = [
        results_path(config).stem
        for config, state in planned
        if state in ("to run", "recorded with another config")
    ]
    done, what = len(planned) - len(missing), "" if name == "campaign" else f" {name}"
    if not missing:
        return f"all {len(planned)} {profile}{what} campaign runs recorded", missing
    return f"{done} of {len(planned)} {profile}{what} campaign runs recorded so far", missing


def progress_note(recorded: Results, names: Sequence[str] = ("campaign",)) -> str:
    """Markdown: how much of each campaign ``names`` of the profile is recorded, and which
    runs are still to come."""
    lines = []
    for name in names:
        line, missing = campaign_progress(recorded, name=name)
        seeds: dict[str, list[str]] = {}  # the seeds of each run still to come
        for file in missing:
            seed = file.rpartition("-seed")[2]
            seeds.setdefault(results.run_name(file), []).append(seed if seed.isdigit() else "0")
        to_come = [
            f"`{run}`" + ("" if of == ["0"] else f" (seed{'s' * (len(of) > 1)} {', '.join(of)})")
            for run, of in seeds.items()
        ]
        still = f" Still to come: {', '.join(to_come)}." if missing else ""
        lines.append(f"**{line[0].upper()}{line[1:]}** (`params/{CAMPAIGN_PROFILE}.yaml`).{still}")
    return "\n\n".join(lines)


def recorded_label(rows: pd.DataFrame, dataset: str) -> str:
    """Markdown naming the recorded runs shown: profile, backbone, hardware, dates, code."""
    if rows.empty:
        planned = {
            load_config(CAMPAIGN_PROFILE, **run).dataset for run in campaign(CAMPAIGN_PROFILE)
        }
        if dataset in planned or not planned:
            return (
                f"**No run on {dataset} is recorded yet**: this section fills itself in as the "
                "campaign's runs are recorded."
            )
        return (
            f"**No run on {dataset} is recorded**: the {CAMPAIGN_PROFILE} campaign "
            f"(`params/{CAMPAIGN_PROFILE}.yaml`) trains on {', '.join(sorted(planned))} only "
            "(the summary page's *Scope* says why). *Run it yourself* gives the commands that "
            "train this chapter's runs where the dataset is available."
        )
    runs = results.summaries(rows)
    configs = list(runs["config"])
    profile = configs[0].get("profile", "?")
    dates = sorted(str(date or "undated")[:10] for date in runs["date"])
    facts = [
        ", ".join(
            sorted({f"{c.get('arch', '?')} for {c.get('epochs', '?')} epochs" for c in configs})
        ),
        ", ".join(sorted({str(device or "unknown hardware") for device in runs["device"]})),
        dates[0] if dates[0] == dates[-1] else f"{dates[0]} to {dates[-1]}",
        "code " + ", ".join(sorted({str(code or "unknown") for code in runs["code_digest"]})),
    ]
    names = ", ".join(
        f"`{name}`" + (f" ({seeds} seeds)" if seeds > 1 else "")
        for name, seeds in runs.groupby("run", sort=False).size().items()
    )
    return f"**Recorded {profile} runs on {dataset}** ({'; '.join(facts)}): {names}."


def recorded_network(recorded: Results, profile: str, dataset: str, name: str, network: str):
    """A recorded run's committed network (the summary ``name``'s), in eval mode, or ``None``
    if it is not committed."""
    path = recorded.weights(profile, dataset, name, network)
    return load_network(path)[0] if path.exists() else None


class Samples(NamedTuple):
    """A few test images: normalised for the network, as uint8 to show, labels, class names."""

    images: Any
    raw: Any
    labels: Any
    names: list[str]


def recorded_samples(recorded: Results, config: RunConfig) -> Samples | None:
    """The committed test images of ``benchmarks/make_samples.py`` for ``config``'s profile and
    dataset, if any; samples prepared for other classes or another image size are refused."""
    path = recorded.samples(config.profile, config.dataset)
    if not path.exists():
        return None
    data = np.load(path)
    info = DATASETS[config.dataset]
    wanted = (config.num_classes or info.num_classes, config.image_size or info.image_size)
    found = tuple(int(data[key]) if key in data else None for key in ("num_classes", "image_size"))
    if found != wanted or int(data["labels"].max()) >= wanted[0]:
        raise ValueError(
            f"{path} holds samples of {found[0]} classes at {found[1]} px, not the run's "
            f"{wanted[0]} at {wanted[1]}: rerun `python benchmarks/make_samples.py --profile "
            f"{config.profile} --dataset {config.dataset} --data-root DATA`"
        )
    raw = torch.from_numpy(data["images"])
    mean, std = (torch.from_numpy(data[key]).view(1, -1, 1, 1) for key in ("mean", "std"))
    images = (raw.float() / 255 - mean) / std
    return Samples(images, raw, torch.from_numpy(data["labels"]), list(data["class_names"]))


def sample_test_images(config: RunConfig, count: int) -> Samples:
    """The first ``count`` test images of ``config``'s data (a run trained here)."""
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
    frame: pd.DataFrame  # its rows, by scaling factor (:func:`plots.metrics_frame`)
    net: Any  # its weights, or only its architecture when ``trained`` is false
    trained: bool
    samples: Samples | None


def deployed_network(chapter: Chapter, dataset: str, sample_count: int = 8) -> Deployed | None:
    """The deployed Teammate of the recorded cooperative run on ``dataset``, else of this build's
    own run (when it trains), else ``None``."""
    profile, rows = chapter.results.campaign(dataset)
    summary = rows[rows["file"] == "cooperative"]
    if not summary.empty:
        name = results.deployed(summary)
        config = results.config_of(summary)
        net = recorded_network(chapter.results, profile, dataset, "cooperative", name)
        trained = net is not None
        if not trained:  # the architecture alone: what FLOPs and latency need
            info = DATASETS[dataset]
            size = config.image_size or info.image_size
            net = build_model(config.arch, config.num_classes or info.num_classes, size).eval()
        label = recorded_label(summary, dataset)
        samples = recorded_samples(chapter.results, config)
        frame = summary[summary["network"] == name].sort_values("s", ignore_index=True)
        return Deployed(label, name, config, frame, net, trained, samples)
    if not chapter.trains:
        return None
    run = chapter.train({"cooperative": chapter.config(dataset)}).get("cooperative")
    if run is None:
        return None
    name = results.deployed_teammate(run.metrics)
    net = training.load_system(run).teammates[int(name.removeprefix("teammate"))]
    label = f"**This build's {run.config.profile} run** (`{run.directory}`)."
    samples = sample_test_images(run.config, sample_count)
    frame = plots.metrics_frame({name: run.metrics[name]})
    return Deployed(label, name, run.config, frame, net, True, samples)


#: the configuration keys a training chapter shows above its run
RUN_KEYS = (
    "data", "arch", "epochs", "batch_size", "lr", "temperature", "teammates", "use_leader",
    "mutual", "sfsl", "gating", "tau", "factors_per_teammate", "num_classes", "image_size",
)  # fmt: skip


def config_table(config: RunConfig, keys: Sequence[str] = RUN_KEYS) -> pd.DataFrame:
    """One column, named by the profile: the value of each of ``keys`` in ``config`` (one row
    each, so that the table stays narrow)."""
    values = {key: [str(getattr(config, key))] for key in keys}
    return pd.DataFrame(values, index=[f"{config.profile} profile"]).T


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


def seeds_frame(frame: pd.DataFrame, name: str = "cooperative") -> pd.DataFrame:
    """Every network of every seed of the run ``name`` in a results frame, by seed, network and
    ``s``."""
    rows = frame[frame["run"] == name]
    return rows.sort_values(["seed", "network", "s"], kind="stable", ignore_index=True)


def as_frame(finished: Mapping[str, Any]) -> pd.DataFrame:
    """This build's finished runs as a results frame, each named by its results file."""
    return results.frame_of(
        {
            results_path(run.config).stem: {"config": run.config.to_dict(), "metrics": run.metrics}
            for run in finished.values()
        }
    )


def show_comparison(frame: pd.DataFrame, what: str) -> None:
    """Every method of ``summaries`` at every depth against depth, FLOPs and latency (mean over
    seeds, 95 % t-intervals), as a figure and a table, then the exit baselines at equal
    measured FLOPs."""
    methods = ("cooperative", "independent", "byot", "branchynet")
    recorded, frame = frame, plots.method_seeds_frame(frame, methods)
    seeds = frame.groupby("method")["seed"].nunique()
    counts = f"{seeds.min()}" if seeds.min() == seeds.max() else f"{seeds.min()}-{seeds.max()}"
    title = f"Every method at every depth ({what}; mean of {counts} seed"
    title += "s)" if seeds.max() > 1 else ")"
    items = [plots.method_comparison_figure(frame, title), plots.comparison_table(frame)]
    matched = verdict.matched_cost_table(recorded)
    if not matched.empty:
        items.append(plots.matched_cost_figure(matched, f"Exits at equal FLOPs ({what})"))
        shown = matched.set_index(["method", "exit (share of blocks)"])
        items.append(dashes(shown, decimals=2))  # an exit not compared has no number
    _show(*items)


def show_recorded_depths(
    recorded: Results, dataset: str, networks: Sequence[str], name: str = "cooperative"
) -> None:
    """The recorded runs of ``name`` on ``dataset``: what ran them, the test top-1 of
    ``networks`` at every depth (figure, then table, mean over seeds) and each seed's training
    curves where its log is committed."""
    profile, rows = recorded.campaign(dataset, [name])
    _show_depths(
        recorded_label(rows, dataset),
        seeds_frame(rows, name).query("network in @networks"),
        recorded.logs_of(rows),
        f"recorded {profile} runs ({dataset})",
    )


def show_run(run: Any, dataset: str, profile: str, networks: Sequence[str]) -> None:
    """This build's run of a chapter: where it lives, the test top-1 of ``networks`` at every
    depth (figure and table) and its training curves."""
    _show_depths(
        f"{'Reused' if run.reused else 'Trained'}: `{run.directory}`, {run.wall_time_s:.0f} s.",
        plots.metrics_frame(run.metrics).query("network in @networks"),
        {run.config.method: run.log},
        f"this build's run ({dataset}, {profile})",
    )


def _show_depths(label: str, frame: pd.DataFrame, logs: Mapping[str, Sequence], title: str) -> None:
    """``label``, then the test top-1 of a metrics frame at every depth (figure and table, each
    network by its name in :data:`NETWORK_NAMES`) and the training curves of ``logs``, each
    where there is something to show."""
    items: list[Any] = [label]
    frame = frame.assign(network=frame["network"].map(lambda name: NETWORK_NAMES.get(name, name)))
    if not frame.empty:
        items += [
            plots.accuracy_by_depth_figure(frame, f"Test accuracy by depth, {title}"),
            accuracy_table(frame),
        ]
    if logs:
        items.append(plots.training_curves_figure(logs, f"Training, {title}"))
    _show(*items)


def deployed_note(recorded: Results, dataset: str, name: str = "cooperative") -> str:
    """Markdown: which Teammate each recorded seed of ``name`` deploys, and the full-depth test
    top-1 of each network the book quotes (means over the seeds), so that every page's number
    can be told apart: the deployed Teammate (the methods' comparisons), Teammate 0, the
    Teammates' mean (the cost table, the ablations) and the Leader."""
    _, rows = recorded.campaign(dataset, [name])
    rows = rows[rows["run"] == name]
    if rows.empty or not results.teammates(rows["network"]):
        return ""
    shown = results.shown_rows(rows)
    chosen = shown.groupby("seed")["network"].first()
    seeds = len(chosen)

    def full_depth(part: pd.DataFrame) -> float:
        return float(part.sort_values("s").groupby("seed")["top1"].last().mean())

    which = "; ".join(
        f"seed {seed}: {NETWORK_NAMES.get(network, network)}" for seed, network in chosen.items()
    )
    numbers = [
        f"the deployed Teammate {full_depth(shown):.1f} % (what chapters 6 and 7 compare "
        "with the other methods)"
    ]
    for network, use in (
        ("teammate0", ""),
        ("teammate_mean", " (the summary page's cost table and the ablations of chapter 6)"),
        ("leader", ""),
    ):
        part = rows[rows["network"] == network]
        if not part.empty:
            numbers.append(f"{NETWORK_NAMES[network]} {full_depth(part):.1f} %{use}")
    return (
        "**Which network a number is.** The book quotes one of these networks at a time, and "
        "says which. Each seed deploys the Teammate with the better mean validation accuracy "
        f"({which}). Test top-1 at full depth, mean over the {seeds} "
        f"seed{'s' if seeds > 1 else ''}: " + "; ".join(numbers) + "."
    )


# --- recorded benchmarks ----------------------------------------------------------------------

#: the benchmarks whose records the book shows, and the command that writes each record
BENCHMARKS = {
    "depth_cost": DEPTH_COST_COMMAND,
    "train_step": "python benchmarks/train_step.py --record results/benchmarks/train_step.json",
    "data_throughput": "python benchmarks/data_throughput.py "
    "--record results/benchmarks/data_throughput.json",
    "export_latency": "python benchmarks/export_latency.py "
    "--record results/benchmarks/export_latency.json",
}


def benchmark_records(recorded: Results) -> dict[str, dict[str, Any]]:
    """``{name: record}`` of each benchmark of :data:`BENCHMARKS` that is recorded."""
    return {name: recorded.benchmarks[name] for name in BENCHMARKS if name in recorded.benchmarks}


def benchmark_label(record: Mapping[str, Any]) -> str:
    """Where, when and by which command a benchmark record was measured."""
    return (
        f"*Measured on {record['device']} ({record['cpu_count']} cores), torch {record['torch']}, "
        f"commit {record['git_commit']}, {record['date'][:10]}, by* `{record['command']}`"
    )


# --- the engineering checks (the appendix page): each benchmark's targets, and what a miss
# would mean to a user -------------------------------------------------------------------------


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def _targets(rows: Sequence[tuple[str, bool, str]]) -> str:
    """Markdown: one bullet per target, met or not, and what a miss means to a user."""
    return "\n".join(f"- *{target}*: {_met(ok)}. {matters}" for target, ok, matters in rows)


def depth_cost_table(record: Mapping[str, Any]) -> pd.DataFrame:
    """Each backbone's plans of the ``depth_cost`` record as shares of its full depth: blocks,
    FLOPs, latency at each batch, and whether the throughput batch meets the target."""
    results_ = record["results"]
    depths = pd.DataFrame(results_["depths"])
    batches = sorted(int(c.removeprefix("latency_ratio_b")) for c in depths if "ratio_b" in c)
    last = f"latency_ratio_b{batches[-1]}"
    gap = (depths[last] - depths["flops_ratio"]).abs() / depths["flops_ratio"]
    table = pd.DataFrame(
        {"arch": depths["arch"], "s": depths["s"], "blocks": depths["active_blocks"]}
        | {"FLOPs": depths["flops_ratio"].round(2)}
        | {f"time b{b}": depths[f"latency_ratio_b{b}"].round(2) for b in batches}
        | {f"gap b{batches[-1]}": (100 * gap).round(0).astype(int).astype(str) + " %"}
        | {"target": np.where(gap <= results_["latency_tolerance"], "met", "not met")}
    )
    return table.set_index(["arch", "s"])


def depth_cost_targets(record: Mapping[str, Any]) -> str:
    """Markdown: the ``depth_cost`` record's two targets, per backbone, and what a miss means."""
    results_ = record["results"]
    depths = pd.DataFrame(results_["depths"])
    batches = sorted(int(c.removeprefix("latency_ratio_b")) for c in depths if "ratio_b" in c)
    last = f"latency_ratio_b{batches[-1]}"
    gap = (depths[last] - depths["flops_ratio"]).abs() / depths["flops_ratio"]
    worst = depths.assign(gap=gap).groupby("arch", sort=False)["gap"].max()
    tolerance = results_["latency_tolerance"]
    missed = [arch for arch, value in worst.items() if value > tolerance]
    latency = (
        f"Every plan's time at batch {batches[-1]} within {tolerance:.0%} of its FLOPs share "
        "(worst gap: " + ", ".join(f"{arch} {value:.0%}" for arch, value in worst.items()) + ")"
    )
    latency_matters = (
        "A miss means that a plan saves less time than its FLOPs promise on that backbone "
        f"({', '.join(missed) or 'none here'}): someone who budgets by FLOPs gets less speed "
        "than planned. A budget in measured time (`choose_scaling_factor(budget_latency=...)`, "
        "chapter 7) is met whatever the gap, so this matters only to FLOPs budgets, and most on "
        "small backbones, where the stem, the head and per-layer dispatch are a large share of "
        "the time."
    )
    target = results_["gate_overhead_target"]
    overheads = results_["gate_overhead"]
    gate = (
        f"A gated training step (every block computed) at most {target:.0%} slower than a "
        "plain one (" + ", ".join(f"{row['arch']} {row['overhead']:+.1%}" for row in overheads)
    ) + ")"
    gate_matters = (
        "Training time only: this prices the gate's sampling and its straight-through "
        "gradient when every block runs (the `all` estimator). The default `kept` estimator "
        "skips dropped blocks, and a deployed network runs no gate at all, so a miss never "
        "slows inference and changes no accuracy."
    )
    ok_latency = not missed
    ok_gate = all(row["overhead"] <= target for row in overheads)
    return _targets([(latency, ok_latency, latency_matters), (gate, ok_gate, gate_matters)])


def show_depth_cost(record: Mapping[str, Any]) -> None:
    """The ``depth_cost`` record: where it was measured, the figure, the table, the targets."""
    results_ = record["results"]
    _show(
        benchmark_label(record),
        plots.latency_flops_figure(
            results_["depths"], "Latency against FLOPs per scaling factor (depth_cost)"
        ),
        depth_cost_table(record),
        depth_cost_targets(record),
    )


def show_train_step(record: Mapping[str, Any], loader_images_per_s: float | None = None) -> None:
    """The ``train_step`` record: a cooperative step against its passes timed alone, its
    throughput, what the ``kept`` estimator saves, and the targets."""
    step = record["results"]
    title = (
        f"One cooperative step ({step['arch']}, batch {step['batch_size']}) against its passes "
        f"timed alone: ratio {step['ratio']:.2f}"
    )
    rates = step["images_per_s"]
    by_estimator = step.get("step_ms_by_gate_gradient", {})
    saving = ""
    if {"kept", "all"} <= set(by_estimator):
        saving = (
            f" With the default `kept` estimator the step takes {by_estimator['kept']:.0f} ms, "
            f"against {by_estimator['all']:.0f} ms with `all` "
            f"({by_estimator['all'] / by_estimator['kept']:.2f}x)."
        )
    summary = (
        f"Throughput: {rates['cooperative']:.0f} images/s for the cooperative step, "
        f"{rates['single network']:.0f} for one plain network.{saving}"
    )
    matters = (
        "A miss means time spent between the passes (bookkeeping, copies, the optimizer) that "
        "a leaner step would not spend: training would take longer; the gradients, and so the "
        "results, are the same (the test suite checks them against the one-backward objective)."
    )
    target = f"The step at most {step['target']:.2f}x the sum of its passes ({step['ratio']:.2f}x)"
    _show(
        benchmark_label(record),
        plots.step_parts_figure(step["parts_ms"], step["cooperative_step_ms"], title),
        summary,
        _targets([(target, step["ratio"] <= step["target"], matters)]),
    )


def show_data_throughput(
    record: Mapping[str, Any], step_record: Mapping[str, Any] | None = None
) -> None:
    """The ``data_throughput`` record: images/s of each way of loading, the ratios and their
    targets, and what a miss means set beside what training consumes (``step_record``)."""
    data = record["results"]
    measurements = pd.DataFrame(data["measurements"]).set_index("measurement")
    measurements["images/s"] = measurements.pop("images_per_s").round(0).astype(int)
    ratios = pd.DataFrame(data["ratios"]).set_index("ratio")
    ratios["value"] = ratios["value"].round(1)
    ratios["met"] = np.where(ratios["met"], "met", "not met")
    consumed = ""
    loaders = [row["images_per_s"] for row in data["measurements"] if "Batch" in row["measurement"]]
    if step_record is not None and loaders:
        rate = step_record["results"]["images_per_s"]["cooperative"]
        consumed = (
            f" A cooperative step consumes {rate:.0f} images/s (the `train_step` record), "
            f"{min(loaders) / rate:.0f} times fewer than the slowest of the book's loaders "
            "delivers, so loading is a small share of a training step here."
        )
    rows = []
    for row in data["ratios"]:
        name = row["ratio"]
        target = f"{name} at least {row['target']}x ({row['value']:.1f}x)"
        if name.startswith("cached load"):
            matters = (
                "The cache is written on the first read of a dataset and read on every later "
                "one: a miss makes later starts slower, by seconds; training and its results "
                "are unchanged."
            )
        else:
            matters = (
                "A miss means the book's loader is less far ahead of torchvision's with that "
                "many threads; it matters only if loading, not the network, limits training "
                f"speed.{consumed}"
            )
        rows.append((target, bool(row["met"]), matters))
    _show(benchmark_label(record), measurements, ratios, _targets(rows))


def show_export_latency(record: Mapping[str, Any]) -> None:
    """The ``export_latency`` record: each exported form's time against the gated network's at
    each plan and batch, and the target."""
    data = record["results"]
    rows = pd.DataFrame(data["rows"])
    ratios = rows.pivot_table(
        index=["s", "batch_size"], columns="variant", values="ratio_to_gated", sort=False
    )
    ratios = ratios.drop(columns="gated net(x, s)").round(2)
    ratios.index.names = ["s", "batch"]
    exported = rows[rows["variant"] != "gated net(x, s)"]
    slowest = exported.loc[exported["ratio_to_gated"].idxmax()]
    fastest_form = exported.groupby("variant")["ratio_to_gated"].max().idxmin()
    best = exported[exported["variant"] == fastest_form]["ratio_to_gated"].max()
    target = (
        f"Every exported form within {data['target_ratio']:.2f}x the gated network's time "
        f"on {data['arch']}, at every plan and batch (slowest: {slowest['variant']} at "
        f"s = {slowest['s']:g}, batch {slowest['batch_size']}, "
        f"{slowest['ratio_to_gated']:.2f}x)"
    )
    matters = (
        "A miss means that shipping a plan as a plain network does not always make it faster "
        "than running the gated network at that depth; it is never a wrong answer (chapter 7 "
        "checks the shipped network's outputs). "
    )
    if best <= data["target_ratio"]:
        matters += (
            f"{fastest_form} stays within {best:.2f}x the gated network's time in every case "
            "measured, so a device that serves with it loses nothing by shipping one depth."
        )
    else:
        matters += f"Even the fastest form, {fastest_form}, reaches {best:.2f}x in one case."
    _show(
        benchmark_label(record),
        ratios,
        f"Target {'met' if data['passed'] else 'not met'} on {data['arch']}: the slowest case "
        f"is {slowest['variant']} at s = {slowest['s']:g}, batch {slowest['batch_size']}, "
        f"{slowest['ratio_to_gated']:.2f}x the gated network's time.",
        _targets([(target, bool(data["passed"]), matters)]),
    )


# --- what a depth costs (chapter 1) -----------------------------------------------------------


def depth_costs_shown(
    chapter: Chapter,
    net: Any,
    arch: str,
    batch_sizes: Sequence[int],
    repeats: int,
) -> tuple[pd.DataFrame, str]:
    """Blocks, FLOPs and latency (seconds per batch) of each plan of ``net``
    (:func:`evaluate.depth_costs`), and where the latency comes from: the ``depth_cost``
    benchmark's record, timed on a quiet machine, where it holds ``arch``, else measured now at
    ``batch_sizes`` on the chapter's device."""
    from coop_utils.evaluate import depth_costs

    record = chapter.results.benchmarks.get("depth_cost")
    depths = [row for row in (record or {}).get("results", {}).get("depths", [])]
    timed = pd.DataFrame([row for row in depths if row["arch"] == arch])
    if timed.empty:
        device = chapter.torch_device
        costs = pd.DataFrame(
            depth_costs(net, latency_batch_sizes=batch_sizes, device=device, repeats=repeats)
        )
        return costs, f"measured while building this page, on {device_name(device)}"
    costs = pd.DataFrame(depth_costs(net))
    timed = timed.set_index("s")
    for column in timed.columns:
        if column.startswith("latency_ms_b"):
            batch = column.removeprefix("latency_ms_b")
            costs[f"latency_b{batch}"] = costs["s"].map(timed[column] / 1e3)
    return costs, (
        f"recorded on a quiet machine by the depth-cost benchmark ({record['device']}, "
        f"{record['date'][:10]}, `results/benchmarks/depth_cost.json`)"
    )


def depth_cost_summary(costs: pd.DataFrame, timed: str) -> str:
    """Markdown: what the shallowest plan of :func:`depth_costs_shown` saves in blocks, FLOPs
    and time (``timed``: where its latency comes from), against full depth."""
    full, shallow = costs.loc[costs["s"].idxmax()], costs.loc[costs["s"].idxmin()]
    flops_ratio = shallow["flops"] / full["flops"]
    columns = [column for column in costs.columns if column.startswith("latency_b")]
    latency = {int(c.removeprefix("latency_b")): shallow[c] / full[c] for c in columns}
    lines = [
        f"At *s* = {shallow['s']:g} the plan runs "
        f"{100 * shallow['active_blocks'] / full['active_blocks']:.1f} % of the blocks and "
        f"{100 * flops_ratio:.1f} % of the FLOPs: FLOPs track the share of blocks, but not "
        "exactly, because blocks differ in cost and the stem and the classifier always run."
    ]
    for index, (batch, ratio) in enumerate(latency.items()):
        if abs(ratio - flops_ratio) <= 0.1:
            how = "latency follows FLOPs, to within 0.1 of full depth's"
        else:
            saves = "less" if ratio > flops_ratio else "more"
            how = f"latency does not follow FLOPs: the plan saves {saves} in time than in FLOPs"
        where = f"In the times {timed}, at" if index == 0 else "At"
        lines.append(
            f"{where} batch {batch} it takes {100 * ratio:.0f} % of full depth's time against "
            f"{100 * flops_ratio:.0f} % of its FLOPs: {how}."
        )
    slower = [
        f"*s* = {row['s']:g} at batch {column.removeprefix('latency_b')}: "
        f"{row[column] / full[column]:.2f}"
        for column in columns
        for _, row in costs.iterrows()
        if row["s"] < full["s"] and row[column] > full[column]
    ]
    if slower:
        lines.append(
            f"Some shallower plans timed slower than full depth ({'; '.join(slower)} of its "
            "time): timings taken once on a shared machine are noisy at this size, which is why "
            "the depth-cost benchmark times the plans side by side on a quiet machine."
        )
    if latency and max(latency.values()) < 0.6:
        lines.append(
            "At every batch size the shallowest plan takes well under full depth's time, "
            "which it could not if skipped blocks were computed and multiplied by zero."
        )
    return " ".join(lines)


def show_leader_and_its_twin(recorded: pd.DataFrame) -> None:
    """The test top-1 and top-5 at full depth, seed by seed, of the cooperative run's Leader
    and of the independent full-depth network, and whether they are the same network."""
    full_depth = {}
    for name, network in (("cooperative", "leader"), ("independent", "independent")):
        rows = seeds_frame(recorded, name)
        rows = rows[rows["network"] == network].sort_values("s")
        if not rows.empty:
            full_depth[f"{name}: {network}"] = rows.groupby("seed")[["top1", "top5"]].last()
    if len(full_depth) < 2:
        return
    leader, twin = full_depth.values()
    items: list[Any] = [pd.concat(full_depth, axis=1)]
    if leader.equals(twin):
        items.append(
            "In every seed the Leader and the independent full-depth network reach the same "
            "test top-1 and top-5: they start from the same initialisation, see the same "
            "batches and follow the same loss, so they are the same network. The Leader claim "
            "therefore asks whether distilling from a plain full-depth network improves the "
            "Teammates."
        )
    _show(*items)


# --- cost-adaptive inference (chapter 7) ------------------------------------------------------


def deployed_line(deployed: Deployed) -> str:
    """Markdown: which Teammate is deployed, and whether its weights are committed."""
    name = NETWORK_NAMES.get(deployed.name, deployed.name)
    line = f"The deployed network is {name} of the seed-{deployed.config.seed} run"
    if not deployed.trained:
        line += " (its weights are not committed yet: FLOPs and latency only)"
    return line + (
        ": the accuracies below are that one network's, where chapters 5 and 6 give the mean "
        "of the deployed Teammates over the seeds."
    )


def class_names_line(samples: Samples) -> str:
    """Markdown: the name of each class number the sample images carry."""
    names = {int(label): name for label, name in zip(samples.labels, samples.names, strict=True)}
    if all(name == str(label) for label, name in names.items()):
        return ""
    return "The classes shown: " + "; ".join(f"{k}: {v}" for k, v in names.items()) + "."


def shipped_line(
    net: Any, shipped: Any, s: float, path: Path, logits: torch.Tensor, reference: torch.Tensor
) -> str:
    """Markdown: what the shipped plan runs, its size, and how it agrees with the network that
    chooses its depth at run time, on the same images."""
    from coop_utils.evaluate import count_flops

    gap = (logits - reference).abs().max().item()
    agree = (logits.argmax(1) == reference.argmax(1)).float().mean().item()
    return (
        f"Shipped at s = {s:g}: blocks {shipped.plan_blocks} of {net.num_blocks}, "
        f"{count_flops(net, s):,} FLOPs per image, a {path.stat().st_size / 1e6:.2f} MB file. "
        f"Loaded back, its logits differ from the network's at the same depth by at most "
        f"{gap:.1e}, and {agree:.0%} of its predictions are the same."
    )


def normalisation_line(norm: Any) -> str:
    """Markdown: the input normalisation a shipped file records."""
    return (
        "The input normalisation it records: mean "
        + ", ".join(f"{v:.4f}" for v in norm.mean)
        + "; std "
        + ", ".join(f"{v:.4f}" for v in norm.std)
        + f"; {norm.image_size}x{norm.image_size} px."
    )


def missing_benchmarks(names: Sequence[str]) -> str:
    """Markdown: the benchmarks not recorded yet, and the command that records each."""
    commands = "\n".join(wrap_command(BENCHMARKS[name]) for name in names)
    return f"Not recorded yet: {', '.join(f'`{n}`' for n in names)}.\n\n```bash\n{commands}\n```"
