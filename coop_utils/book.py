"""The book's runner: execute the chapters with papermill, then build the Jupyter Book.

``python -m coop_utils book`` builds the *reader's book*: every chapter shows the recorded
results and the committed weights (see :mod:`coop_utils.chapters`, what the chapters call,
beside :mod:`~coop_utils.listings`, :mod:`~coop_utils.replication`,
:mod:`~coop_utils.training_cost` and :mod:`~coop_utils.engineering`) and trains nothing.
``--train`` (implied at the smoke profile, which the tests and CI run) also trains, or reuses,
each chapter's own runs at ``--profile`` in its "Run it yourself" section.

Each ``notebooks/NN_*.py`` is converted with jupytext and executed with papermill into
``book/executed/`` with the parameters of ``params/<profile>.yaml`` (its ``chapters:`` section
holds each chapter's own settings), then ``jupyter-book build --warningiserror --keep-going``
runs.
"""

from __future__ import annotations

import argparse
import base64
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

import yaml

from coop_utils.config import PARAMS_DIR, PROFILES, REPO_ROOT, parse_override

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
EXECUTED_DIR = Path("book") / "executed"
#: what a book root holds besides the executed chapters
BOOK_SOURCES = ("_config.yml", "_toc.yml", "book")
#: parameters every chapter declares; the rest are the chapter's own
BASE_PARAMETERS = ("profile", "data_root", "device", "seed", "run_root", "results_root", "train")


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
            if name == path.stem or (name.isdigit() and int(name) == int(path.stem[:2]))
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
    # here, not at the top: the notebook packages add ~2.5 s to every command's start-up
    from papermill.exceptions import PapermillExecutionError

    if isinstance(error, PapermillExecutionError):
        first_line = next((line for line in error.source.splitlines() if line.strip()), "")
        return (
            f"chapter {name} failed in cell {error.cell_index} (execution count "
            f"{error.exec_count}, starting {first_line.strip()!r}): {error.ename}: {error.evalue}"
        )
    return f"chapter {name} failed: {type(error).__name__}: {error}"


#: the landing page's opening, which ``book/index.md`` includes: what the summary chapter's
#: cell tagged ``landing`` shows (Markdown, figures), written by the runner before each build
LANDING_DIR = Path("book") / "generated"
LANDING_TAG = "landing"
SUMMARY_CHAPTER = "00_does_it_replicate"


def write_landing(root: Path) -> Path:
    """Write ``book/generated/landing.md`` (and its figures, ``landing-N.png``) under the book
    ``root`` from the outputs of the cell tagged ``landing`` of the executed summary chapter,
    or a line saying how to compute it where that chapter has not been executed."""
    import nbformat  # the notebook packages: loaded by the book's commands only

    folder = root / LANDING_DIR
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("landing-*.png"):
        old.unlink()
    executed = root / EXECUTED_DIR / f"{SUMMARY_CHAPTER}.ipynb"
    cells = nbformat.read(executed, as_version=4).cells if executed.exists() else []
    parts = []
    for cell in cells:
        for output in (
            cell.get("outputs", []) if LANDING_TAG in cell.metadata.get("tags", []) else []
        ):
            data = output.get("data", {})
            if "text/markdown" in data:
                parts.append(data["text/markdown"])
            elif "image/png" in data:
                image = folder / f"landing-{len(parts)}.png"
                image.write_bytes(base64.b64decode(data["image/png"]))
                alt = output.get("metadata", {}).get("image/png", {}).get("alt", "a figure")
                path = image.relative_to(root / "book").as_posix()
                parts.append(f"```{{image}} {path}\n:alt: {alt}\n:width: 100%\n```")
    if not parts:
        parts = [
            "*The answer is computed by the summary page: `python -m coop_utils book "
            f"--chapters {SUMMARY_CHAPTER[:2]}` executes it.*"
        ]
    landing = folder / "landing.md"
    landing.write_text("\n\n".join(parts) + "\n")
    return landing


#: seconds a cell may take when it trains nothing or trains at smoke: a stuck kernel fails,
#: naming the cell, rather than hang a build (preview and full training has no limit)
CELL_TIMEOUT_S = 600
#: cell tags the book removes: the defaults of the parameters and papermill's injected values
REMOVED_TAGS = ("parameters", "injected-parameters")


def _prepare_for_the_book(path: Path) -> None:
    """Tag the parameter cells ``remove-cell`` and drop any widget state, so the HTML page
    shows neither and loads no widget manager."""
    # here, not at the top: the notebook packages add ~2.5 s to every command's start-up
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        tags = cell.metadata.get("tags", [])
        if any(tag in tags for tag in REMOVED_TAGS) and "remove-cell" not in tags:
            cell.metadata["tags"] = [*tags, "remove-cell"]
    notebook.metadata.pop("widgets", None)
    nbformat.write(notebook, path)


def _converted(source: Path, folder: Path) -> Path:
    """The chapter ``source`` (py:percent) as a notebook in ``folder``, converted by jupytext."""
    # here, not at the top: the notebook packages add ~2.5 s to every command's start-up
    import jupytext

    converted = folder / f"{source.stem}.ipynb"
    jupytext.write(jupytext.read(source), converted)
    return converted


def execute_chapter(source: Path, output: Path, parameters: Mapping[str, Any]) -> ChapterRun:
    """Convert ``source`` with jupytext and execute it with papermill into ``output``."""
    # here, not at the top: the notebook packages add ~2.5 s to every command's start-up
    import papermill

    started = time.perf_counter()
    output.parent.mkdir(parents=True, exist_ok=True)
    error = None
    trains_long = parameters.get("profile", "smoke") != "smoke" and parameters.get("train", True)
    with tempfile.TemporaryDirectory() as scratch:
        try:
            converted = _converted(source, Path(scratch))
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
    # here, not at the top: the notebook packages add ~2.5 s to every command's start-up
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
                source,
                target,
                dirs_exist_ok=True,
                ignore=shutil.ignore_patterns("executed", "generated"),
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
    # here, not at the top: the notebook packages add ~2.5 s to every command's start-up
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
            converted = _converted(source, Path(scratch))
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
        echo(f"  {result.name}: {result.seconds:.1f} s{'' if result.error is None else ' FAILED'}")
        if result.error is not None:
            echo(f"    {result.error}")

    if build and report.ok:  # no chapter failed
        for source in chapter_paths():
            output = root / EXECUTED_DIR / f"{source.stem}.ipynb"
            if not output.exists():
                _placeholder(source, output)
        write_landing(root)
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
