"""The book's figures: every figure has a title and labelled axes with units; the tidy frames
they draw from hold what the chapters read."""

import matplotlib
import matplotlib.text

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pandas as pd
import pytest
import torch

from coop_utils import plots, result_plots, results, verdict
from coop_utils.evaluate import depth_costs
from coop_utils.gating import add_gate
from coop_utils.models import build_model


@pytest.fixture(autouse=True)
def close_figures():
    plots.use_book_style()  # the book's style: the sizes the column check measures
    yield
    plt.close("all")


def fake_metrics(networks=("teammate0", "teammate1"), factors=(0.2, 0.5, 1.0), base=50.0):
    """Run metrics in the shape ``train`` returns: network -> "<s>" -> row."""
    return {
        network: {
            f"{s:.4g}": {
                "top1": base + 30 * s + index,
                "top5": 90.0,
                "flops": int(1e8 * s),
                "val_top1": base + 30 * s - index,
                "latency_ms": 10 * s,
                "active_blocks": round(9 * s),
            }
            for s in factors
        }
        for index, network in enumerate(networks)
    }


#: a title as long as the book's longest: a figure wraps it to fit the column
LONG_TITLE = "Test top-1 against training compute (numbers: epochs; bars: 95 % over seeds) " * 2


def assert_fits_the_column(figure):
    """Drawn no wider than the book's text column, so that the page shows it at its own size,
    and no lettering under 10 pixels there."""
    width = plots.rendered_width_px(figure)
    assert width <= plots.COLUMN_PX, f"{width} px wide, the column is {plots.COLUMN_PX}"
    small = [
        (text.get_text(), text.get_fontsize())
        for text in figure.findobj(matplotlib.text.Text)
        if text.get_visible() and text.get_text().strip()
        and text.get_fontsize() * figure.dpi / 72 < 10
    ]  # fmt: skip
    assert not small, f"lettering under 10 px: {small}"
    assert_labels_apart(figure)


def assert_labels_apart(figure):
    """No two of the figure's titles, axis labels, annotations and legends below the axes
    overlap where they are drawn (two panels' long x labels can run into each other, and so can
    the numbers written beside two points close together)."""
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    texts = [figure._suptitle] if figure._suptitle else []
    texts += [label for label in (figure._supxlabel, figure._supylabel) if label]
    for ax in figure.axes:
        texts += [ax.title, ax.xaxis.label, ax.yaxis.label, *ax.texts]
    boxes = [
        (text.get_text(), text.get_window_extent(renderer))
        for text in texts
        if text.get_visible() and text.get_text().strip()
    ]
    boxes += [("the legend", legend.get_window_extent(renderer)) for legend in figure.legends]
    for i, (first, box) in enumerate(boxes):
        for second, other in boxes[i + 1 :]:
            assert not box.overlaps(other), f"{first!r} runs into {second!r}"


def assert_titled_and_labelled(figure):
    """A title, and every plotted axes labelled on both sides, with units in parentheses; the
    figure fits the book's column (:func:`assert_fits_the_column`)."""
    assert_fits_the_column(figure)
    title = figure._suptitle.get_text() if figure._suptitle else ""
    titles = [ax.get_title() for ax in figure.axes]
    assert title or any(titles), "the figure has no title"
    has_sup = figure._supxlabel is not None and figure._supylabel is not None
    first = figure.axes[0]
    for ax in figure.axes:
        if has_sup or not ax.axison:  # an axis turned off holds a legend
            continue
        xlabel, ylabel = ax.get_xlabel(), ax.get_ylabel()
        assert xlabel and "(" in xlabel, f"x axis label without unit: {xlabel!r}"
        if ax is first or not ax.get_shared_y_axes().joined(ax, first):
            assert ylabel and "(" in ylabel, f"y axis label without unit: {ylabel!r}"
    if has_sup:
        assert "(" in figure._supxlabel.get_text() and "(" in figure._supylabel.get_text()


def test_metrics_frame_has_depth_share_and_mflops():
    frame = result_plots.metrics_frame(fake_metrics(), method="cooperative")
    assert set(frame["network"]) == {"teammate0", "teammate1"}
    assert sorted(frame["s"].unique()) == [0.2, 0.5, 1.0]
    full = frame[frame["s"] == 1.0]
    assert (full["depth"] == 1.0).all()
    assert frame["mflops"].max() == pytest.approx(100.0)
    assert (frame["method"] == "cooperative").all()


