"""The book: the runner's helpers, the smoke book built with warnings as errors, its pages and
images (the ``built`` fixture is in conftest.py; the pages in a browser: test_browser.py)."""

import json
import textwrap
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from test_notebooks import CHAPTERS, FIGURE_CHAPTERS

from coop_utils import (
    book,
    chapters,
    engineering,
    listings,
    replication,
    result_plots,
    results,
    training_cost,
)
from coop_utils.__main__ import main
from coop_utils.config import load_config

# --- the runner ---------------------------------------------------------------------------


def test_chapters_are_selected_by_number_or_name():
    assert [p.stem for p in book.select_chapters(["1", "03"])] == [CHAPTERS[1], CHAPTERS[3]]
    assert [p.stem for p in book.select_chapters([CHAPTERS[6]])] == [CHAPTERS[6]]
    assert [p.stem for p in book.select_chapters(["0"])] == ["00_does_it_replicate"]
    assert len(book.select_chapters(None)) == 9
    with pytest.raises(ValueError, match="unknown chapter '99'"):
        book.select_chapters(["99"])


def test_profile_parameters_carry_device_seed_and_chapter_settings():
    base, settings = book.profile_parameters("smoke")
    assert base["profile"] == "smoke" and base["device"] == "cpu" and base["seed"] == 0
    assert base["train"] is False and book.profile_parameters("preview", train=True)[0]["train"]
    assert set(settings) <= set(CHAPTERS)


def test_a_run_command_names_only_what_differs_from_the_profile():
    config = load_config("preview", dataset="tiny-imagenet", seed=2, data_root="/data")
    command = "python -m coop_utils train --profile preview --dataset tiny-imagenet"
    assert chapters.run_command(config) == f"{command} --method cooperative --seed 2"
    ablation = load_config("preview", variant="no-sfsl", sfsl=False, epochs=2)
    assert chapters.run_command(ablation).endswith("--variant no-sfsl --set epochs=2")


def test_unknown_chapter_setting_is_refused(tmp_path, monkeypatch):
    (tmp_path / "smoke.yaml").write_text("chapters:\n  08_missing: {x: 1}\n")
    monkeypatch.setattr(book, "PARAMS_DIR", tmp_path)
    with pytest.raises(ValueError, match="unknown chapter"):
        book.profile_parameters("smoke")


def test_an_override_no_chapter_declares_is_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="no selected chapter declares"):
        book.build_book("smoke", chapters=["01"], overrides={"nonsense": 1}, book_root=tmp_path)
    assert not (tmp_path / "book" / "executed").exists()


def test_command_line_names_a_bad_chapter(capsys):
    assert main(["book", "--chapters", "42", "--no-build"]) == 2
    assert "unknown chapter '42'" in capsys.readouterr().err


def test_a_failing_chapter_is_named_with_its_cell(tmp_path, monkeypatch):
    source = tmp_path / "notebooks" / "01_broken.py"
    source.parent.mkdir()
    source.write_text(
        textwrap.dedent(
            """\
            # ---
            # jupyter:
            #   kernelspec:
            #     display_name: Python 3
            #     language: python
            #     name: python3
            # ---

            # %% [markdown]
            # # Broken

            # %% tags=["parameters"]
            profile = "smoke"

            # %%
            x = 1

            # %%
            raise RuntimeError("boom")
            """
        )
    )
    result = book.execute_chapter(source, tmp_path / "out.ipynb", {"profile": "smoke"})
    assert result.error is not None
    assert "01_broken" in result.error and "boom" in result.error
    assert "cell" in result.error and "raise RuntimeError" in result.error


def test_a_chapter_not_executed_yet_gets_a_placeholder_page(tmp_path):
    source = book.select_chapters(["01"])[0]
    book._placeholder(source, tmp_path / "page.ipynb")
    page = nbformat.read(tmp_path / "page.ipynb", as_version=4)
    assert page.cells[0].source.startswith("# Dynamic depth")
    assert f"--chapters {source.stem[:2]}" in page.cells[0].source


def shown_code_lines(name: str) -> list[str]:
    """The lines of a chapter's code cells that the book shows (not removed, not hidden
    parameters)."""
    import jupytext

    hidden = {"remove-cell", "remove-input", "parameters"}
    notebook = jupytext.read(book.NOTEBOOKS_DIR / f"{name}.py")
    return [
        line
        for cell in notebook.cells
        if cell.cell_type == "code" and not hidden & set(cell.metadata.get("tags", []))
        for line in cell.source.splitlines()
    ]


