"""Every chapter executes at the smoke profile through papermill, as `make book` runs it.

The chapters run once per session (:func:`smoke_book`, shared with ``test_book.py``), into a
temporary book root with temporary run and results folders; ``COOP_CACHE_DIR`` is the session's
(``conftest.py``), so the repository is left alone.
"""

import json
import os
import shutil
from pathlib import Path

import jupytext
import nbformat
import pytest
import torch

from coop_utils import book, replication, results, verdict
from coop_utils.runs import write_benchmark

CHAPTERS = [path.stem for path in book.chapter_paths()]
#: the chapters that draw a figure at smoke: not the summary page (00) and the engineering
#: checks (08), which draw recorded results only, and none is recorded at smoke
FIGURE_CHAPTERS = [name for name in CHAPTERS if name[:2] not in ("00", "08")]
SMOKE_NOTE = "Smoke run: these numbers are not results"
ARTIFACTS = book.REPO_ROOT / "test-artifacts"


def smoke_book(tmp_path_factory) -> dict:
    """Execute every chapter at smoke and build the book, once per test session.

    ``COOP_TEST_BOOK=<folder>`` keeps the build in that folder and reuses it in later sessions
    (delete the folder to rebuild).
    """
    default = tmp_path_factory.getbasetemp() / "smoke-book"
    folder = Path(os.environ.get("COOP_TEST_BOOK", default))
    marker = folder / "report.json"
    if not marker.exists():
        folder.mkdir(parents=True, exist_ok=True)
        overrides = {"run_root": str(folder / "runs"), "results_root": str(folder / "results")}
        report = book.build_book(
            "smoke",
            overrides=overrides,
            book_root=folder / "root",
            echo=lambda line: None,
            capture_build=True,
        )
        summary = {
            "chapters": {
                chapter.name: {"seconds": chapter.seconds, "error": chapter.error}
                for chapter in report.chapters
            },
            "build_returncode": report.build_returncode,
            "build_output": report.build_output[-20000:],
            "timings": report.timings(),
        }
        marker.write_text(json.dumps(summary))
    summary = json.loads(marker.read_text())
    for name, chapter in summary["chapters"].items():
        chapter["output"] = str(folder / "root" / book.EXECUTED_DIR / f"{name}.ipynb")
    paths = {
        "root": folder / "root",
        "run_root": folder / "runs",
        "results_root": folder / "results",
    }
    return summary | {key: str(path) for key, path in paths.items()}


@pytest.fixture(scope="session")
def executed(tmp_path_factory):
    return smoke_book(tmp_path_factory)


def outputs(notebook, kind: str | None = None) -> list[dict]:
    return [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if kind is None or kind in output.get("data", {})
    ]


def text_of(notebook) -> str:
    parts = []
    for output in outputs(notebook):
        parts.append(output.get("text", ""))
        data = output.get("data", {})
        parts += [data.get(kind, "") for kind in ("text/plain", "text/html", "text/markdown")]
    return "\n".join(part if isinstance(part, str) else "".join(part) for part in parts)


@pytest.mark.parametrize("name", CHAPTERS)
def test_chapter_executes_at_smoke(executed, name):
    chapter = executed["chapters"][name]
    assert chapter["error"] is None, chapter["error"]
    notebook = nbformat.read(chapter["output"], as_version=4)
    assert not [o for o in outputs(notebook) if o.get("output_type") == "error"]
    first = next(o for o in outputs(notebook))
    assert SMOKE_NOTE in first["data"]["text/html"], "the first output must say: not results"
    if name in FIGURE_CHAPTERS:
        assert outputs(notebook, "image/png"), f"{name} draws no figure"
    injected = next(
        c for c in notebook.cells if "injected-parameters" in c.metadata.get("tags", [])
    )
    assert 'profile = "smoke"' in injected.source and "train = True" in injected.source
    assert "remove-cell" in injected.metadata.tags


def test_chapter_timings_are_kept_as_an_artifact(executed):
    """The time of each chapter, for the record (not asserted: CI machines are shared)."""
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "smoke-book-timings.txt").write_text(executed["timings"] + "\n")
    assert set(executed["chapters"]) == set(CHAPTERS)