def test_pareto_frontier_keeps_only_undominated_points():
    frame = pd.DataFrame(
        {"latency_ms": [1, 2, 3, 4, 5], "top1": [50, 49, 60, 60, 70], "method": list("abcde")}
    )
    front = plots.pareto_frontier(frame, "latency_ms", "top1")
    assert front["method"].tolist() == ["a", "c", "e"]


def test_comparison_table_indexes_methods_and_depths():
    frame = pd.concat(
        [
            result_plots.metrics_frame(
                {"teammate0": fake_metrics()["teammate0"]}, method="cooperative"
            ),
            result_plots.metrics_frame(fake_metrics(("byot",)), method="BYOT"),
        ]
    )
    table = result_plots.comparison_table(frame)
    assert table.index.names == ["method", "blocks run (share)"]
    assert "top-1 (%)" in table.columns and len(table) == 6


def test_comparison_table_gives_one_row_per_depth_plan():
    """Scaling factors that share a plan (resnet20: s = 0.2 to 0.4 all keep 3 blocks) are one
    row naming every factor, not repeated rows."""
    metrics = fake_metrics(("teammate0",), factors=(0.2, 0.3, 0.4, 1.0))
    for key in ("0.2", "0.3", "0.4"):
        metrics["teammate0"][key] |= {"active_blocks": 3, "top1": 40.0, "latency_ms": 2.0}
    metrics["teammate0"]["0.3"]["latency_ms"] = 4.0  # one plan timed twice, noisily
    table = result_plots.comparison_table(result_plots.metrics_frame(metrics, method="cooperative"))
    assert len(table) == 2
    shallow = table.loc[("cooperative", 0.33)]
    assert shallow["s or exit depth"] == "0.2, 0.3, 0.4"
    assert shallow["top-1 (%)"] == 40.0 and shallow["latency (ms)"] == pytest.approx(2.67, 0.01)


def test_methods_are_compared_on_the_mean_of_their_seeds_with_t_intervals():
    """A seed's factors of one plan count once: three seeds give a 2-degree-of-freedom interval,
    not one over every (seed, factor) row; the table counts the seeds."""
    low, high = result_plots.t_interval([1.0, 2.0, 3.0])
    assert (low + high) / 2 == pytest.approx(2.0)
    assert (high - low) / 2 == pytest.approx(verdict.t_critical(2) / 3**0.5, rel=1e-6)
    assert result_plots.t_interval([5.0]) == (5.0, 5.0)
    frames = []
    for seed, top1 in enumerate((40.0, 42.0, 44.0)):
        metrics = fake_metrics(("teammate0",), factors=(0.2, 0.3, 1.0))
        for key in ("0.2", "0.3"):  # one plan, two factors
            metrics["teammate0"][key] |= {"active_blocks": 3, "top1": top1, "flops": int(2e7)}
        frames.append(result_plots.metrics_frame(metrics, method="cooperative", seed=seed))
    frame = pd.concat(frames)
    table = result_plots.comparison_table(frame)
    assert table.loc[("cooperative", 0.33)]["seeds"] == 3
    assert table.loc[("cooperative", 0.33)]["top-1 (%)"] == 42.0
    figure = result_plots.method_comparison_figure(frame, "methods")
    bars = figure.axes[0].collections[0].get_segments()  # the error bar at the shallow plan
    shallow = min(bars, key=lambda segment: segment[0][0])
    half = (shallow[1][1] - shallow[0][1]) / 2
    assert half == pytest.approx(verdict.t_critical(2) * 2.0 / 3**0.5, rel=1e-6)


def test_block_plan_figure_draws_each_network():
    nets = {
        "resnet20": build_model("resnet20", 10, 32),
        "resnet32": build_model("resnet32", 10, 32),
    }
    frame = plots.block_plan_frame(nets, scaling_factors=(0.2, 0.6, 1.0))
    runs_at_full = frame[(frame["s"] == 1.0)].groupby("network")["runs"].all()
    assert runs_at_full.all()
    figure = plots.block_plan_figure(frame, "plans")
    assert len(figure.axes) == 2
    assert_titled_and_labelled(figure)