@pytest.mark.parametrize("name", CHAPTERS)
def test_the_code_a_chapter_shows_fits_the_column(name):
    """The book's text column holds 78 characters of code at a 1280-pixel window."""
    wide = [line for line in shown_code_lines(name) if len(line) > listings.CODE_WIDTH]
    assert not wide, f"{len(wide)} shown line(s) wider than {listings.CODE_WIDTH}: {wide}"


def test_shown_source_is_laid_out_to_fit_the_column_and_keeps_its_code():
    import ast

    from coop_utils.systems import CooperativeSystem

    shown = listings.show_source(CooperativeSystem.backward_step).data
    assert shown.startswith("```python\ndef backward_step(")
    assert max(map(len, shown.splitlines())) <= listings.CODE_WIDTH
    source = textwrap.dedent(
        """\
        def f(x):  # a comment long enough to push this line well past the width of the book
            return g(x, "a long string of words that does not fit on one line", {"key": x}, 1)
        """
    )
    fitted = listings.fit_source(source)
    assert max(map(len, fitted.splitlines())) <= listings.CODE_WIDTH
    assert ast.dump(ast.parse(fitted)) == ast.dump(ast.parse(source))
    split = listings._split_string(
        '        f"{value:.2f} is a value, and these are words enough to pass the width {x}",',
        60,
    )
    assert len(split) == 2 and all(len(line) <= 60 for line in split)
    value, x = 1.0, 2
    assert eval("".join(line.strip().rstrip(",") for line in split)) == (
        f"{value:.2f} is a value, and these are words enough to pass the width {x}"
    )


def test_a_long_command_is_shown_in_lines_that_fit_the_column():
    command = "python -m coop_utils train --profile preview --dataset tiny-imagenet"
    command += " --method independent --seed 1 --set epochs=18"
    command += " --set results_root=results/compute-matched"
    shown = listings.wrap_command(command)
    lines = shown.split("\n")
    assert len(lines) > 1 and all(len(line) <= listings.CODE_WIDTH for line in lines)
    assert all(line.endswith(" \\") for line in lines[:-1])
    assert " ".join(line.removesuffix(" \\").strip() for line in lines) == command
    assert "--seed 1" in shown and "--set epochs=18" in shown  # an option keeps its value
    assert listings.wrap_command("python x.py --a 1") == "python x.py --a 1"


# --- the built smoke book -------------------------------------------------------------------


