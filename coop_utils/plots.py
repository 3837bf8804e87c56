"""The book's figure style, its layout helpers, and the figures of the method at work.

The style every figure shares (:func:`use_book_style`, the width of the book's column, the axis
labels) and the layout helpers every figure function builds on (:func:`figure`,
:func:`suptitle`, :func:`legend_below`, :func:`legend_in_slot`, :func:`fit_column`,
:func:`keep_texts_apart`); then the
figures drawn from networks and tensors made on the page: depth plans, Gumbel gates and their
cost (chapter 1), soft targets (chapter 2), the SFSL weight (chapter 3), and cost-adaptive
inference (chapter 7): the depth a budget buys, the Pareto frontier, predictions by depth and a
live depth explorer. The figures of recorded results are in :mod:`coop_utils.result_plots`.

Every function returns a matplotlib ``Figure`` with a title and labelled axes (units in
parentheses).
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Mapping, Sequence

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from IPython.display import display
from matplotlib.figure import Figure
from matplotlib.text import Annotation
from matplotlib.transforms import Bbox
from torch import Tensor, nn

from coop_utils.gating import relaxed_topk, sample_gumbel
from coop_utils.losses import sfsl_weight
from coop_utils.models import SCALING_FACTORS

S_LABEL = "scaling factor s (nominal share of blocks)"
DEPTH_LABEL = "blocks run (share of all blocks)"
TOP1_LABEL = "test top-1 accuracy (%)"
MFLOPS_LABEL = "forward cost (MFLOPs per image)"
LATENCY_LABEL = "latency, batch 1 (ms)"

#: the width of the book's text column at a 1280-pixel window (pixels): a figure drawn wider is
#: scaled down to it, and its lettering with it
COLUMN_PX = 676
#: the width every figure is drawn at (inches, at 100 dpi): the column, less the margin the
#: inline backend's tight crop adds (0.1 in on each side)
FIGURE_WIDTH = 6.4
#: characters of a wrapped figure title: 60 at 12 pt fit the figure's width
TITLE_CHARS = 60


#: one colour per method in every figure that compares methods (the colorblind palette's cycle)
METHOD_COLOURS = {"cooperative": "C0", "independent": "C1", "byot": "C2", "branchynet": "C4"}


def method_colour(method: str) -> str:
    """The colour of a method as a figure names it: ``"cooperative, deployed Teammate"`` and
    the independent networks' compute-matched control take their method's
    (:data:`METHOD_COLOURS`); another name, grey."""
    name = "cooperative" if method.startswith("cooperative") else method
    name = name.removesuffix("-compute-matched").removesuffix("-flops-matched")
    return METHOD_COLOURS.get(name, "C7")


def use_book_style() -> None:
    """The look of every figure in the book."""
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 100, "figure.max_open_warning": 0})
    plt.rcParams.update({"figure.figsize": (FIGURE_WIDTH, 4.0), "figure.titlesize": "medium"})
    plt.rcParams.update({"figure.labelsize": "medium"})
    pd.set_option("display.max_colwidth", None)  # tables of claims and rules are prose


def figure(ncols: int = 1, height: float = 3.6, nrows: int = 1, **kwargs):
    """A figure as wide as the book's column (:data:`FIGURE_WIDTH`) and its axes, row by row."""
    kwargs.setdefault("figsize", (FIGURE_WIDTH, height))
    fig, axes = plt.subplots(nrows, ncols, layout="constrained", squeeze=False, **kwargs)
    return fig, list(axes.flat)  # row by row


def wrap(text: str, width: int = TITLE_CHARS) -> str:
    """``text`` in lines of at most ``width`` characters (its own line breaks kept), broken at
    spaces only: a name such as ``tiny-imagenet`` stays whole."""
    return "\n".join(
        textwrap.fill(line, width, break_on_hyphens=False) for line in text.split("\n")
    )


def suptitle(fig: Figure, title: str) -> None:
    fig.suptitle(wrap(title), fontsize="medium")


def legend_below(fig: Figure, handles: list, labels: list, most: int = 4, **kwargs):
    """The figure's legend below its axes, in as many columns (up to ``most``) as fit its
    width."""
    renderer = fig.canvas.get_renderer()
    for ncols in range(max(1, min(most, len(labels))), 0, -1):
        legend = fig.legend(handles, labels, loc="outside lower center", ncols=ncols, **kwargs)
        if ncols == 1 or legend.get_window_extent(renderer).width <= 0.97 * fig.bbox.width:
            return legend
        legend.remove()
    return None