def test_block_plan_frame_follows_a_learned_gate():
    net = build_model("resnet20", 10, 32)
    gate = add_gate(net)
    with torch.no_grad():
        gate.logits.copy_(torch.arange(gate.logits.numel(), dtype=torch.float32))
    frame = plots.block_plan_frame({"gated": net}, scaling_factors=(0.5,))
    assert frame.loc[frame["runs"], "block"].tolist() == net.active_blocks(0.5)


def test_gumbel_figure():
    figure = plots.gumbel_temperature_figure(
        [2, 1, 0, -1], keep=2, temperatures=[0.5, 2], samples=50
    )
    assert_titled_and_labelled(figure)


def test_cost_figure_from_depth_costs():
    net = build_model("resnet20", 10, 32)
    costs = pd.DataFrame(depth_costs(net, (0.2, 1.0), latency_batch_sizes=(1,), repeats=1))
    assert_titled_and_labelled(plots.cost_figure(costs, "cost"))


def test_distillation_and_training_figures():
    assert_titled_and_labelled(plots.softmax_temperature_figure([2, 1, 0], [1, 4]))
    log = [
        {"epoch": "1", "train_loss": "3.0", "images_per_s": "100"},
        {"epoch": "2", "train_loss": "2.0", "images_per_s": "110"},
    ]
    assert_titled_and_labelled(result_plots.training_curves_figure({"a": log, "b": log}, "curves"))
    validated = [row | {"val_top1_deepest": "30", "val_top1_shallowest": "25"} for row in log]
    one = result_plots.training_curves_figure({"cooperative": validated}, "one run")
    assert_titled_and_labelled(one)
    assert [t.get_text() for t in one.legends[0].get_texts()] == ["deepest", "shallowest"]
    two = result_plots.training_curves_figure({"a": validated, "b": validated}, "two runs")
    assert {"a", "b", "deepest", "shallowest"} <= {t.get_text() for t in two.legends[0].get_texts()}
    frame = result_plots.metrics_frame(fake_metrics(), run="mutual").query("s == 1.0")
    assert_titled_and_labelled(result_plots.full_depth_accuracy_figure(frame, "bars"))


def test_accuracy_and_comparison_figures():
    assert_titled_and_labelled(plots.sfsl_weight_figure())
    metrics = fake_metrics() | {"leader": {"1": fake_metrics(("leader",))["leader"]["1"]}}
    frame = result_plots.metrics_frame(metrics)
    figure = result_plots.accuracy_by_depth_figure(frame, "by depth")
    assert_titled_and_labelled(figure)
    labels = [text.get_text() for text in figure.legends[0].get_texts()]
    assert sorted(labels) == ["leader (s = 1 only)", "teammate0", "teammate1"]
    assert figure.legends[0].legend_handles[labels.index("leader (s = 1 only)")].get_marker() == "*"
    # a single factor: a star drawn on top of the lines through it, not hidden under them
    (star,) = [line for line in figure.axes[0].get_lines() if line.get_marker() == "*"]
    lines = [line.get_zorder() for line in figure.axes[0].get_lines() if line is not star]
    assert list(star.get_xdata()) == [1.0] and star.get_zorder() > max(lines)
    methods = pd.concat(
        [
            result_plots.metrics_frame(fake_metrics(("teammate0",)), method="cooperative"),
            result_plots.metrics_frame(fake_metrics(("byot",), base=40), method="BYOT"),
        ]
    )
    assert_titled_and_labelled(result_plots.method_comparison_figure(methods, "methods"))
    assert_titled_and_labelled(plots.frontier_figure(methods, "frontier"))