@pytest.mark.parametrize("name", CHAPTERS)
def test_chapter_source_is_a_py_percent_notebook_with_parameters(name):
    source = book.NOTEBOOKS_DIR / f"{name}.py"
    notebook = jupytext.read(source)
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    assert notebook.cells[0].cell_type == "markdown"
    assert notebook.cells[0].source.startswith("# "), "a chapter opens with its title"
    parameters = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(parameters) == 1
    names = {
        line.split("=")[0].strip() for line in parameters[0].source.splitlines() if "=" in line
    }
    assert set(book.BASE_PARAMETERS) <= names


def test_a_reexecuted_chapter_reuses_its_finished_run(executed, tmp_path):
    source = book.NOTEBOOKS_DIR / "04_cooperative_cifar100.py"
    parameters = {
        "profile": "smoke",
        "device": "cpu",
        "run_root": executed["run_root"],
        "results_root": executed["results_root"],
    }
    result = book.execute_chapter(source, tmp_path / "again.ipynb", parameters)
    assert result.error is None, result.error
    assert "Reused:" in text_of(nbformat.read(result.output, as_version=4))


def fabricate_results(root: Path, names: set[str] | None = None) -> dict:
    """Made-up preview summaries on Tiny ImageNet (``test_verdict``'s, 3 seeds of every arm; only
    ``names`` if given), recorded as the campaign records them, with the committed weights of
    the cooperative runs' Teammates (random, fp16) and the benchmark records."""
    from test_verdict import summaries

    from coop_utils import export
    from coop_utils.config import campaign, load_config
    from coop_utils.gating import add_gate
    from coop_utils.models import build_model, calibrate_batchnorm
    from coop_utils.runs import results_path

    hashes = {}
    for overrides in campaign("preview"):
        config = load_config("preview", **overrides)
        hashes[results_path(config).stem] = config.hash()
    chosen = {n: s for n, s in summaries(seeds=3).items() if names is None or n in names}
    for name, summary in chosen.items():
        summary["config"] |= {"dataset": "tiny-imagenet", "epochs": 6, "num_classes": 50}
        summary |= {"config_hash": hashes.get(name, "not in the campaign"), "code_digest": "d1"}
        path = root / "preview" / "tiny-imagenet" / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(summary))
    config = load_config("preview")
    for name in {"cooperative", "cooperative-no-sfsl"} & set(chosen):
        for network in ("teammate0", "teammate1"):
            net = build_model("resnet20", num_classes=config.num_classes, image_size=32)
            add_gate(net)
            calibrate_batchnorm(net.eval(), [torch.randn(8, 3, 32, 32)])
            target = root / "weights" / "preview" / "tiny-imagenet" / name / f"{network}.pt"
            export.save_network(net, target, config, network, half=True)
    record_benchmarks(root / "benchmarks")
    samples = book.REPO_ROOT / "results" / "samples"
    shutil.copytree(samples, root / "samples")
    return chosen


READER_CHAPTERS = ["00", "03", "05", "06", "07", "08"]