def legend_in_slot(fig: Figure, axes: list, used: int, **kwargs) -> None:
    """The legend of the first panel in the grid's first unused panel (its axis off; any
    further unused panel removed), or below the grid where every panel is used."""
    handles, labels = axes[0].get_legend_handles_labels()
    if axes[0].get_legend() is not None:
        axes[0].get_legend().remove()
    if used < len(axes):
        for ax in axes[used + 1 :]:
            ax.remove()
        axes[used].axis("off")
        axes[used].legend(handles, labels, loc="center", **kwargs)
    else:
        legend_below(fig, handles, labels, **kwargs)


def fit_column(fig: Figure) -> Figure:
    """``fig`` narrowed until its tight crop fits the column: lettering placed beside points
    (outside the layout) can reach past the figure's edge."""
    for _ in range(3):
        excess = rendered_width_px(fig) - COLUMN_PX
        if excess <= 0:
            break
        width, height = fig.get_size_inches()
        fig.set_size_inches(width - (excess + 4) / fig.dpi, height)
    return fig


def keep_texts_apart(fig: Figure, tries: int = 9) -> Figure:
    """``fig`` with each text written beside a point (an annotation offset in points) moved
    down or up by its own height, the nearest place first, until it overlaps no point's marker
    and none of its axes' texts placed before it: numbers beside points close together stay
    legible (a text with no free place within ``tries`` stays where it was)."""
    fig.canvas.draw()  # the layout the texts are measured in
    renderer = fig.canvas.get_renderer()
    shifts = sorted(range(-(tries // 2), tries // 2 + 1), key=lambda k: (abs(k), k))
    for ax in fig.axes:
        placed = _marker_boxes(ax)
        for text in ax.texts:
            if not isinstance(text, Annotation) or text.anncoords != "offset points":
                placed.append(text.get_window_extent(renderer))  # stays where it is
                continue
            x, y = text.xyann
            step = text.get_window_extent(renderer).height * 72 / fig.dpi + 1
            for shift in [*shifts, 0]:  # none free: where it was
                text.xyann = (x, y + shift * step)
                box = text.get_window_extent(renderer)
                if not any(box.overlaps(other) for other in placed):
                    break
            placed.append(box)
    return fig


def _marker_boxes(ax) -> list[Bbox]:
    """Where the markers of ``ax``'s points are drawn (not its error bars' caps), a pixel inside
    their edge."""
    boxes = []
    for line in ax.get_lines():
        if line.get_marker() in (None, "None", "", " ", "_", "|"):
            continue
        radius = line.get_markersize() * ax.figure.dpi / 72 / 2 - 1
        for x, y in ax.transData.transform(line.get_xydata()):
            boxes.append(Bbox.from_extents(x - radius, y - radius, x + radius, y + radius))
    return boxes


def rendered_width_px(fig: Figure) -> int:
    """How wide the book shows ``fig``: the PNG the inline backend writes (tight crop, 100 dpi)."""
    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    buffer.seek(0)
    return Image.open(buffer).size[0]


# --- chapter 01: depth plans, gates, cost ----------------------------------------------------


def block_plan_frame(
    networks: Mapping[str, nn.Module], scaling_factors: Sequence[float] = SCALING_FACTORS
) -> pd.DataFrame:
    """Which residual block runs at each scaling factor, per network (``net.active_blocks``)."""
    rows = []
    for label, net in networks.items():
        for s in scaling_factors:
            active = set(net.active_blocks(s))
            rows += [
                {"network": label, "s": s, "block": block, "stage": stage, "runs": block in active}
                for block, stage in enumerate(net.stage_of_block)
            ]
    return pd.DataFrame(rows)


def nested_plans(
    networks: Mapping[str, nn.Module], scaling_factors: Sequence[float] = SCALING_FACTORS
) -> pd.DataFrame:
    """Per network: whether every shallower plan lies inside every deeper one, and the blocks
    every depth shares (the shallowest plan)."""
    rows = {}
    for label, net in networks.items():
        plans = [set(net.active_blocks(s)) for s in sorted(scaling_factors)]
        nested = all(a <= b for a, b in zip(plans, plans[1:], strict=False))
        rows[label] = {"plans nested": nested, "blocks every depth shares": sorted(plans[0])}
    return pd.DataFrame(rows).T


def block_plan_figure(frame: pd.DataFrame, title: str) -> Figure:
    """A grid per network: rows are scaling factors, columns residual blocks, dark = runs.

    One network to a row, each as wide as the column; networks of a dozen blocks or fewer go
    two to a row."""
    labels = list(dict.fromkeys(frame["network"]))
    widths = [frame.loc[frame["network"] == label, "block"].nunique() for label in labels]
    columns = 2 if len(labels) > 1 and max(widths) <= 12 else 1
    rows = math.ceil(len(labels) / columns)
    fig, axes = figure(columns, height=2.3 * rows + 0.9, nrows=rows, sharey=True)
    for ax in axes[len(labels) :]:
        ax.remove()
    for ax, label in zip(axes, labels, strict=False):
        part = frame[frame["network"] == label]
        grid = part.pivot(index="s", columns="block", values="runs").sort_index(ascending=False)
        sns.heatmap(
            grid.astype(float),
            ax=ax,
            cbar=False,
            cmap=sns.color_palette(["#e6e6e6", "#2a6fb0"], as_cmap=True),
            vmin=0,
            vmax=1,
            linewidths=0.4,
            linecolor="white",
            yticklabels=[f"{s:g}" for s in grid.index],
        )
        stages = part.drop_duplicates("block").sort_values("block")["stage"].to_numpy()
        for boundary in np.flatnonzero(np.diff(stages)) + 1:
            ax.axvline(boundary, color="black", linewidth=1.2)
        step = max(1, len(grid.columns) // 10)
        ax.set_xticks(np.arange(0, len(grid.columns), step) + 0.5)
        ax.set_xticklabels(range(0, len(grid.columns), step), rotation=0)
        ax.set_title(f"{label}: {len(grid.columns)} blocks", fontsize="medium")
        ax.set(xlabel="", ylabel="")
        ax.tick_params(axis="y", rotation=0)
    fig.supxlabel("residual block (index)")
    fig.supylabel(S_LABEL)
    suptitle(fig, f"{title} (lines mark stages)")
    return fig


def gumbel_temperature_figure(
    logits: Sequence[float],
    keep: int,
    temperatures: Sequence[float],
    samples: int = 1000,
    seed: int = 0,
) -> Figure:
    """How the temperature ``tau`` shapes the relaxed top-``keep`` mask of Gumbel-perturbed logits.

    Left: the distribution of relaxed mask values (low ``tau``: near 0 or 1). Right: the mean
    relaxed mask per block beside how often the hard top-k mask keeps it (the forward value).
    """
    scores = torch.tensor(logits, dtype=torch.float32)
    generator = torch.Generator().manual_seed(seed)
    noisy = scores + sample_gumbel((samples, len(scores)), generator=generator)
    hard = torch.zeros_like(noisy).scatter_(1, noisy.topk(keep, dim=1).indices, 1.0)
    values, means = [], []
    for tau in temperatures:
        soft = relaxed_topk(noisy, keep, tau)
        label = f"τ = {tau:g}"
        values.append(pd.DataFrame({"relaxed mask value": soft.flatten().numpy(), "tau": label}))
        means.append(
            pd.DataFrame({"block": range(len(scores)), "mean": soft.mean(0).numpy(), "tau": label})
        )
    fig, (left, right) = figure(2, height=3.6)
    sns.histplot(
        pd.concat(values),
        x="relaxed mask value",
        hue="tau",
        bins=20,
        stat="percent",
        common_norm=False,
        element="step",
        fill=False,
        legend=False,
        ax=left,
    )
    left.set_xlabel("relaxed mask value (0-1)")
    left.set_ylabel("share of values (%)")
    left.set_title("relaxed values")
    sns.lineplot(pd.concat(means), x="block", y="mean", hue="tau", marker="o", ax=right)
    right.plot(range(len(scores)), hard.mean(0).numpy(), "k*", markersize=11, label="hard top-k")
    right.set_xlabel("gateable block (index)")
    right.set_ylabel("mean mask value (0-1)")
    right.set(title=f"keep {keep} of {len(scores)}", xticks=range(len(scores)))
    right.legend(fontsize="small")
    suptitle(
        fig,
        f"Gumbel top-{keep} masks at several temperatures ({samples} draws; logits fall "
        "from block 0; 0 = skip, 1 = run)",
    )
    return fig


def cost_figure(costs: pd.DataFrame, title: str) -> Figure:
    """Blocks, FLOPs and latency of each depth plan relative to full depth (``depth_costs``)."""
    full = costs.loc[costs["s"].idxmax()]
    measures = {"active_blocks": "blocks run", "flops": "FLOPs"}
    measures |= {
        column: f"latency, batch {column.removeprefix('latency_b')}"
        for column in costs.columns
        if column.startswith("latency_b")
    }
    rows = [
        {"s": row["s"], "measure": name, "ratio": row[column] / full[column]}
        for _, row in costs.iterrows()
        for column, name in measures.items()
    ]
    ratios = pd.DataFrame(rows)
    fig, (ax,) = figure(1, height=4.0)
    sns.lineplot(ratios, x="s", y="ratio", hue="measure", style="measure", ax=ax)
    sns.scatterplot(ratios, x="s", y="ratio", hue="measure", legend=False, ax=ax)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="ratio = s")
    # a plan timed slower than full depth stays in view
    top = max(1.1, ratios["ratio"].max() + 0.05)
    ax.set(xlim=(0, 1.02), ylim=(0, top), xlabel=S_LABEL, ylabel="cost relative to s = 1 (ratio)")
    ax.legend(loc="upper left", fontsize="small")
    ax.set_title(wrap(title))
    return fig


# --- chapter 02: distillation --------------------------------------------------------------


def softmax_temperature_figure(logits: Sequence[float], temperatures: Sequence[float]) -> Figure:
    """``softmax(z / T)`` of one set of logits at several temperatures: the soft targets."""
    scores = torch.tensor(logits, dtype=torch.float32)
    rows = [
        {"class": index, "probability": 100 * float(p), "T": f"T = {t:g}"}
        for t in temperatures
        for index, p in enumerate(torch.softmax(scores / t, dim=0))
    ]
    fig, (ax,) = figure(1)
    sns.barplot(pd.DataFrame(rows), x="class", y="probability", hue="T", ax=ax)
    ax.set(xlabel="class (index)", ylabel="probability (%)")
    ax.set_title("Soft targets: softmax(z / T) of the same logits")
    return fig


# --- chapter 03: the scaling factor sensitive loss -------------------------------------------


def sfsl_weight_figure(scaling_factors: Sequence[float] = SCALING_FACTORS[:-1]) -> Figure:
    """The sub-network loss weight ``w(s)`` with and without SFSL (``losses.sfsl_weight``)."""
    rows = [
        {"s": s, "weight": sfsl_weight(s, sfsl), "loss": "SFSL: w = 1/s" if sfsl else "w = 1"}
        for s in scaling_factors
        for sfsl in (True, False)
    ]
    fig, (ax,) = figure(1)
    sns.lineplot(pd.DataFrame(rows), x="s", y="weight", hue="loss", style="loss", marker="o", ax=ax)
    ax.set(xlabel=S_LABEL, ylabel="loss weight w(s) (multiplier)", ylim=(0, None))
    ax.set_title("Scaling Factor Sensitive Loss: shallow sub-networks weigh more")
    return fig


# --- chapter 07: cost-adaptive inference -----------------------------------------------------


def pareto_frontier(frame: pd.DataFrame, cost: str, value: str) -> pd.DataFrame:
    """Rows no other row beats on both ``cost`` (lower is better) and ``value`` (higher)."""
    ordered = frame.sort_values([cost, value], ascending=[True, False])
    best_so_far = ordered[value].astype(float).cummax().shift(fill_value=-np.inf)
    return ordered[ordered[value] > best_so_far]


def budget_figure(frame: pd.DataFrame, title: str) -> Figure:
    """The depth chosen under each FLOPs budget, and the accuracy it buys.

    ``frame`` has ``budget_pct`` (budget as % of full-depth FLOPs), ``s`` and ``top1``.
    """
    fig, (depth_ax, accuracy_ax) = figure(2, height=3.8)
    depth_ax.step(frame["budget_pct"], frame["s"], where="post", marker="o")
    depth_ax.set_ylabel("chosen s (share of blocks)")
    depth_ax.set_title("largest s within budget")
    accuracy_ax.step(frame["budget_pct"], frame["top1"], where="post", marker="o", color="C2")
    accuracy_ax.set(ylabel=TOP1_LABEL, title="accuracy it buys")
    for ax in (depth_ax, accuracy_ax):
        ax.set_xlabel("FLOPs budget (% of full)")
    suptitle(fig, title)
    return fig


def frontier_figure(frame: pd.DataFrame, title: str, cost: str = "latency_ms") -> Figure:
    """Every (method, depth) as a point of accuracy against cost, with the Pareto frontier."""
    fig, (ax,) = figure(1, height=4.6)
    palette = {method: method_colour(method) for method in frame["method"]}
    sns.scatterplot(
        frame, x=cost, y="top1", hue="method", style="method", palette=palette, s=70, ax=ax
    )
    front = pareto_frontier(frame, cost, "top1")
    ax.step(front[cost], front["top1"], where="post", color="black", linewidth=1, label="frontier")
    ax.set(xlabel=LATENCY_LABEL if cost == "latency_ms" else MFLOPS_LABEL, ylabel=TOP1_LABEL)
    ax.legend(fontsize="small")
    ax.set_title(wrap(title))
    return fig


@torch.no_grad()
def predictions(net: nn.Module, images: Tensor, scaling_factors: Sequence[float]) -> dict:
    """Predicted class of each (normalised) image at each scaling factor."""
    was_training = net.training
    net.eval()
    try:
        return {s: net(images, s=s).argmax(1).cpu() for s in scaling_factors}
    finally:
        net.train(was_training)


def predictions_figure(
    raw_images: Tensor, labels: Tensor, predicted: Mapping[float, Tensor], title: str
) -> Figure:
    """Sample images (uint8, N x 3 x H x W) with the class predicted at each scaling factor."""
    factors = list(predicted)
    count = len(raw_images)
    side = min(1.25, (FIGURE_WIDTH - 0.6) / max(count, 1))  # each image, in inches
    size = (min(FIGURE_WIDTH, side * count + 0.6), (side + 0.3) * len(factors) + 1.0)
    fig, axes = plt.subplots(len(factors), count, figsize=size, layout="constrained", squeeze=False)
    for row, s in enumerate(factors):
        for column in range(count):
            ax = axes[row][column]
            ax.imshow(raw_images[column].permute(1, 2, 0).cpu().numpy())
            guess, truth = int(predicted[s][column]), int(labels[column])
            ax.set_title(f"{guess}", color="green" if guess == truth else "red", fontsize=10)
            ax.set(xticks=[], yticks=[])
            if column == 0:
                ax.set_ylabel(f"s = {s:g}")
            if row == len(factors) - 1:
                ax.set_xlabel(f"true {truth}", fontsize=9)
    fig.supxlabel("test image (true class); above each: the class predicted, green if right")
    fig.supylabel("depth (scaling factor s)")
    suptitle(fig, title)
    return fig


def depth_explorer(
    net: nn.Module, images: Tensor, raw_images: Tensor, labels: Tensor, frame: pd.DataFrame
):
    """A slider over ``s`` (a live kernel only): the network's accuracy, FLOPs and latency from
    ``frame`` (its rows of :func:`result_plots.metrics_frame`), and its predictions computed
    live on ``images`` (normalised), shown on ``raw_images``."""
    by_s = frame.set_index("s")

    def show(s: float) -> None:
        row = by_s.loc[s]
        print(
            f"s = {s:g}: {int(row['active_blocks'])} blocks, top-1 {row['top1']:.1f} %, "
            f"{row['mflops']:.1f} MFLOPs, {row['latency_ms']:.2f} ms at batch 1"
        )
        predicted = predictions(net, images, [s])
        drawn = predictions_figure(raw_images, labels, predicted, f"Predictions at s = {s:g}")
        display(drawn)
        plt.close(drawn)

    options = [(f"{s:g}", s) for s in by_s.index]
    slider = widgets.SelectionSlider(
        options=options, value=by_s.index.max(), description="s", continuous_update=False
    )
    return widgets.interactive(show, s=slider)