def test_headline_figure_draws_each_method_with_its_seed_interval():
    def summary(seed, metrics, epochs=6):
        return {"config": {"seed": seed, "epochs": epochs}, "metrics": metrics}

    summaries = {
        "cooperative": summary(0, fake_metrics()),
        "cooperative-seed1": summary(1, fake_metrics(base=52.0)),
        "byot": summary(0, fake_metrics(("byot",), base=40)),
        "cooperative-no-sfsl": summary(0, fake_metrics(base=10)),  # an ablation: not drawn
        results.MATCHED_NAME: summary(0, fake_metrics(("independent",), base=45), epochs=18),
    }
    figure = result_plots.headline_figure(results.frame_of(summaries), "headline")
    assert_titled_and_labelled(figure)
    labels = figure.axes[0].get_legend_handles_labels()[1]
    # the methods named as the training-compute figure names them, in its order, each control
    # after its method with the epochs it trained for (not the regime's of the title)
    assert labels == [
        f"{result_plots.COOPERATIVE_LABEL} (2 seeds)",
        "independent networks, 18 epochs (equal training compute, 1 seed)",
        "BYOT (1 seed)",
    ]
    bars = [c for c in figure.axes[0].containers if c.has_yerr]
    styles = [bar.lines[0].get_linestyle() for bar in bars]
    assert styles == ["-", "--", "-"]  # the compute-matched control, dashed
    cooperative = bars[0].lines[2][0].get_segments()  # the error bars of the 2-seed method
    half = (cooperative[0][1][1] - cooperative[0][0][1]) / 2
    assert half == pytest.approx(12.706 * 2 / 2**0.5 / 2**0.5, rel=1e-3)  # t(1) * sd / sqrt(2)
    colours = [matplotlib.colors.to_hex(bar.lines[0].get_color()) for bar in bars]
    expected = ["cooperative", "independent", "byot"]  # the control: its method's colour
    assert colours == [matplotlib.colors.to_hex(plots.METHOD_COLOURS[m]) for m in expected]


def test_the_headline_figure_and_its_label_keep_the_methods_and_every_control():
    """The runs the figure draws (and its label names): the methods and each one's control at
    equal training compute, either name of it, never an ablation."""
    runs = ["cooperative-no-sfsl", "byot-flops-matched", "byot", results.MATCHED_NAME]
    runs += ["cooperative", "independent", "branchynet", "cooperative-gate-all"]
    assert result_plots.headline_runs(runs) == [
        "cooperative", "independent", results.MATCHED_NAME, "byot", "byot-flops-matched",
        "branchynet",
    ]  # fmt: skip
    assert result_plots.legend_label("byot-flops-matched", 3, "63–65") == (
        "BYOT, 63–65 epochs (equal training compute, 3 seeds)"
    )
    assert result_plots.legend_label("branchynet", 1) == "BranchyNet (1 seed)"


def test_every_figure_that_compares_methods_gives_a_method_one_colour():
    """The comparison at every depth, the exits at equal FLOPs and the training-compute figure
    draw BYOT (and each other method) in the colour the headline figure gives it."""
    byot = matplotlib.colors.to_hex(plots.METHOD_COLOURS["byot"])
    cooperative = matplotlib.colors.to_hex(plots.METHOD_COLOURS["cooperative"])
    methods = pd.concat(
        [
            result_plots.metrics_frame(fake_metrics(("teammate0",)), method="cooperative")
            .assign(method=result_plots.COOPERATIVE_LABEL),
            result_plots.metrics_frame(fake_metrics(("byot",), base=40), method="byot"),
        ]
    )  # fmt: skip
    figure = result_plots.method_comparison_figure(methods, "methods")
    drawn = {
        line.get_label(): matplotlib.colors.to_hex(line.get_color())
        for line in figure.axes[0].get_lines()
        if not line.get_label().startswith("_")
    }
    assert drawn == {result_plots.COOPERATIVE_LABEL: cooperative, "byot": byot}, drawn
    means = methods.groupby(["method", "s"], as_index=False)[["latency_ms", "top1"]].mean()
    points = plots.frontier_figure(means, "frontier").axes[0].collections[0]
    hues = {matplotlib.colors.to_hex(colour) for colour in points.get_facecolors()}
    assert hues == {cooperative, byot}
    table = pd.DataFrame(
        {
            "method": ["BYOT", "BYOT"],
            "MFLOPs": [20.0, 40.0],
            "exit top-1 (%)": [30.0, 40.0],
            verdict.OURS_WITHIN: [35.0, 41.0],
            "compared": ["yes", "yes"],
        }
    )
    exits, ours = result_plots.matched_cost_figure(table, "exits").axes[0].get_lines()[:2]
    assert [matplotlib.colors.to_hex(line.get_color()) for line in (exits, ours)] == [
        byot,
        cooperative,
    ]


