"""The book: execute the chapters with papermill for a profile, then build the Jupyter Book.

``python -m coop_utils book --profile smoke [--chapters 01 03] [--set key=value]`` converts
each ``notebooks/NN_*.py`` with jupytext, executes it with papermill into ``book/executed/``
with the parameters of ``params/<profile>.yaml`` (its ``chapters:`` section holds each
chapter's own settings, keyed by the chapter's file name), then runs
``jupyter-book build --warningiserror --keep-going`` and prints the time of each chapter.

The chapters call the helpers below: :func:`start_chapter` (the profile note and the run
settings), :func:`recorded_results` (the committed preview and full summaries),
:func:`load_system` (a finished run's networks); the verdict read from the result files is
:mod:`coop_utils.verdict`.
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
from coop_utils.verdict import RESULT_PROFILES, deployed_teammate, summaries_of

__all__ = [
    "ABLATIONS",
    "BASE_PARAMETERS",
    "BENCHMARKS",
    "REPO_ROOT",
    "RESULT_PROFILES",
    "RUN_KEYS",
    "BookReport",
    "Chapter",
    "ChapterRun",
    "Recorded",
    "accuracy_table",
    "add_arguments",
    "benchmark_label",
    "benchmark_records",
    "best_recorded",
    "best_recorded_profile",
    "build_book",
    "chapter_paths",
    "config_table",
    "deployed_teammate",
    "execute_chapter",
    "load_system",
    "method_frame",
    "no_recorded_note",
    "profile_parameters",
    "recorded_label",
    "recorded_results",
    "resolve_path",
    "run",
    "sample_test_images",
    "select_chapters",
    "show_recorded_run",
    "show_source",
    "start_chapter",
    "summaries_of",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
EXECUTED_DIR = Path("book") / "executed"
#: what a book root holds besides the executed chapters
BOOK_SOURCES = ("_config.yml", "_toc.yml", "book")
#: parameters every chapter declares; the rest are the chapter's own
BASE_PARAMETERS = ("profile", "data_root", "device", "seed", "run_root", "results_root")


#: the ablations of METHOD.md: variant name -> config changes of the cooperative method
def resolve_path(path: str | os.PathLike) -> Path:
    """``path`` if absolute, else relative to the repository root (not to the kernel's cwd)."""
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else REPO_ROOT / candidate


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

    def train(self, config: RunConfig, optional: bool = True):
        """``training.train(config)`` (a finished run is reused). If the dataset is neither on
        disk nor downloadable: ``None`` and a note when ``optional``, else the error."""
        from IPython.display import Markdown, display

        from coop_utils.data import DatasetError
        from coop_utils.training import train

        try:
            return train(config, progress=False)
        except DatasetError as error:
            if not optional:
                raise
            display(
                Markdown(
                    f"**{config.dataset} is not available here, so this chapter trains nothing "
                    f"at the {self.profile} profile** and shows recorded results only.\n\n"
                    f"> {error}"
                )
            )
            return None


class _OncePerMessage(logging.Filter):
    """Let each distinct log message through once (a chapter loads the same data many times)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message in self.seen:
            return False
        self.seen.add(message)
        return True


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


_SMOKE_NOTE = (
    "This chapter was executed at the <b>smoke</b> profile: a tiny network trained for a few "
    "dozen steps on small <b>generated</b> data, on the CPU, to prove that every cell runs. "
    "Its numbers are <b>not results</b>. Results come from the preview and full profiles "
    "(see <i>Reproducing</i>); where a chapter finds them in <code>results/</code> it shows "
    "them, labelled."
)


def start_chapter(
    profile: str,
    device: str = "auto",
    seed: int = 0,
    data_root: str | None = None,
    run_root: str = "runs",
    results_root: str = "results",
) -> Chapter:
    """Open a chapter: say at which profile it runs (at smoke: that its numbers are not
    results), set the figure style and the seed, and resolve the paths of its runs."""
    import torch
    from IPython.display import HTML, display

    from coop_utils.plots import use_book_style
    from coop_utils.runs import device_name
    from coop_utils.training import resolve_device

    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}")
    use_book_style()
    _show_library_log()
    torch.manual_seed(seed)
    data_root = data_root or os.environ.get("COOP_DATA_ROOT") or str(REPO_ROOT / "data")
    chapter = Chapter(
        profile, device, seed, data_root, resolve_path(run_root), resolve_path(results_root)
    )
    hardware = device_name(resolve_device(device))
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    if profile == "smoke":
        title, kind, text = "Smoke run: these numbers are not results", "warning", _SMOKE_NOTE
    else:
        title, kind = f"Executed at the {profile} profile", "note"
        text = f"Runs of this chapter are {profile} runs; recorded runs are labelled where shown."
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

    return Markdown(f"```python\n{inspect.getsource(function).rstrip()}\n```")


def sample_test_images(config: RunConfig, count: int):
    """The first ``count`` test images of ``config``'s data: ``(normalised, uint8, labels)``."""
    import torch

    from coop_utils.training import prepare_data

    test = prepare_data(config, torch.device("cpu")).test
    batches, seen = [], 0
    for images, _ in test:
        batches.append(images)
        seen += len(images)
        if seen >= count:
            break
    normalised = torch.cat(batches)[:count]
    return normalised, test.images[: len(normalised)], test.labels[: len(normalised)]


def method_frame(metrics: Mapping[str, Any], method: str) -> pd.DataFrame:
    """One method's rows of :func:`plots.metrics_frame`: the deployed Teammate of a cooperative
    run, the only network of the others; ``method`` labels them."""
    from coop_utils.plots import metrics_frame

    teammates = [name for name in metrics if name.removeprefix("teammate").isdigit()]
    network = deployed_teammate(metrics) if teammates else next(iter(metrics))
    return metrics_frame({network: metrics[network]}, method=method)


# --- recorded results -------------------------------------------------------------------------


@dataclass(frozen=True)
class Recorded:
    """One results summary (``results/<profile>/<dataset>/<name>.json``)."""

    profile: str
    dataset: str
    name: str  # method, or method-variant
    path: Path
    summary: dict[str, Any]

    @property
    def metrics(self) -> dict[str, Any]:
        return self.summary["metrics"]

    @property
    def label(self) -> str:
        config = self.summary.get("config", {})
        return (
            f"{self.profile} profile, {config.get('arch', '?')}, {config.get('epochs', '?')} "
            f"epochs, on {self.summary.get('device', 'unknown hardware')}, "
            f"{str(self.summary.get('date', 'undated'))[:10]}"
        )


def recorded_results(
    results_root: str | os.PathLike,
    dataset: str | None = None,
    profiles: Sequence[str] = RESULT_PROFILES,
) -> list[Recorded]:
    """Every summary of ``profiles`` (best profile first) under ``results_root``."""
    root = resolve_path(results_root)
    found = []
    for profile in profiles:
        for path in sorted((root / profile).glob("*/*.json")):
            if dataset is not None and path.parent.name != dataset:
                continue
            summary = json.loads(path.read_text())
            found.append(Recorded(profile, path.parent.name, path.stem, path, summary))
    return found


def best_recorded(
    results_root: str | os.PathLike, dataset: str, name: str = "cooperative"
) -> Recorded | None:
    """The summary of ``name`` on ``dataset`` from the best profile that has one."""
    for recorded in recorded_results(results_root, dataset):
        if recorded.name == name:
            return recorded
    return None


def best_recorded_profile(
    results_root: str | os.PathLike, dataset: str
) -> tuple[str | None, dict[str, dict[str, Any]]]:
    """``(profile, {name: summary})`` of the best profile with any summary on ``dataset``."""
    for profile in RESULT_PROFILES:
        summaries = summaries_of(resolve_path(results_root), profile).get(dataset)
        if summaries:
            return profile, dict(sorted(summaries.items()))
    return None, {}


def recorded_label(profile: str, summaries: Mapping[str, Mapping[str, Any]]) -> str:
    """One line naming where and when each recorded summary was measured."""
    runs = "; ".join(
        f"`{name}` ({summary['config']['arch']}, {summary['config']['epochs']} epochs) on "
        f"{summary.get('device', 'unknown hardware')}, {str(summary.get('date', 'undated'))[:10]}"
        for name, summary in summaries.items()
    )
    return f"**Recorded {profile} runs:** {runs}."


#: the configuration keys a training chapter shows above its run
RUN_KEYS = (
    "data", "arch", "epochs", "batch_size", "lr", "temperature", "teammates", "use_leader",
    "mutual", "sfsl", "gating", "tau", "factors_per_teammate", "num_classes", "image_size",
)  # fmt: skip


def config_table(config: RunConfig, keys: Sequence[str] = RUN_KEYS) -> pd.DataFrame:
    """One row: the values of ``keys`` in ``config``, indexed by its profile."""
    return pd.DataFrame({key: [str(getattr(config, key))] for key in keys}, index=[config.profile])


def accuracy_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Test top-1 of each network (rows) at each scaling factor (columns) of a metrics frame."""
    table = frame.pivot(index="network", columns="s", values="top1").round(1)
    table.columns = [f"s = {s:g}" for s in table.columns]
    return table


def show_recorded_run(
    results_root: str | os.PathLike, dataset: str, networks: Sequence[str]
) -> Recorded | None:
    """Show the best recorded cooperative run on ``dataset``: its label, its accuracy by depth
    as a figure and a table (``networks`` only), or a note that none is recorded."""
    import matplotlib.pyplot as plt
    from IPython.display import Markdown, display

    from coop_utils import plots

    recorded = best_recorded(results_root, dataset)
    if recorded is None:
        display(Markdown(no_recorded_note(dataset)))
        return None
    display(Markdown(f"**Recorded run:** {recorded.label} (`{recorded.path.name}`)."))
    frame = plots.metrics_frame(recorded.metrics)
    frame = frame[frame["network"].isin(networks)]
    figure = plots.accuracy_by_depth_figure(
        frame, f"Test accuracy by depth, recorded {recorded.profile} run ({dataset})"
    )
    display(figure)  # before the table, and only once: the inline backend skips closed figures
    plt.close(figure)
    display(accuracy_table(frame))
    return recorded


def no_recorded_note(dataset: str, name: str = "cooperative") -> str:
    return (
        f"No preview or full run of `{name}` on {dataset} is recorded in `results/` yet, so there "
        "is nothing real to show here. `make book PROFILE=preview` (CPU) or `PROFILE=full` (GPU) "
        "records one; this section then shows it, labelled with its profile, hardware and date."
    )


# --- recorded benchmarks ----------------------------------------------------------------------

#: the benchmarks whose records the book shows, and the command that writes each record
BENCHMARKS = {
    "depth_cost": "python benchmarks/depth_cost.py --record results/benchmarks/depth_cost.json",
    "train_step": "python benchmarks/train_step.py --record results/benchmarks/train_step.json",
    "data_throughput": "python benchmarks/data_throughput.py "
    "--record results/benchmarks/data_throughput.json",
}


def benchmark_records(results_root: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """``{name: record}`` of each benchmark recorded in ``<results_root>/benchmarks/``."""
    folder = resolve_path(results_root) / "benchmarks"
    records = {}
    for name in BENCHMARKS:
        path = folder / f"{name}.json"
        if path.exists():
            records[name] = json.loads(path.read_text())
    return records


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
    profile: str, params_dir: str | os.PathLike | None = None
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The parameters every chapter gets at ``profile``, and each chapter's own settings."""
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
        chapters_ok = all(chapter.error is None for chapter in self.chapters)
        return chapters_ok and self.build_returncode in (0, None)

    def timings(self) -> str:
        width = max([len(c.name) for c in self.chapters] + [len("jupyter-book build")])
        lines = [f"{'step':<{width}}  seconds  ({self.profile} profile)"]
        for chapter in self.chapters:
            status = "" if chapter.error is None else "  FAILED"
            lines.append(f"{chapter.name:<{width}}  {chapter.seconds:7.1f}{status}")
        if self.build_returncode is not None:
            status = (
                "" if self.build_returncode == 0 else f"  FAILED (exit {self.build_returncode})"
            )
            lines.append(f"{'jupyter-book build':<{width}}  {self.build_seconds:7.1f}{status}")
        lines.append(f"{'total':<{width}}  {self.total_seconds:7.1f}")
        return "\n".join(lines)


def _declared_parameters(notebook: Path) -> set[str]:
    import papermill

    return set(papermill.inspect_notebook(str(notebook)))


def _failure(name: str, error: BaseException) -> str:
    from papermill.exceptions import PapermillExecutionError

    if isinstance(error, PapermillExecutionError):
        first_line = next((line for line in error.source.splitlines() if line.strip()), "")
        return (
            f"chapter {name} failed in cell {error.cell_index} (execution count "
            f"{error.exec_count}, starting {first_line.strip()!r}): {error.ename}: {error.evalue}"
        )
    return f"chapter {name} failed: {type(error).__name__}: {error}"


#: seconds a cell of a smoke chapter may take: a stuck kernel fails, naming the cell, rather
#: than hang a test run (preview and full cells train for many minutes and have no limit)
SMOKE_CELL_TIMEOUT_S = 600


def execute_chapter(source: Path, output: Path, parameters: Mapping[str, Any]) -> ChapterRun:
    """Convert ``source`` with jupytext and execute it with papermill into ``output``."""
    import jupytext
    import papermill

    started = time.perf_counter()
    output.parent.mkdir(parents=True, exist_ok=True)
    error = None
    with tempfile.TemporaryDirectory() as scratch:
        converted = Path(scratch) / f"{source.stem}.ipynb"
        try:
            jupytext.write(jupytext.read(source), converted)
            papermill.execute_notebook(
                str(converted),
                str(output),
                parameters=dict(parameters),
                cwd=str(REPO_ROOT),
                progress_bar=False,
                log_output=False,
                execution_timeout=(
                    SMOKE_CELL_TIMEOUT_S if parameters.get("profile", "smoke") == "smoke" else None
                ),
            )
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
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
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


def _jupyter_book() -> str:
    beside = Path(sys.executable).with_name("jupyter-book")
    found = str(beside) if beside.exists() else shutil.which("jupyter-book")
    if found is None:
        raise ValueError("jupyter-book is not installed: run `make book` (it creates .venv)")
    return found


def build_book(
    profile: str = "smoke",
    chapters: Sequence[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    book_root: str | os.PathLike | None = None,
    build: bool = True,
    echo: Callable[[str], None] = print,
    capture_build: bool = False,
) -> BookReport:
    """Execute ``chapters`` (default: all) at ``profile``, then build the book.

    ``overrides`` set a parameter in every chapter that declares it (``run_root=/tmp/runs``).
    ``book_root`` (default: the repository) receives ``book/executed/`` and ``_build/``; another
    folder gets a copy of the book's prose first, so a test build leaves the repository alone.
    The build is skipped when a chapter fails.
    """
    import jupytext

    started = time.perf_counter()
    base, settings = profile_parameters(profile)
    overrides = dict(overrides or {})
    root = REPO_ROOT if book_root is None else Path(book_root).resolve()
    if root != REPO_ROOT:
        _stage_sources(root)
    selected = select_chapters(chapters)
    report = BookReport(profile)
    unused = set(overrides)
    with tempfile.TemporaryDirectory() as scratch:
        plans = []
        for source in selected:
            converted = Path(scratch) / f"{source.stem}.ipynb"
            jupytext.write(jupytext.read(source), converted)
            declared = _declared_parameters(converted)
            own = dict(settings.get(source.stem) or {})
            undeclared = sorted(set(own) - declared)
            if undeclared:
                raise ValueError(
                    f"params/{profile}.yaml sets {', '.join(undeclared)} for chapter "
                    f"{source.stem}, which declares only: {', '.join(sorted(declared))}"
                )
            parameters = {key: value for key, value in base.items() if key in declared}
            parameters |= own
            parameters |= {key: value for key, value in overrides.items() if key in declared}
            unused -= declared
            plans.append((source, parameters))
    if unused:
        raise ValueError(
            f"no selected chapter declares the parameter(s) {', '.join(sorted(unused))}"
        )

    echo(f"executing {len(plans)} chapter(s) at the {profile} profile into {root / EXECUTED_DIR}")
    for source, parameters in plans:
        result = execute_chapter(source, root / EXECUTED_DIR / f"{source.stem}.ipynb", parameters)
        report.chapters.append(result)
        echo(
            f"  {result.name}: {result.seconds:.1f} s" + ("" if result.error is None else " FAILED")
        )
        if result.error is not None:
            echo(f"    {result.error}")

    failed = [chapter for chapter in report.chapters if chapter.error is not None]
    if build and not failed:
        for source in chapter_paths():
            output = root / EXECUTED_DIR / f"{source.stem}.ipynb"
            if not output.exists():
                _placeholder(source, output)
        echo(f"building the book: jupyter-book build {root} --warningiserror --keep-going")
        build_started = time.perf_counter()
        completed = subprocess.run(
            [_jupyter_book(), "build", str(root), "--warningiserror", "--keep-going"],
            capture_output=capture_build,
            text=True,
            check=False,
        )
        report.build_seconds = time.perf_counter() - build_started
        report.build_returncode = completed.returncode
        if capture_build:
            report.build_output = completed.stdout + completed.stderr
    elif failed:
        echo("not building the book: a chapter failed")
    report.total_seconds = time.perf_counter() - started
    echo(report.timings())
    if report.build_returncode == 0:
        echo(f"the book: {root / '_build' / 'html' / 'index.html'}")
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default="smoke", choices=PROFILES)
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
        args.profile,
        chapters=args.chapters,
        overrides=overrides,
        book_root=args.book_root,
        build=not args.no_build,
    )
    return 0 if report.ok else 1