@pytest.mark.parametrize("recorded", ["none", "some"])
def test_the_readers_book_shows_recorded_results_and_trains_nothing(tmp_path, recorded):
    """The reader's book (no --train) with no result recorded, then with part of the campaign
    (made-up summaries and weights): every chapter executes, trains nothing, says how much of
    the campaign is recorded, shows the recorded runs and computes the verdict from them."""
    root = tmp_path / "results"
    some = {"cooperative", "cooperative-seed1", "cooperative-no-sfsl", "independent", "byot"}
    chosen = fabricate_results(root, some) if recorded == "some" else {}
    report = book.build_book(
        "preview",
        chapters=READER_CHAPTERS,
        overrides={"run_root": str(tmp_path / "runs"), "results_root": str(root)},
        book_root=tmp_path / "root",
        build=False,
        echo=lambda line: None,
    )
    texts = {}
    for chapter in report.chapters:
        assert chapter.error is None, chapter.error
        notebook = nbformat.read(chapter.output, as_version=4)
        texts[chapter.name[:2]] = text_of(notebook)
        assert SMOKE_NOTE not in texts[chapter.name[:2]]
        hidden = [
            c
            for c in notebook.cells
            if {"parameters", "injected-parameters"} & set(c.metadata.get("tags", []))
        ]
        assert len(hidden) == 2 and all("remove-cell" in c.metadata["tags"] for c in hidden)
    assert not (tmp_path / "runs").exists(), "the reader's book trained something"
    assert f"{len(chosen)} of 30 preview campaign runs recorded so far" in texts["00"]
    if recorded == "none":
        assert "Verdict pending" in texts["00"] and "No run on tiny-imagenet" in texts["05"]
        return
    found = results.load(root)
    table = verdict.replication_verdicts(found)
    plan = results.regime_plan("preview", found.frame)
    epochs = replication.regime_epochs(plan, results.best_runs(found.frame))
    assert replication.tally_line(table, plan, epochs) in texts["00"]
    opening = "rebuilt from the paper's abstract:</b> ResNet-20 run at 3, 6 and 9 of its 9 blocks"
    assert f"Partial replication, {opening}, 50 of Tiny ImageNet's 200 classes" in texts["00"]
    # the discussion: what waits for runs, and what each regime's campaign still has to record
    assert (
        "**Not yet decided (short regime, 6 epochs):** 14 claims, until 28 more runs"
        in (texts["00"])
    )
    assert "**Not yet decided (converged regime, 24 epochs):** 12 claims" in texts["00"]
    assert "0 of 27 preview converged campaign runs recorded so far" in texts["00"]
    assert "the grid has only 3 distinct plans (s = 0.2, 0.3, 0.4 keep 3 blocks;" in texts["00"]
    assert "**Training compute is not matched.**" in texts["00"]
    assert "Still to come: `cooperative-shared-bn`" in texts["00"]
    for number in ("00", "03", "05", "06", "07"):
        assert "Recorded preview runs on tiny-imagenet" in texts[number] or number == "00"
    assert "cooperative` (2 seeds)" in texts["05"]
    assert "**Which network a number is.**" in texts["05"]
    assert "The classes shown: 0: Egyptian cat" in texts["07"]
    assert "This build trains nothing" in texts["06"]
    # the training-compute note and the verdict table are the summary page's alone
    assert "**Training compute is not matched.**" not in texts["06"]
    assert 'class="verdicts"' not in texts["06"]
    # the benchmark records speak for themselves, targets met or not, on the appendix page
    step_cost = "a cooperative step takes 110 ms: 1.1× one full-depth network's step (100 ms)."
    assert step_cost in texts["00"]
    assert "Target met on resnet56: the slowest case is exported, eager" in texts["08"]
    assert "gate_overhead" not in texts["07"] and "Target met" not in texts["07"]
    assert texts["08"].count(": met.") >= 4 and "not met" not in texts["08"]


def record_benchmarks(folder):
    """Benchmark records in the shape the four benchmarks write (figures made up)."""
    depths = [
        {"arch": "resnet56", "s": s, "active_blocks": round(27 * s), "flops_ratio": s}
        | {"latency_ms_b1": 6 * s, "latency_ratio_b1": s}
        for s in (0.2, 0.5, 1.0)
    ]
    gate = [{"arch": "resnet56", "batch_size": 64, "plain_ms": 100.0, "gated_ms": 104.0}]
    write_benchmark(
        folder / "depth_cost.json",
        "depth_cost",
        {"depths": depths, "gate_overhead": [gate[0] | {"overhead": 0.04}]}
        | {"gate_overhead_target": 0.05, "latency_tolerance": 0.15, "targets_met": True},
    )
    step = {
        "arch": "resnet20",
        "batch_size": 64,
        "parts_ms": {"Leader, full depth": 100.0, "SGD step": 5.0},
        "cooperative_step_ms": 110.0,
        "single_network_step_ms": 100.0,
        "ratio": 110 / 105,
        "target": 1.1,
        "images_per_s": {"cooperative": 580.0, "single network": 640.0},
    }
    write_benchmark(folder / "train_step.json", "train_step", step)
    shipped = [
        {"s": 0.2, "active_blocks": 6, "flops": 5e7, "batch_size": 1, "variant": variant}
        | {"latency_ms": 2.0 * ratio, "ratio_to_gated": ratio}
        for variant, ratio in (("gated net(x, s)", 1.0), ("exported, eager", 0.9))
    ]
    write_benchmark(
        folder / "export_latency.json",
        "export_latency",
        {"arch": "resnet56", "rows": shipped, "target_ratio": 1.03, "passed": True},
    )
    measurements = [
        {"measurement": "BatchLoader, 2 torch thread(s)", "images": 7680, "seconds": 0.5}
        | {"images_per_s": 15360.0}
    ]
    ratios = [{"ratio": "BatchLoader / ImageFolder", "value": 18.0, "target": 10, "met": True}]
    write_benchmark(
        folder / "data_throughput.json",
        "data_throughput",
        {"measurements": measurements, "ratios": ratios},
    )