def test_nested_plans_of_a_gated_network():
    net = build_model("resnet20", 10, 32)
    add_gate(net)
    table = plots.nested_plans({"gated": net})
    assert bool(table.loc["gated", "plans nested"])
    assert table.loc["gated", "blocks every depth shares"] == sorted(net.active_blocks(0.2))


def test_budget_figure():
    budgets = pd.DataFrame(
        {"budget_pct": [30, 60, 100], "s": [0.2, 0.5, 1.0], "top1": [50, 60, 70]}
    )
    assert_titled_and_labelled(plots.budget_figure(budgets, "budget"))


def test_predictions_and_explorer():
    net = build_model("resnet20", 10, 32)
    images = torch.randn(3, 3, 32, 32)
    raw = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2])
    predicted = plots.predictions(net, images, [0.2, 1.0])
    assert set(predicted) == {0.2, 1.0} and predicted[1.0].shape == (3,)
    assert_titled_and_labelled(plots.predictions_figure(raw, labels, predicted, "predictions"))
    frame = result_plots.metrics_frame(fake_metrics(("teammate0",)))
    explorer = plots.depth_explorer(net, images, raw, labels, frame)
    slider = explorer.children[0]
    assert [value for _, value in slider.options] == [0.2, 0.5, 1.0]
    slider.value = 0.5  # moving the slider redraws without error


def test_ablation_frame_pools_seeds_and_the_figure_pairs_each_ablation():
    def summary(seed, metrics):
        return {"config": {"seed": seed}, "metrics": metrics}

    recorded = {
        "cooperative": summary(0, fake_metrics(("teammate0", "teammate_mean"))),
        "cooperative-seed1": summary(1, fake_metrics(("teammate_mean",), base=40)),
        "cooperative-one-teammate": summary(0, fake_metrics(("teammate0",), base=30)),
        "byot": summary(0, fake_metrics(("byot",))),
        "cooperative-kd-mutual": summary(0, fake_metrics(("teammate_mean",))),  # chapter 2's
    }
    frame = result_plots.ablation_frame(results.frame_of(recorded))
    assert set(frame["variant"]) == {"cooperative", "one-teammate"}  # no baselines, no kd-*
    full = frame[frame["variant"] == "cooperative"]
    assert sorted(full["seed"].unique()) == [0, 1]
    # the full method: the Teammates' mean of every seed, and teammate0 where it is recorded
    assert full.groupby("network")["seed"].nunique().to_dict() == {
        "Teammates' mean": 2,
        "teammate0": 1,
    }
    mean_row = full.query('seed == 0 and s == 1.0 and network == "Teammates\' mean"')
    assert mean_row["top1"].item() == 50.0 + 30 + 1
    one = frame.query("variant == 'one-teammate'")
    assert set(one["network"]) == {"teammate0"} and one.query("s == 1.0")["top1"].item() == 60.0
    figure = result_plots.ablation_figure(frame, "ablations")
    assert_titled_and_labelled(figure)
    assert [ax.get_title() for ax in figure.axes] == ["vs one-teammate\n(1 seed; teammate0)"]
    # its claim compares teammate0 with teammate0: the blue line is the full run's teammate0
    blue, orange = figure.axes[0].lines
    assert list(blue.get_ydata()) == [56.0, 65.0, 80.0] and max(orange.get_ydata()) == 60.0
    legend = [text.get_text() for text in figure.legends[0].get_texts()]
    assert "full method, range over 2 seeds" in legend  # the band


def test_many_ablations_wrap_into_rows():
    from coop_utils.config import ABLATIONS

    rows = [
        {"variant": variant, "network": "Teammates' mean", "seed": 0, "s": s, "top1": 50 + s}
        for variant in ["cooperative", *list(ABLATIONS)[:6]]
        for s in (0.2, 1.0)
    ]
    figure = result_plots.ablation_figure(pd.DataFrame(rows), "ablations", per_row=4)
    shown = [ax for ax in figure.axes if ax.get_visible()]
    assert len(figure.axes) == 8 and len(shown) == 6
    assert len({round(ax.get_position().y0, 3) for ax in shown}) == 2  # two rows