class Images(HTMLParser):
    """The ``src`` of every ``<img>`` of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.sources.append(dict(attrs).get("src", ""))


def image_sources(page: Path) -> list[str]:
    parser = Images()
    parser.feed(page.read_text())
    return parser.sources


def test_the_smoke_book_builds_with_warnings_as_errors(built):
    assert (built / "index.html").exists()
    for page in ("index", "reproducing", "open-decisions", "bibliography"):
        assert (built / "book" / f"{page}.html").exists()


@pytest.mark.parametrize("name", FIGURE_CHAPTERS)
def test_every_chapter_page_has_a_figure_whose_image_exists(built, name):
    page = built / "book" / "executed" / f"{name}.html"
    sources = [src for src in image_sources(page) if not src.startswith("data:")]
    assert sources, f"{name} has no figure"
    for src in sources:
        assert (page.parent / src).resolve().is_file(), f"{name}: missing image {src}"
    assert "Smoke run: these numbers are not results" in page.read_text()


def test_pages_hide_their_parameters_and_load_no_widget_manager(built):
    for page in built.rglob("*.html"):
        text = page.read_text()
        assert 'profile = "smoke"' not in text, f"{page}: a parameters cell is shown"
        for script in ("require.js", "require.min.js", "html-manager", "embed-amd"):
            assert script not in text, f"{page} loads {script}"
    chapter = (built / "book" / "executed" / f"{CHAPTERS[1]}.html").read_text()
    assert "_static/book.css" in chapter and (built / "_static" / "book.css").is_file()


def test_every_image_the_book_references_exists(built):
    for page in built.rglob("*.html"):
        for src in image_sources(page):
            if not src.startswith(("data:", "http:", "https:")):
                assert (page.parent / src).resolve().is_file(), f"{page}: missing {src}"


def test_the_bibliography_lists_the_paper(built):
    text = (built / "book" / "bibliography.html").read_text().lower()
    assert "cooperative learning for cost-adaptive inference" in text
    assert "be your own teacher" in text


def test_tables_show_a_dash_for_a_missing_value_and_the_decimals_asked_for():
    table = pd.DataFrame({"seeds": [3, 1], "hours": [0.7, 0.413], "range": [1.0, float("nan")]})
    every = chapters.dashes(table, 2)
    assert every.to_dict("list") == {
        "seeds": ["3.00", "1.00"],
        "hours": ["0.70", "0.41"],
        "range": ["1.00", "–"],
    }
    some = chapters.dashes(table, {"hours": 2, "range": 1})
    assert some.to_dict("list") == {
        "seeds": [3, 1],
        "hours": ["0.70", "0.41"],
        "range": ["1.0", "–"],
    }
    assert chapters.dashes(table)["range"].tolist() == [1.0, "–"]


def test_benchmark_records_are_read_with_their_provenance(tmp_path):
    from coop_utils.runs import write_benchmark

    assert engineering.benchmark_records(results.load(tmp_path)) == {}
    path = write_benchmark(
        tmp_path / "benchmarks" / "train_step.json", "train_step", {"ratio": 1.05}
    )
    (tmp_path / "benchmarks" / "unrelated.json").write_text("{}")
    records = engineering.benchmark_records(results.load(tmp_path))
    assert list(records) == ["train_step"] and records["train_step"]["results"] == {"ratio": 1.05}
    label = engineering.benchmark_label(records["train_step"])
    assert "(CPU," in label and records["train_step"]["date"][:10] in label
    assert json.loads(path.read_text())["command"].startswith("python ")


def test_recorded_depths_show_accuracy_then_the_committed_training_curves(tmp_path, monkeypatch):
    """A chapter's recorded section: the label, the accuracy-by-depth figure and table, then
    the training curves read from the committed per-epoch log (validation top-1 per depth)."""
    import matplotlib.pyplot as plt
    from test_notebooks import fabricate_results

    root = tmp_path / "results"
    fabricate_results(root, {"cooperative", "cooperative-seed1", "byot"})
    logs = root / "preview" / "tiny-imagenet" / "logs"
    logs.mkdir(parents=True)
    (logs / "cooperative.csv").write_text(
        "epoch,global_step,lr,train_loss,images_per_s,val_top1_deepest,val_top1_shallowest\n"
        "1,300,0.05,19.5,40.1,10.5,8.0\n2,600,0.0,18.3,40.3,14.6,11.5\n"
    )
    shown = []
    monkeypatch.setattr(chapters, "display", lambda item: shown.append(item))
    found = results.load(root)
    chapters.show_recorded_depths(found, "tiny-imagenet", ["teammate0", "teammate1"])
    kinds = [type(item).__name__ for item in shown]
    assert kinds == ["Markdown", "Figure", "DataFrame", "Figure"], kinds
    assert "`cooperative` (2 seeds)" in shown[0].data
    assert set(shown[2].index) == {"Teammate 0", "Teammate 1"}  # the names the book gives them
    curves = shown[3]
    assert curves.axes[1].get_ylabel() == "validation top-1 (%)"
    assert not plt.fignum_exists(curves.number), "a figure shown twice"
    assert found.logs_of(found.frame[found.frame["run"] == "byot"]) == {}
    rows = found.logs_of(found.frame[found.frame["run"] == "cooperative"])
    assert list(rows) == ["cooperative"]  # cooperative-seed1 has no log
    assert pd.DataFrame(rows["cooperative"])["val_top1_deepest"].tolist() == ["10.5", "14.6"]


def test_the_committed_samples_are_those_the_recorded_network_was_tested_on():
    """The predictions figure's images: every label is a class the deployed network learned,
    prepared at its image size (samples of another profile's classes are refused, below)."""
    found = results.load(chapters.REPO_ROOT / "results")
    profile, rows = found.campaign("tiny-imagenet")
    if "cooperative" not in set(rows["file"]):
        pytest.skip("no recorded cooperative run on tiny-imagenet")
    config = results.config_of(rows[rows["file"] == "cooperative"])
    samples = chapters.recorded_samples(found, config)
    assert samples is not None, "no committed samples: run benchmarks/make_samples.py"
    assert int(samples.labels.max()) < config.num_classes
    assert samples.images.shape[-1] == config.image_size
    assert len(set(samples.labels.tolist())) == len(samples.labels), "one image per class"


def test_samples_prepared_for_other_classes_are_refused(tmp_path):
    import numpy as np

    config = load_config("preview", dataset="tiny-imagenet")
    folder = tmp_path / "samples" / "preview"
    folder.mkdir(parents=True)
    images = np.zeros((2, 3, config.image_size, config.image_size), dtype=np.uint8)
    stats = {"mean": np.zeros(3), "std": np.ones(3), "class_names": np.array(["a", "b"])}
    for labels, classes in (([0, 99], config.num_classes), ([0, 1], 100)):
        np.savez(
            folder / "tiny-imagenet.npz",
            images=images,
            labels=np.array(labels),
            num_classes=classes,
            image_size=config.image_size,
            **stats,
        )
        with pytest.raises(ValueError, match="make_samples.py"):
            chapters.recorded_samples(results.load(tmp_path), config)
    np.savez(
        folder / "tiny-imagenet.npz",
        images=images,
        labels=np.array([0, 1]),
        num_classes=config.num_classes,
        image_size=config.image_size,
        **stats,
    )
    assert chapters.recorded_samples(results.load(tmp_path), config).labels.tolist() == [0, 1]


def test_a_dataset_the_campaign_does_not_train_is_said_to_be_untested_not_pending():
    outside = chapters.recorded_label(results.empty(), "cifar100")
    assert "trains on tiny-imagenet only" in outside and "yet" not in outside
    assert "is recorded yet" in chapters.recorded_label(results.empty(), "tiny-imagenet")


def test_a_regime_of_two_campaigns_is_labelled_by_both_and_by_the_runs_its_figure_draws():
    """The short campaign's runs beside their control at equal training compute (another
    results folder, 18 epochs) are named as both, each campaign with its epochs, never as the
    control's campaign alone; the headline figure's label lists the runs it draws only."""
    from test_verdict import summaries

    found = summaries(seeds=1)
    control = {results.MATCHED_NAME: found.pop(results.MATCHED_NAME)}
    where = {"root": results.MATCHED_ROOT, "path": "compute-matched/preview/cifar100/x.json"}
    frame = pd.concat([results.frame_of(control, **where), results.frame_of(found)])
    label = chapters.recorded_label(frame, "cifar100")
    assert label.startswith(
        "**Recorded runs on cifar100 of the preview campaign and of the control at equal "
        "training compute** (resnet20 for 6 epochs; in the control at equal training compute: "
        "resnet20 for 18 epochs; test CPU;"
    ), label
    assert label.index("`cooperative`") < label.index(f"`{results.MATCHED_NAME}`")  # main first
    drawn = chapters.recorded_label(result_plots.headline_rows(frame), "cifar100")
    assert "`cooperative-no-sfsl`" in label and "no-sfsl" not in drawn  # an ablation: not drawn
    assert drawn.endswith(
        f"`cooperative`, `independent`, `byot`, `branchynet`, `{results.MATCHED_NAME}`."
    ), drawn
    one = chapters.recorded_label(results.frame_of(found), "cifar100")  # one campaign: as before
    assert one.startswith("**Recorded preview runs on cifar100** (resnet20 for 6 epochs; test")
    converged = chapters.recorded_label(results.frame_of(found, root="converged"), "cifar100")
    assert converged.startswith("**Recorded converged campaign's runs on cifar100** (resnet20")


def test_the_training_compute_note_sets_the_recorded_training_flops_side_by_side():
    """The claims compare methods at equal epochs, not equal training compute: the note says
    how many times the FLOPs of each baseline a cooperative seed trains with (by the recorded
    training FLOPs, not wall time), and what the step benchmark measured."""
    from test_verdict import summaries, timed_campaign

    runs = summaries(seeds=3)
    timed_campaign(runs)
    for name, run in runs.items():  # PFLOPs per seed: cooperative 0.5, BYOT 0.1, others 0.2
        run["training_flops"] = 1e15 * (0.5 if name.startswith("cooperative") else 0.2)
        run["training_flops"] *= 0.5 if name.startswith("byot") else 1.0
    frame = results.frame_of(runs)
    note = training_cost.training_compute_note(frame)
    assert note.startswith("**Training compute is not matched.**")
    assert "Every method trains for the same 6 epochs" in note
    assert "trains with 0.5 PFLOPs per seed (its recorded training FLOPs)" in note
    assert "2.5× the 0.2 of the independent networks of every depth" in note
    assert "5.0× the 0.1 of BYOT and 2.5× the 0.2 of BranchyNet." in note
    assert " h " not in note  # wall times, which measure the machine's load, are not compared
    cooperative_only = frame[frame["run"].str.startswith("cooperative")]
    assert training_cost.training_compute_note(cooperative_only) == ""
    # the side-by-side step benchmark, when recorded, says what a step costs
    step = {"device": "quiet CPU", "results": {"arch": "resnet20", "batch_size": 64}}
    step["results"] |= {"cooperative_step_ms": 574.3, "single_network_step_ms": 100.9}
    timed = training_cost.training_compute_note(frame, step)
    assert "takes 574 ms: 5.7× one full-depth network's step (101 ms)." in timed
    assert timed.replace(training_cost._step_cost(step), "") == note
    # with the step's Teammate passes at each of resnet20's plans (3, 6, 9 blocks), the
    # independent networks' step is estimated: 30 + mean(60, 70) + 100 = 195 ms
    parts = {"Teammate 0, full depth": 100.0, "Teammate 0, sub-network s=0.7": 60.0}
    parts |= {"Teammate 1, sub-network s=0.5": 70.0, "Teammate 1, sub-network s=0.3": 30.0}
    step["results"]["parts_ms"] = parts | {"Leader, full depth": 100.0, "SGD step": 1.0}
    assert "and 2.9× a step of each of the 3 independent networks (195 ms" in (
        training_cost.training_compute_note(frame, step)
    )
    del parts["Teammate 1, sub-network s=0.3"]  # no pass at 3 blocks: no estimate
    step["results"]["parts_ms"] = parts
    assert "independent networks (" not in training_cost.training_compute_note(frame, step)


def test_the_learning_budget_rule_reads_the_recorded_gains_and_the_time_a_run_takes():
    """E_c: the smallest budget whose doubling gains less than 1.5 validation points, unless a
    cooperative run at it would take more than 2 h quiet: then the largest budget that fits."""
    budgets, epoch_s = [6, 12, 24, 48], 225.0  # 24 epochs: 1.5 h; 48: 3.0 h
    assert training_cost.learning_budget({6: 36.0, 12: 47.0}, budgets, epoch_s) == (
        None,
        "the pilot's 24-epoch run is not recorded yet",
    )
    chosen, why = training_cost.learning_budget({6: 36.0, 12: 47.0, 24: 48.0}, budgets, epoch_s)
    assert chosen == 12 and why.startswith("doubling 12 to 24 epochs gains +1.0 points")
    chosen, why = training_cost.learning_budget({6: 36.0, 12: 47.0, 24: 50.0}, budgets, epoch_s)
    assert chosen == 24 and "largest budget whose cooperative run fits in 2 h (1.5 h;" in why
    assert "48 epochs: 3.0 h" in why  # whatever 48 epochs would gain
    chosen, _ = training_cost.learning_budget(
        {6: 36.0, 12: 47.0, 24: 50.0, 48: 50.5}, budgets, 100.0
    )
    assert chosen == 24  # on a faster machine 48 fits, and the plateau decides


def test_what_doubling_the_converged_budget_gains_is_read_from_the_pilot():
    """How far from flat a budget is: the budget pilot's plain network's validation gain from
    doubling it, read from the committed pilot; none where a budget is not recorded."""
    pilot = book.REPO_ROOT / "results" / "pilot" / "preview" / "tiny-imagenet"
    top1 = {
        epochs: json.loads((pilot / f"independent-budget-e{epochs}.json").read_text())["metrics"][
            "independent"
        ]["1"]["val_top1"]
        for epochs in (24, 48)
    }
    frame = results.load(book.REPO_ROOT / "results").frame
    assert training_cost.doubling_gain(frame, 24) == pytest.approx(top1[48] - top1[24])
    assert training_cost.doubling_gain(frame, 48) is None  # 96 epochs: not in the pilot
    assert training_cost.doubling_gain(results.empty(), 24) is None


def test_the_summary_pages_opening_names_the_scope_and_counts_each_regime():
    from test_verdict import summaries

    from coop_utils import verdict

    config = load_config("preview", dataset="tiny-imagenet")
    scope = replication.scope_line(
        config, ["6", "24"], load_config("full", dataset="tiny-imagenet")
    )
    assert scope == (
        "<b>Partial replication, rebuilt from the paper's abstract:</b> ResNet-20 run at 3, 6 "
        "and 9 of its 9 blocks, 50 of Tiny ImageNet's 200 classes at 32 px, 6 and 24 epochs, "
        "against the paper's ResNet-152 on all 200 classes at 64 px."
    )
    table = verdict.claim_table(results.frame_of(summaries(seeds=2)))
    plan = results.regime_plan("preview", regimes=["short"])
    line = replication.tally_line(table, plan, {"short": "6"})
    assert line.startswith("<b>Short regime, 6 epochs:</b> 0 of 33 runs recorded; at equal ")
    # the claims at equal epochs are counted apart from those at equal training compute
    assert (
        "at equal epochs, of its 13 claims, 3 are inconclusive (3 exploratory by design) " in line
    )
    assert "and 10 are not yet decided; at equal training compute, its 1 claim is not yet " in line
    # with the FLOPs multiple of the regime's baselines, the equal epochs say what they cost
    priced = replication.tally_line(table, plan, {"short": "6"}, compute={"short": "2.7–5.3"})
    assert "at equal epochs (where the cooperative run trains with 2.7–5.3× the FLOPs" in priced
    waiting = table.assign(
        verdict=table["verdict"].where(table["regime_key"] == "", "not yet decided")
    )
    assert "0 of 33 runs recorded; its 14 claims are not yet decided." in replication.tally_line(
        waiting, plan, {"short": "6"}
    )  # nothing decided: one count, not one per kind
    assert line.endswith("Implementation check (depth cuts inference cost): inconclusive.")
    assert replication.tally_line(table, plan, {"short": "6"}, bold=("*", "*")).startswith("*Short")


def test_the_summary_page_names_each_regime_and_the_runs_each_still_waits_for(
    tmp_path, monkeypatch
):
    """:func:`replication.summarise` over a results root with part of the short campaign: the
    converged regime is planned (named, counted) but has no run to judge; the results section
    says which runs each regime still needs, and a claim judged in no regime reads cleanly."""
    from test_notebooks import fabricate_results

    root = tmp_path / "results"
    fabricate_results(root, {"cooperative", "cooperative-seed1", "independent"})
    summary = replication.summarise(results.load(root), margin=2.0)
    assert summary.names == {
        "converged": "converged regime, 24 epochs",
        "short": "short regime, 6 epochs",
    }
    assert list(summary.regimes) == ["short"]  # recorded runs only
    assert "6 and 24 epochs, against the paper's ResNet-152" in summary.scope
    shown = []
    monkeypatch.setattr(replication, "display", shown.append)
    summary.show_results()
    texts = [item.data for item in shown]
    assert texts[0].startswith("<p><b>Converged regime, 24 epochs:</b> 0 of 27 runs recorded")
    waiting = {t.split(":**")[0]: t for t in texts if t.startswith("**Not yet decided")}
    assert set(waiting) == {
        "**Not yet decided (converged regime, 24 epochs)",
        "**Not yet decided (short regime, 6 epochs)",
    }
    assert "until 27 more runs are recorded (`cooperative` ×3," in waiting[next(iter(waiting))]
    short = waiting["**Not yet decided (short regime, 6 epochs)"]
    assert "`cooperative` ×1" in short and "`independent` ×2" in short  # seeds still to come
    assert not any(", :" in text or ", ." in text for text in texts)  # no empty regime


def test_the_landing_page_opens_on_what_the_summary_chapter_computed(tmp_path):
    import base64

    landing = book.write_landing(tmp_path)  # no summary chapter executed: how to compute it
    assert "--chapters 00" in landing.read_text()
    png = base64.b64encode(b"\x89PNG fake").decode()
    cells = [
        nbformat.v4.new_code_cell(
            "x = 1",
            outputs=[nbformat.v4.new_output("display_data", {"text/markdown": "hidden"})],
        ),
        nbformat.v4.new_code_cell(
            "show()",
            metadata={"tags": ["remove-cell", "landing"]},
            outputs=[
                nbformat.v4.new_output("display_data", {"text/markdown": "**Three sentences.**"}),
                nbformat.v4.new_output(
                    "display_data", {"image/png": png}, metadata={"image/png": {"alt": "acc"}}
                ),
            ],
        ),
    ]
    executed = tmp_path / book.EXECUTED_DIR / f"{book.SUMMARY_CHAPTER}.ipynb"
    executed.parent.mkdir(parents=True)
    nbformat.write(nbformat.v4.new_notebook(cells=cells), executed)
    text = book.write_landing(tmp_path).read_text()
    assert text == (
        "**Three sentences.**\n\n```{image} generated/landing-1.png\n:alt: acc\n:width: 100%\n```\n"
    )
    assert (tmp_path / "book" / "generated" / "landing-1.png").read_bytes() == b"\x89PNG fake"
    assert "{include} generated/landing.md" in (book.REPO_ROOT / "book" / "index.md").read_text()


def test_recorded_depths_of_the_converged_campaign_show_its_seeds_alone(tmp_path, monkeypatch):
    """``regime="converged"``: the runs of ``results/converged/`` only, not the main
    campaign's, under a title that names the campaign."""
    import shutil

    from test_notebooks import fabricate_results

    root = tmp_path / "results"
    fabricate_results(root, {"cooperative", "cooperative-seed1"})
    converged = root / "converged" / "preview" / "tiny-imagenet"
    converged.mkdir(parents=True)
    shutil.copy(root / "preview" / "tiny-imagenet" / "cooperative.json", converged)
    shown = []
    monkeypatch.setattr(chapters, "display", lambda item: shown.append(item))
    found = results.load(root)
    chapters.show_recorded_depths(found, "tiny-imagenet", ["teammate0"], regime="converged")
    kinds = [type(item).__name__ for item in shown]
    assert kinds == ["Markdown", "Figure", "DataFrame"], kinds  # no log: no curves
    assert shown[0].data.startswith("**Recorded converged campaign's runs on tiny-imagenet**")
    assert shown[0].data.endswith(": `cooperative`."), shown[0].data  # one seed
    assert "converged campaign" in shown[1].axes[0].get_title()
    shown.clear()
    chapters.show_recorded_depths(found, "tiny-imagenet", ["teammate0"])
    assert "`cooperative` (2 seeds)" in shown[0].data


def test_the_recorded_setting_reads_classes_and_images_per_class_from_the_runs(tmp_path):
    """``chapters.recorded_setting``: the recorded cooperative runs' classes and image size
    against the dataset's, and the training images per class from an epoch's steps in the
    committed log; nothing when no cooperative run is recorded."""
    from test_notebooks import fabricate_results

    root = tmp_path / "results"
    assert chapters.recorded_setting(results.load(root), "tiny-imagenet") == ""
    fabricate_results(root, {"cooperative"})
    config = load_config("preview")
    summary = root / "preview" / "tiny-imagenet" / "cooperative.json"
    recorded = json.loads(summary.read_text())
    summary.write_text(json.dumps(recorded | {"config": config.to_dict() | {"seed": 0}}))
    text = chapters.recorded_setting(results.load(root), "tiny-imagenet")
    assert text.startswith(
        "The recorded preview runs use the first 50 of the dataset's 200 classes, at 32x32 "
        "(downsampled from 64x64 by area averaging, CIFAR's size)"
    ), text
    assert text.endswith("train resnet20 for 6 epochs of batch 64, SGD with Nesterov momentum.")
    log = root / "preview" / "tiny-imagenet" / "logs" / "cooperative.csv"
    log.parent.mkdir()
    steps = 300  # 300 steps of 64 with 5 % held out: 19,200 / 0.95 / 50 = 404 images a class
    log.write_text(f"epoch,global_step,train_loss\n1,{steps},2.0\n2,{2 * steps},1.5\n")
    text = chapters.recorded_setting(results.load(root), "tiny-imagenet")
    per_class = steps * config.batch_size / (1 - config.val_fraction) / 50
    assert f"about {round(per_class, -1):.0f} training images a class" in text
    assert "official split has 500: an epoch is 300 steps of 64 images" in text
