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

from coop_utils import plots, result_plots, results, training, verdict
from coop_utils.config import ABLATIONS, PROFILES, REPO_ROOT, RunConfig, campaign, load_config
from coop_utils.datasets import DATASETS, DatasetError
from coop_utils.export import load_network
from coop_utils.listings import wrap_command
from coop_utils.loaders import prepare_data
from coop_utils.models import build_model
from coop_utils.results import Results
from coop_utils.runs import device_name, results_path

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
    backend skips closed figures, which would otherwise follow every table at the cell's end);
    an empty string shows nothing."""
    for item in items:
        if isinstance(item, str) and not item:
            continue
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


def recorded_setting(recorded: Results, dataset: str) -> str:
    """Markdown: the setting the recorded cooperative runs on ``dataset`` were trained in
    (classes, image size against the official ones, backbone, epochs, batch, optimiser) and, from
    the steps of an epoch in a committed log, about how many training images a class had; ""
    when none is recorded."""
    official = DATASETS[dataset]
    profile, rows = recorded.campaign(dataset, ["cooperative"])
    if rows.empty:
        return ""
    shown = rows["config"].iloc[0]
    classes = shown.get("num_classes") or official.num_classes
    side = shown.get("image_size") or official.image_size
    which = "all" if classes == official.num_classes else "the first"
    text = (
        f"The recorded {profile} runs use {which} {classes} of the dataset's "
        f"{official.num_classes} classes, at {side}x{side}"
    )
    if side < official.image_size:
        text += (
            f" (downsampled from {official.image_size}x{official.image_size} by area averaging"
            + (", CIFAR's size" if side == 32 else "")
            + ")"
        )
    momentum = "Nesterov" if shown.get("nesterov") else "plain"
    text += (
        f", and train {shown.get('arch')} for {shown.get('epochs')} epochs of batch "
        f"{shown.get('batch_size')}, SGD with {momentum} momentum."
    )
    # The summaries do not record how many training images a class has; the number of steps of
    # an epoch, in the committed training log, gives it to within a batch.
    steps = [int(log[0]["global_step"]) for log in recorded.logs_of(rows).values() if log]
    if steps:
        batch, held_out = shown["batch_size"], shown["val_fraction"]
        per_class = steps[0] * batch / (1 - held_out) / classes
        text += (
            " The copy of the dataset on the machines that recorded them has about "
            f"{round(per_class, -1):.0f} training images a class, where the official split has "
            f"{official.train_per_class}: an epoch is {steps[0]} steps of {batch} images, after "
            f"{100 * held_out:g} % of the training images are held out for validation."
        )
    return text


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
    profile = runs["config"].iloc[0].get("profile", "?")
    roots = sorted(set(runs["root"]), key=lambda root: (root != profile, root))  # main first
    runs = runs.sort_values("root", key=lambda column: column.map(roots.index), kind="stable")
    dates = sorted(str(date or "undated")[:10] for date in runs["date"])
    facts = [
        _trained(runs, roots),
        ", ".join(sorted({str(device or "unknown hardware") for device in runs["device"]})),
        dates[0] if dates[0] == dates[-1] else f"{dates[0]} to {dates[-1]}",
        "code " + ", ".join(sorted({str(code or "unknown") for code in runs["code_digest"]})),
    ]
    names = ", ".join(
        f"`{name}`" + (f" ({seeds} seeds)" if seeds > 1 else "")
        for name, seeds in runs.groupby("run", sort=False).size().items()
    )
    return f"**{_recorded_heading(roots, profile, dataset)}** ({'; '.join(facts)}): {names}."


def _campaign_named(root: str, profile: str) -> str:
    """The campaign recorded in the results folder ``root`` as a label names it: the profile's
    own, the control at equal training compute (:data:`results.MATCHED_ROOT`), or by its
    folder."""
    if root == profile:
        return f"the {profile} campaign"
    if root == results.MATCHED_ROOT:
        return "the control at equal training compute"
    return f"the {root} campaign"


def _recorded_heading(roots: Sequence[str], profile: str, dataset: str) -> str:
    """What :func:`recorded_label` calls runs of the results folders ``roots`` (the profile's
    main campaign first): every campaign they come from, not only the first."""
    if list(roots) == [profile]:
        return f"Recorded {profile} runs on {dataset}"
    if len(roots) == 1:
        return f"Recorded {roots[0]} campaign's runs on {dataset}"
    return f"Recorded runs on {dataset} of " + " and of ".join(
        _campaign_named(root, profile) for root in roots
    )


def _trained(runs: pd.DataFrame, roots: Sequence[str]) -> str:
    """The backbones and epochs of summaries ``runs``, each campaign's after the first of
    ``roots`` named beside it: a control's epochs are not its regime's."""
    parts = [
        ", ".join(
            sorted({f"{c.get('arch', '?')} for {c.get('epochs', '?')} epochs" for c in configs})
        )
        for configs in (runs.loc[runs["root"] == root, "config"] for root in roots)
    ]
    others = [
        f"; in {_campaign_named(root, '')}: {part}"
        for root, part in zip(roots[1:], parts[1:], strict=True)
    ]
    return parts[0] + "".join(others)


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
    frame: pd.DataFrame  # its rows, by scaling factor (:func:`result_plots.metrics_frame`)
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
    frame = result_plots.metrics_frame({name: run.metrics[name]})
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


def listed(parts: Sequence[str]) -> str:
    """Parts in a sentence: ``a, b and c``."""
    return ", ".join(parts[:-1]) + f" and {parts[-1]}" if len(parts) > 1 else "".join(parts)


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
    recorded, frame = frame, result_plots.method_seeds_frame(frame, methods)
    seeds = frame.groupby("method")["seed"].nunique()
    counts = f"{seeds.min()}" if seeds.min() == seeds.max() else f"{seeds.min()}-{seeds.max()}"
    title = f"Every method at every depth ({what}; mean of {counts} seed"
    title += "s)" if seeds.max() > 1 else ")"
    items = [
        result_plots.method_comparison_figure(frame, title),
        result_plots.comparison_table(frame),
    ]
    matched = verdict.matched_cost_table(recorded)
    if not matched.empty:
        items.append(result_plots.matched_cost_figure(matched, f"Exits at equal FLOPs ({what})"))
        shown = matched.set_index(["method", "exit (share of blocks)"])
        items.append(dashes(shown, decimals=2))  # an exit not compared has no number
    _show(*items)


def show_recorded_depths(
    recorded: Results,
    dataset: str,
    networks: Sequence[str],
    name: str = "cooperative",
    regime: str | None = None,
) -> None:
    """The recorded runs of ``name`` on ``dataset`` (of the campaign of the results folder
    ``regime``, e.g. ``"converged"``, if given, else the best profile's main campaign): what
    ran them, the test top-1 of ``networks`` at every depth (figure, then table, mean over
    seeds) and each seed's training curves where its log is committed."""
    profile, rows = recorded.campaign(dataset, [name], root=regime)
    title = (
        f"recorded {profile} runs ({dataset})"
        if regime is None
        else f"{regime} campaign ({dataset})"
    )
    _show_depths(
        recorded_label(rows, dataset),
        seeds_frame(rows, name).query("network in @networks"),
        recorded.logs_of(rows),
        title,
    )


def show_run(run: Any, dataset: str, profile: str, networks: Sequence[str]) -> None:
    """This build's run of a chapter: where it lives, the test top-1 of ``networks`` at every
    depth (figure and table) and its training curves."""
    _show_depths(
        f"{'Reused' if run.reused else 'Trained'}: `{run.directory}`, {run.wall_time_s:.0f} s.",
        result_plots.metrics_frame(run.metrics).query("network in @networks"),
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
            result_plots.accuracy_by_depth_figure(frame, f"Test accuracy by depth, {title}"),
            accuracy_table(frame),
        ]
    if logs:
        items.append(result_plots.training_curves_figure(logs, f"Training, {title}"))
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


# --- the Leader and its twin (chapter 6) ------------------------------------------------------


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