def test_performance_figures_from_benchmark_records():
    depths = [
        {"arch": arch, "s": s, "flops_ratio": s, "latency_ratio_b1": 0.2 + 0.8 * s}
        | {"latency_ratio_b64": s}
        for arch in ("resnet56", "resnet152")
        for s in (0.2, 0.6, 1.0)
    ]
    figure = result_plots.latency_flops_figure(depths, "latency against FLOPs")
    assert_titled_and_labelled(figure)
    assert [ax.get_title() for ax in figure.axes] == ["resnet56", "resnet152"]
    assert len(figure.axes[0].collections[0].get_offsets()) == 6  # three depths, two batches
    parts = {"Leader, full depth": 10.0, "Teammate 0, full depth": 12.0, "SGD step": 1.0}
    figure = result_plots.step_parts_figure(parts, 25.0, "step")
    assert_titled_and_labelled(figure)
    bars = figure.axes[0].patches
    assert len(bars) == 4 and bars[-1].get_width() == 25.0
    assert sum(bar.get_width() for bar in bars[:3]) == 23.0


def test_matched_cost_figure_pairs_each_compared_exit_with_our_accuracy():
    table = pd.DataFrame(
        [
            ("BYOT", 0.33, 33.0, 40.0, 44.0, "yes"),
            ("BYOT", 1.0, 91.0, 70.0, float("nan"), "no: full depth"),
            ("BranchyNet", 0.22, 21.0, 30.0, float("nan"), "no: cheaper than our shallowest"),
            ("BranchyNet", 0.44, 41.0, 45.0, 47.0, "yes"),
        ],
        columns=["method", "exit (share of blocks)", "MFLOPs", "exit top-1 (%)"]
        + [verdict.OURS_WITHIN, "compared"],
    )
    figure = result_plots.matched_cost_figure(table, "within the exits' FLOPs")
    assert_titled_and_labelled(figure)
    assert [ax.get_title() for ax in figure.axes] == ["against BYOT", "against BranchyNet"]
    crosses = [line for line in figure.axes[1].lines if line.get_marker() == "X"]
    assert list(crosses[0].get_xdata()) == [41.0]  # the exit outside our range gets no cross


def test_many_ablations_split_into_figures_that_fit_the_column():
    from coop_utils.config import ABLATIONS

    variants = list(ABLATIONS)[:6]
    rows = [
        {"variant": variant, "network": "Teammates' mean", "seed": seed, "s": s, "top1": 50 + s}
        for variant in ["cooperative", *variants]
        for seed in range(3 if variant in ("cooperative", variants[4]) else 1)
        for s in (0.2, 1.0)
    ]
    figures = result_plots.ablation_figures(pd.DataFrame(rows), "ablations")
    assert [len(figure.axes) for figure in figures] == [4, 2]
    assert figures[0].axes[0].get_title().startswith(f"vs {variants[4]}")  # most seeds first
    assert "ablations with 1 or 3 seeds" in figures[0]._suptitle.get_text().replace("\n", " ")
    for figure in figures:
        assert_titled_and_labelled(figure)


def test_training_compute_figure_draws_every_budget_at_full_and_shallowest_depth():
    """Each method's judged runs (seeds pooled per run and regime) and the budget pilot's plain
    network (one seed, hollow, full depth only) against their recorded training FLOPs."""
    from test_verdict import summaries

    found = summaries(seeds=3)
    for name, run in found.items():
        run["training_flops"] = 1.5e14 if name.startswith("cooperative") else 5e13
    judged = results.frame_of(found).assign(regime="short")
    pilot = {
        "independent-budget-e6": {"config": {"method": "independent", "epochs": 6, "seed": 0}},
        "independent-budget-e12": {"config": {"method": "independent", "epochs": 12, "seed": 0}},
    }
    for epochs, run in zip((6, 12), pilot.values(), strict=True):
        row = {"top1": 30.0 + epochs, "val_top1": 30.0 + epochs, "flops": 9e7, "active_blocks": 9}
        run |= {"metrics": {"independent": {"1": row}}, "training_flops": epochs * 4.6e12}
    points = result_plots.training_compute_frame(judged, results.frame_of(pilot))
    assert set(points["depth"]) == {"full depth", "shallowest plan (3 blocks)"}
    ours = points[points["label"] == result_plots.COOPERATIVE_LABEL]
    assert len(ours) == 6 and set(ours["budget"]) == {"short/cooperative"}  # 3 seeds, 2 depths
    assert "cooperative-no-sfsl" not in set(points["run"])  # ablations are not drawn
    alone = points[points["pilot"]]
    assert set(alone["depth"]) == {"full depth"} and len(alone) == 2
    assert set(alone["label"]) == {"full-depth network alone (budget pilot, 1 seed)"}
    figure = result_plots.training_compute_figure(points, LONG_TITLE)
    assert_titled_and_labelled(figure)
    assert [ax.get_xscale() for ax in figure.axes] == ["log", "log"]
    assert figure.get_size_inches()[0] == pytest.approx(plots.FIGURE_WIDTH)
    labels = figure.legends[0].get_texts()
    assert labels[0].get_text() == result_plots.COOPERATIVE_LABEL
    hollow = [c.lines[0] for c in figure.axes[0].containers if "pilot" in c.get_label()]
    assert hollow and hollow[0].get_markerfacecolor() == "none"


def test_numbers_written_beside_points_close_together_are_moved_apart():
    """Epochs written beside points of several methods at about the same training compute:
    each moves down or up until it covers neither another number nor a point, staying in the
    column of its own point."""
    fig, (ax,) = plots.figure(1)
    ax.plot([0.11, 0.112, 0.115], [52.0, 52.5, 51.0], "o")
    for x, y, text in ((0.11, 52.0, "24"), (0.112, 52.5, "24"), (0.115, 51.0, "18")):
        ax.annotate(text, (x, y), xytext=(3, -11), textcoords="offset points", fontsize=8)
    ax.set(xlabel="training PFLOPs (log scale)", ylabel=plots.S_LABEL, title="numbers")
    ax.set(xscale="log", xlim=(0.02, 1.0), ylim=(20, 60))
    with pytest.raises(AssertionError, match="runs into"):
        assert_labels_apart(fig)  # as written: on top of each other
    plots.keep_texts_apart(fig)
    assert_labels_apart(fig)
    assert {text.xyann[0] for text in ax.texts} == {3}
    renderer = fig.canvas.get_renderer()
    points = plots._marker_boxes(ax)
    assert len(points) == 3
    for text in ax.texts:
        assert not any(text.get_window_extent(renderer).overlaps(p) for p in points)


def test_learning_budget_figure_marks_the_chosen_budget_and_each_gain():
    points = pd.DataFrame(
        [("plain", 6, 36.0), ("plain", 12, 47.0), ("plain", 24, 49.0), ("ours", 6, 38.0)],
        columns=["label", "epochs", "val_top1"],
    ).assign(pilot=[True, True, True, False], colour=["C7", "C7", "C7", "C0"])
    figure = result_plots.learning_budget_figure(points, 12, 24, LONG_TITLE)
    assert_titled_and_labelled(figure)
    ax = figure.axes[0]
    plain, ours = ax.get_lines()[:2]  # the pilot's network as the training-compute figure draws it
    assert (plain.get_linestyle(), plain.get_marker(), plain.get_markerfacecolor()) == (
        "--",
        "s",
        "none",
    )
    assert [matplotlib.colors.to_hex(line.get_color()) for line in (plain, ours)] == [
        matplotlib.colors.to_hex(result_plots.ALONE[1]),
        matplotlib.colors.to_hex(plots.METHOD_COLOURS["cooperative"]),
    ]
    assert [t.get_text() for t in ax.texts] == ["+11.0 pts", "+2.0 pts"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["6", "12", "24"]
    labels = figure.legends[0].get_texts()
    assert [t.get_text() for t in labels][-2:] == [
        "E_c = 12 epochs (the rule)",
        "converged campaign: 24 epochs",
    ]


def test_titles_wrap_at_spaces_and_keep_hyphenated_names_whole():
    title = "Predictions of the deployed Teammate at three depths (tiny-imagenet, cifar100)"
    lines = plots.wrap(title, 60).split("\n")
    assert lines == [
        "Predictions of the deployed Teammate at three depths",
        "(tiny-imagenet, cifar100)",
    ]
    assert plots.wrap("first line\nsecond", 60) == "first line\nsecond"
