"""The figures and tables of recorded results, drawn with seaborn in the book's style.

Metrics come in as tidy frames, one row per network and depth: the rows of the results frame
(:mod:`coop_utils.results`) or of a run trained here (:func:`metrics_frame`), so one figure
function serves a smoke run, a recorded preview run and a full run. Here: those frames and the
comparison table, training curves, accuracy by depth, the ablations, the methods compared at
equal depth, FLOPs and latency, the headline figure, what training compute buys, the learning
budget, and the benchmark records (latency against FLOPs, the parts of a training step). Means
over seeds carry their 95 % t-interval (:func:`t_interval`). The style and the layout helpers
are in :mod:`coop_utils.plots`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib.ticker as mticker
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from coop_utils import results, verdict
from coop_utils.config import ABLATIONS
from coop_utils.plots import (
    DEPTH_LABEL,
    LATENCY_LABEL,
    METHOD_COLOURS,
    MFLOPS_LABEL,
    S_LABEL,
    TOP1_LABEL,
    figure,
    fit_column,
    keep_texts_apart,
    legend_below,
    legend_in_slot,
    method_colour,
    suptitle,
    wrap,
)

#: the label of a cooperative run's accuracy where a figure or table compares methods: the
#: network a cooperative run is judged by (:func:`results.shown_rows`)
COOPERATIVE_LABEL = "cooperative, deployed Teammate"


def t_interval(values: Sequence[float]) -> tuple[float, float]:
    """The 95 % t-interval of the mean of ``values`` (seeds): seaborn's ``errorbar=`` for the
    intervals the verdict uses; a single value has none."""
    values = np.asarray(values, dtype=float)
    mean, count = float(values.mean()), len(values)
    if count < 2:
        return mean, mean
    half = verdict.t_critical(count - 1) * float(values.std(ddof=1)) / math.sqrt(count)
    return mean - half, mean + half


# --- metrics as frames ---------------------------------------------------------------------


def metrics_frame(
    metrics: Mapping[str, Mapping[str, Mapping[str, float]]], **labels
) -> pd.DataFrame:
    """One row per (network, depth) of ``run.metrics`` (:func:`results.metrics_frame`: with
    ``s``, ``depth`` and ``mflops``), sorted, with any ``labels`` as constant columns (e.g.
    ``method="BYOT"``)."""
    frame = results.metrics_frame(metrics).assign(**labels)
    return frame.sort_values(["network", "s"], ignore_index=True)


def method_seeds_frame(frame: pd.DataFrame, methods: Sequence[str]) -> pd.DataFrame:
    """The rows of every seed of each run of ``methods`` in a results frame through the network
    it is judged by (:func:`results.shown_rows`: the deployed Teammate of a cooperative run),
    ``method`` naming the run and, for the cooperative run, that network
    (:data:`COOPERATIVE_LABEL`)."""
    shown = results.shown_rows(frame[frame["run"].isin(methods)])
    return pd.concat(
        shown[shown["run"] == method].sort_values(["seed", "s"], kind="stable")
        for method in methods
    ).assign(method=lambda rows: rows["run"].replace({"cooperative": COOPERATIVE_LABEL}))


def comparison_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Accuracy and cost of every method at every depth it offers, one row per depth plan (the
    scaling factors that share a plan share its network, so their accuracy is the same; the
    mean is shown, over the seeds too where the frame has a ``seed`` column), rounded."""
    names = {
        "top1": "top-1 (%)",
        "top5": "top-5 (%)",
        "mflops": "MFLOPs",
        "latency_ms": "latency (ms)",
    }
    seeds = {"seeds": ("seed", "nunique")} if "seed" in frame else {}
    table = (
        frame.assign(depth=frame["depth"].round(2))
        .groupby(["method", "depth"])
        .agg(
            s=("s", lambda values: ", ".join(f"{s:g}" for s in sorted(set(values)))),
            **seeds,
            **{column: (column, "mean") for column in names},
        )
        .round({"top1": 1, "top5": 1, "mflops": 1, "latency_ms": 2})
    )
    table.index.names = ["method", "blocks run (share)"]
    return table.rename(columns={"s": "s or exit depth", **names})


# --- chapters 02-03: training ----------------------------------------------------------------


def training_curves_figure(logs: Mapping[str, Sequence[Mapping[str, str]]], title: str) -> Figure:
    """Per epoch, for each run of ``logs`` (``run.log`` rows or a committed ``logs/*.csv``): the
    training loss, and the validation top-1 at the deepest and shallowest depth where the run
    recorded it (``eval_every``), else the training throughput. One run is not named in the
    legend, which then lists the depths alone."""
    frame = pd.concat(
        [pd.DataFrame(list(rows)).assign(run=label) for label, rows in logs.items() if rows],
        ignore_index=True,
    )
    for column in frame.columns.drop("run"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    fig, (loss_ax, right_ax) = figure(2, height=3.8)
    hue = "run" if frame["run"].nunique() > 1 else None
    sns.lineplot(frame, x="epoch", y="train_loss", hue=hue, marker="o", ax=loss_ax, legend=False)
    loss_ax.set(ylabel="training loss, all terms (nats)", title="loss")
    validated = [c for c in ("val_top1_deepest", "val_top1_shallowest") if c in frame]
    if validated and frame[validated].notna().any().any():
        depths = frame.melt(["epoch", "run"], validated, "depth", "top1").dropna()
        depths["depth"] = depths["depth"].str.removeprefix("val_top1_")
        sns.lineplot(depths, x="epoch", y="top1", hue=hue, style="depth", marker="o", ax=right_ax)
        right_ax.set(ylabel="validation top-1 (%)", title="validation accuracy")
    else:
        sns.lineplot(frame, x="epoch", y="images_per_s", hue=hue, marker="o", ax=right_ax)
        right_ax.set(ylabel="throughput (images/s)", title="training speed")
    for ax in (loss_ax, right_ax):
        ax.set_xlabel("epoch (count)")
        ax.xaxis.get_major_locator().set_params(integer=True)
    handles, labels = right_ax.get_legend_handles_labels()
    if right_ax.get_legend() is not None:
        right_ax.get_legend().remove()  # one legend, below both panels
    if handles:
        legend_below(fig, handles, labels, fontsize="small")
    suptitle(fig, title)
    return fig


def full_depth_accuracy_figure(frame: pd.DataFrame, title: str) -> Figure:
    """Full-depth test top-1 of each network (bars) in each run (colours)."""
    fig, (ax,) = figure(1)
    sns.barplot(frame, x="network", y="top1", hue="run", ax=ax)
    for container in ax.containers:
        ax.bar_label(container, fmt="%.1f", fontsize="small")
    ax.set(xlabel="network (trained together in one run)", ylabel=TOP1_LABEL)
    ax.set_title(wrap(title))
    return fig


# --- chapters 03-06: accuracy against depth and cost ----------------------------------------


def accuracy_by_depth_figure(frame: pd.DataFrame, title: str, hue: str = "network") -> Figure:
    """Test top-1 against the scaling factor, one line per ``hue`` (a network or a run): the
    mean over the frame's seeds, with their 95 % t-interval as a band. A network that runs at
    one factor only (the Leader, at full depth) is a large star drawn on top, so that the lines
    through that factor do not hide it, and its legend entry names the factor."""
    fig, (ax,) = figure(1, height=4.4)
    sns.lineplot(
        frame, x="s", y="top1", hue=hue, style=hue, markers=True, dashes=False,
        errorbar=t_interval, ax=ax,
    )  # fmt: skip
    ax.set(xlabel=S_LABEL, ylabel=TOP1_LABEL, xlim=(0.15, 1.05))
    ax.set_title(wrap(title))
    handles, labels = ax.get_legend_handles_labels()
    factors = frame.groupby(hue)["s"].unique()
    for index, label in enumerate(labels):
        if label in factors and len(factors[label]) == 1:
            s = float(factors[label][0])
            top1 = frame.loc[frame[hue] == label, "top1"].mean()
            (handles[index],) = ax.plot(
                [s], [top1], linestyle="none", marker="*", markersize=15, zorder=5,
                color=handles[index].get_color(), markeredgecolor="black", markeredgewidth=0.6,
            )  # fmt: skip
            labels[index] = f"{label} (s = {s:g} only)"
    ax.get_legend().remove()  # below the axes: it hides no point
    legend_below(fig, handles, labels, fontsize="small")
    return fig


def ablation_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The top-1 at each ``s`` of the network each ablation's claim compares, one row per seed:
    the Teammates' mean (``network``: "Teammates' mean"), or ``teammate0`` for a run with one
    Teammate; the full method has rows of both.

    The seeds of one run of the results ``frame`` share its ``variant`` label (``cooperative``
    for the full method). Only the full method and the ablations of
    :data:`coop_utils.config.ABLATIONS` are kept.
    """
    parts = []
    for name, runs in frame.groupby("run", sort=False):
        variant = name.removeprefix("cooperative-")
        if variant != "cooperative" and (variant not in ABLATIONS or name == variant):
            continue  # a baseline, or a run of another chapter's own (chapter 2's kd-*)
        for _, run in runs.groupby("seed"):
            networks = {}  # the Teammates' mean; teammate0 alone where it is the only one
            if (run["network"] == "teammate_mean").any():
                networks["teammate_mean"] = "Teammates' mean"
            if (run["network"] == "teammate0").any() and (variant == "cooperative" or not networks):
                networks["teammate0"] = "teammate0"
            parts += [
                run[run["network"] == network].assign(variant=variant, network=label)
                for network, label in networks.items()
            ]
    columns = ["variant", "network", "seed", "s", "top1"]
    return pd.concat(parts, ignore_index=True)[columns] if parts else pd.DataFrame(columns=columns)


def ablation_figure(frame: pd.DataFrame, title: str, per_row: int = 2) -> Figure:
    """One panel per ablation (``per_row`` to a row): the accuracy of the network its claim
    compares against ``s`` beside the same network of the full method's run of the same seed,
    with the range of the full method over all its seeds as a band (how far two runs that
    differ only in their seed land apart)."""
    variants = [v for v in frame["variant"].unique() if v != "cooperative"]
    columns = max(1, min(per_row, len(variants)))
    rows = max(1, math.ceil(len(variants) / columns))
    fig, axes = figure(columns, height=2.7 * rows + 1.4, nrows=rows, sharey=True)
    full_colour, variant_colour = sns.color_palette("colorblind", 2)
    seeds = frame.loc[frame["variant"] == "cooperative", "seed"].nunique()
    for ax, variant in zip(axes, variants, strict=False):
        changed = frame[frame["variant"] == variant]
        network = changed["network"].iloc[0]
        full = frame[(frame["variant"] == "cooperative") & (frame["network"] == network)]
        band = full.groupby("s")["top1"].agg(["min", "max"])
        paired = full[full["seed"].isin(changed["seed"].unique())].groupby("s")["top1"].mean()
        ax.fill_between(
            band.index, band["min"], band["max"], color=full_colour, alpha=0.2,
            label=f"full method, range over {seeds} seed{'s' if seeds > 1 else ''}",
        )  # fmt: skip
        ax.plot(
            paired.index, paired.values, marker="o", color=full_colour,
            label="full method, the ablation's seeds",
        )  # fmt: skip
        mean = changed.groupby("s")["top1"].mean()
        ax.plot(mean.index, mean.values, marker="o", color=variant_colour, label="the ablation")
        count = changed["seed"].nunique()
        which = "" if network == "Teammates' mean" else f"; {network}"
        ax.set_title(f"vs {variant}\n({count} seed{'s' if count > 1 else ''}{which})")
        ax.set(xlabel="s (share of blocks)", xlim=(0.15, 1.05))
    for ax in axes[::columns]:  # the first column
        ax.set_ylabel("test top-1 (%)")
    for ax in axes[len(variants) :]:
        ax.set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    order = [1, 0, 2] if len(handles) == 3 else range(len(handles))
    legend_below(
        fig, [handles[i] for i in order], [labels[i] for i in order], most=2, fontsize="small"
    )
    suptitle(fig, f"{title}\n(the Teammates' mean unless a panel names a network)")
    return fig


def ablation_figures(
    frame: pd.DataFrame, title: str, per_figure: int = 4, per_row: int = 2
) -> list[Figure]:
    """:func:`ablation_figure` in figures of at most ``per_figure`` panels, so that each fits
    the book's column: the ablations with the most seeds first."""
    variants = [v for v in frame["variant"].unique() if v != "cooperative"]
    seeds = frame.groupby("variant")["seed"].nunique()
    variants.sort(key=lambda variant: -seeds[variant])  # stable: the campaign's order
    groups = [variants[i : i + per_figure] for i in range(0, len(variants), per_figure)]
    figures = []
    for group in groups:
        part = pd.concat(frame[frame["variant"] == v] for v in ["cooperative", *group])
        counts = sorted({int(seeds[variant]) for variant in group})
        which = f", ablations with {' or '.join(map(str, counts))} seed"
        which += "s" if counts != [1] else ""
        figures.append(
            ablation_figure(part, title + (which if len(groups) > 1 else ""), per_row=per_row)
        )
    return figures


def method_comparison_figure(frame: pd.DataFrame, title: str) -> Figure:
    """Accuracy of every method against depth, FLOPs and latency (three panels of a 2x2 grid,
    shared y, the legend in the fourth): the mean over the frame's seeds (a ``seed`` column, if
    any) with its 95 % t-interval."""
    fig, axes = figure(2, height=6.6, nrows=2, sharey=True)
    seeds = frame if "seed" in frame else frame.assign(seed=0)
    columns = ["mflops", "latency_ms", "top1"]  # a seed's factors of one plan count once:
    ordered = seeds.groupby(["method", "seed", "depth"], as_index=False)[columns].mean()
    ordered = ordered.sort_values(["method", "depth"])
    panels = (("depth", DEPTH_LABEL, "depth"), ("mflops", MFLOPS_LABEL, "FLOPs"))
    panels += (("latency_ms", LATENCY_LABEL, "latency timed by each run"),)
    for ax, (column, label, against) in zip(axes, panels, strict=False):
        style = {"hue": "method", "style": "method", "legend": ax is axes[0], "ax": ax}
        style["palette"] = {method: method_colour(method) for method in ordered["method"]}
        if column == "latency_ms":  # measured times are noisy: points, not a line through them
            means = ordered.groupby(["method", "depth"], sort=False)[[column, "top1"]].mean()
            sns.scatterplot(means.reset_index(), x=column, y="top1", s=60, **style)
        else:  # each method's depths joined from shallow to deep
            sns.lineplot(
                ordered, x=column, y="top1", markers=True, dashes=False, sort=False,
                errorbar=t_interval, err_style="bars", **style,
            )  # fmt: skip
        ax.set(xlabel=label, ylabel=TOP1_LABEL, title=f"against {against}")
    legend_in_slot(fig, axes, len(panels), title="method", fontsize="small")
    suptitle(fig, title)
    return fig


def matched_cost_figure(table: pd.DataFrame, title: str) -> Figure:
    """One panel per exit baseline: its exits' accuracy against measured FLOPs (dots), and the
    deployed Teammate's accuracy within each exit's FLOPs (crosses: its deepest depth that costs
    no more), a dotted segment joining each pair (``verdict.matched_cost_table``)."""
    methods = list(dict.fromkeys(table["method"]))
    fig, axes = figure(max(1, len(methods)), height=4.2, sharey=True)
    for ax, method in zip(axes, methods, strict=False):
        part = table[table["method"] == method]
        compared = part[part["compared"] == "yes"]
        colour = method_colour(method.lower())
        ax.plot(
            part["MFLOPs"], part["exit top-1 (%)"], "o-", color=colour,
            label="the baseline's exits",
        )  # fmt: skip
        ours = compared[verdict.OURS_WITHIN]
        ax.plot(
            compared["MFLOPs"], ours, "X", markersize=10, color=method_colour("cooperative"),
            label="cooperative, deployed Teammate: its deepest depth within the exit's FLOPs",
        )  # fmt: skip
        ax.vlines(compared["MFLOPs"], compared["exit top-1 (%)"], ours, "grey", linestyles=":")
        ax.margins(y=0.12)  # the crosses clear the frame
        ax.set(xlabel=MFLOPS_LABEL, ylabel=TOP1_LABEL if ax is axes[0] else "")
        ax.set_title(f"against {method}")
    handles, labels = axes[0].get_legend_handles_labels()
    legend_below(fig, handles, labels, fontsize="small")
    suptitle(fig, title)
    return fig


#: each method as every figure of the summary page names it (the training-compute figure, the
#: accuracy against cost), in the legends' order
METHOD_LABELS = {
    "cooperative": COOPERATIVE_LABEL,
    "independent": "independent networks",
    "byot": "BYOT",
    "branchynet": "BranchyNet",
}
#: what a control at equal training compute is called in a legend, after its method
EQUAL_COMPUTE_LABEL = "equal training compute"


def control_of(run: str) -> str | None:
    """The method whose control at equal training compute ``run`` is, else ``None``."""
    for suffix in results.CONTROL_SUFFIXES:
        if run.endswith(suffix) and run.removesuffix(suffix) in METHOD_LABELS:
            return run.removesuffix(suffix)
    return None


def headline_runs(runs: Sequence[str]) -> list[str]:
    """The runs among ``runs`` that :func:`headline_figure` draws, in its legend's order: each
    method of :data:`METHOD_LABELS`, each followed by its controls at equal training compute
    (the ablations are not drawn)."""
    present = set(runs)
    drawn = []
    for method in METHOD_LABELS:
        drawn += [
            r for r in (method, *(method + s for s in results.CONTROL_SUFFIXES)) if r in present
        ]
    return drawn


def headline_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of a results frame whose runs :func:`headline_figure` draws: what its label
    names (:func:`chapters.recorded_label`)."""
    return frame[frame["run"].isin(headline_runs(frame["run"]))]


def legend_label(run: str, seeds: int, epochs: str = "") -> str:
    """A run as the legends of the summary page name it: its method (:data:`METHOD_LABELS`)
    and seeds; a control at equal training compute says so, with its ``epochs`` (its
    campaign's differ from the regime's)."""
    counted = f"{seeds} seed{'s' if seeds > 1 else ''}"
    method = control_of(run)
    if method is None:
        return f"{METHOD_LABELS.get(run, run)} ({counted})"
    trained = f", {epochs} epochs" if epochs else ""
    return f"{METHOD_LABELS[method]}{trained} ({EQUAL_COMPUTE_LABEL}, {counted})"


def headline_figure(recorded: pd.DataFrame, title: str) -> Figure:
    """Test top-1 against measured FLOPs for each method of a results frame (the deployed
    Teammate of the cooperative runs) and each control at equal training compute (dashed, its
    epochs in the legend): the mean over seeds, with its 95 % t-interval from the seeds'
    spread as error bars (none for a single seed)."""
    runs = headline_runs(recorded["run"])
    frame = results.shown_rows(recorded[recorded["run"].isin(runs)])
    fig, (ax,) = figure(1, height=5.0)
    for run in runs:
        part = frame[frame["run"] == run]
        per_seed = part.groupby(["mflops", "seed"])["top1"].mean().groupby("mflops")
        half = [(high - low) / 2 for low, high in per_seed.apply(t_interval)]
        epochs = sorted({int(e) for e in part["epochs"].dropna()})
        label = legend_label(run, part["seed"].nunique(), results.span(epochs) if epochs else "")
        ax.errorbar(
            per_seed.mean().index, per_seed.mean(), yerr=half, marker="o", capsize=3,
            label=label, linestyle="--" if control_of(run) else "-", color=method_colour(run),
        )  # fmt: skip
    ax.set(xlabel=MFLOPS_LABEL, ylabel=TOP1_LABEL)
    ax.set_title(wrap(title))
    legend_below(fig, *ax.get_legend_handles_labels(), most=2, fontsize="small")
    return fit_column(fig)


# --- the summary page and chapter 05: what training compute buys ------------------------------

#: the methods of the training-compute figure, as its legend names them, and their colours
COMPUTE_METHODS = {
    method: (label, METHOD_COLOURS[method]) for method, label in METHOD_LABELS.items()
}
#: the budget pilot's plain network, alone
ALONE = ("full-depth network alone", "C7")
#: the x axis of the training-compute figure: a run's training compute counts every network it
#: trains (the independent networks' run trains one per depth, the cooperative one its Leader too)
TRAINING_FLOPS_LABEL = "training PFLOPs of the whole run\n(every network it trains; log scale)"


def training_compute_frame(judged: pd.DataFrame, pilot: pd.DataFrame | None = None) -> pd.DataFrame:
    """The points of :func:`training_compute_figure`, one row per summary and depth: the
    test top-1 at full depth and at the shallowest plan (the blocks of the deployed Teammate's
    shallowest depth) of the network each method is judged by (:func:`results.shown_rows`),
    beside the summary's recorded training FLOPs and epochs. ``judged``: the verdict's runs of
    every regime (:func:`results.best_runs`), the methods and their controls (not the
    ablations); ``pilot``: the budget pilot's (:func:`results.budget_rows`), one seed each,
    marked ``pilot``."""
    keep = judged["run"].isin(COMPUTE_METHODS) | judged["run"].str.endswith(
        results.CONTROL_SUFFIXES
    )
    parts = [results.shown_rows(judged[keep]).assign(pilot=False)]
    if pilot is not None and not pilot.empty:
        parts.append(results.shown_rows(pilot).assign(pilot=True))
    rows = pd.concat(parts, ignore_index=True)
    ours = rows[(rows["method"] == "cooperative") & ~rows["pilot"]]
    shallow = int(ours["active_blocks"].min()) if not ours.empty else None
    points = []
    for _, summary in rows.groupby("path", sort=False):
        first = summary.iloc[0]
        label, colour = COMPUTE_METHODS.get(first["method"], ALONE)
        if first["pilot"] and len(summary) == 1 and first["method"] == "independent":
            label, colour = ALONE  # the plain network of the budget pilot: one depth
        depths = {"full depth": summary.loc[summary["flops"].idxmax()]}
        plan = summary[summary["active_blocks"] == shallow]
        if not plan.empty and shallow < summary["active_blocks"].max():
            depths[f"shallowest plan ({shallow} blocks)"] = plan.iloc[0]
        for depth, row in depths.items():
            points.append(
                {"label": label + (" (budget pilot, 1 seed)" if first["pilot"] else "")}
                | {"colour": colour, "pilot": bool(first["pilot"]), "depth": depth}
                | {key: first[key] for key in ("epochs", "seed", "training_flops", "run")}
                | {"budget": f"{'pilot' if first['pilot'] else first['regime']}/{first['run']}"}
                | {"top1": float(row["top1"])}
            )
    return pd.DataFrame(points)


def training_compute_figure(points: pd.DataFrame, title: str) -> Figure:
    """Test top-1 against training FLOPs (log scale), one panel per depth (full, shallowest
    plan), one line per method through its budgets (the epochs beside each point): the mean
    over seeds with its 95 % t-interval; the budget pilot's single seeds hollow and dashed."""
    depths = list(dict.fromkeys(points["depth"]))
    fig, axes = figure(len(depths), height=4.6, sharey=True)
    order = [label for label, _ in COMPUTE_METHODS.values()]
    points = points.assign(
        training_flops=points["training_flops"] / 1e15,
        order=[(order + [label]).index(label) for label in points["label"]],
    ).sort_values(["order", "pilot"], kind="stable")
    for ax, depth in zip(axes, depths, strict=True):
        for (label, colour, pilot), line in points[points["depth"] == depth].groupby(
            ["label", "colour", "pilot"], sort=False
        ):
            by_budget = line.groupby("budget")  # the seeds of one run in one regime
            stats = by_budget.agg(x=("training_flops", "mean"), y=("top1", "mean"))
            stats["epochs"] = by_budget["epochs"].agg(
                lambda e: results.span(sorted({int(x) for x in e}))
            )
            stats = stats.sort_values("x")
            intervals = by_budget["top1"].apply(t_interval)[stats.index]
            half = [(high - low) / 2 for low, high in intervals]
            ax.errorbar(
                stats["x"], stats["y"], yerr=half, color=colour, capsize=3, label=label,
                marker="s" if pilot else "o", markerfacecolor="none" if pilot else colour,
                linestyle="--" if pilot else "-", linewidth=1.2,
            )  # fmt: skip
            for row in stats.to_dict("records"):
                ax.annotate(
                    row["epochs"], (row["x"], row["y"]), xytext=(3, -11), fontsize=8,
                    textcoords="offset points", color=colour,
                )  # fmt: skip
        ax.set_xscale("log")
        ax.margins(x=0.15)  # room inside the axes for the epochs beside the last point
        low, high = points["training_flops"].min(), points["training_flops"].max()
        ticks = [m * 10.0**e for e in range(-3, 4) for m in (1, 2, 5) if low / 2 <= m * 10.0**e]
        ax.set_xticks([t for t in ticks if t <= high * 2], minor=False)
        ax.xaxis.set_major_formatter(mticker.FuncFormatter(lambda x, _: f"{x:g}"))
        ax.xaxis.set_minor_locator(mticker.NullLocator())
        ax.set(xlabel=TRAINING_FLOPS_LABEL, ylabel=TOP1_LABEL if ax is axes[0] else "")
        ax.set_title(depth, fontsize="medium")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=1, fontsize="small")
    suptitle(fig, title)
    return keep_texts_apart(fit_column(fig))


def learning_budget_figure(
    points: pd.DataFrame, chosen: float | None, campaign: float | None, title: str
) -> Figure:
    """Validation top-1 against epochs (log scale, one tick per budget) for each network of
    ``points`` (``label``, ``epochs``, ``val_top1``, ``pilot``: the budget pilot's network,
    hollow and dashed as in :func:`training_compute_figure`; ``colour``, if given), the gain of
    each doubling of a network's epochs beside its segment; a line at the budget ``chosen`` by
    the rule, and (if different or undecided) one at the ``campaign``'s epochs."""
    fig, (ax,) = figure(1, height=4.2)
    for (label, pilot), line in points.groupby(["label", "pilot"], sort=False):
        line = line.sort_values("epochs")
        colour = line["colour"].iloc[0] if "colour" in line else None
        ax.plot(
            line["epochs"], line["val_top1"], marker="s" if pilot else "o", label=label,
            markerfacecolor="none" if pilot else None, linestyle="--" if pilot else "-",
            color=colour,
        )  # fmt: skip
        pairs = zip(line.itertuples(), line.iloc[1:].itertuples(), strict=False)
        for a, b in pairs:
            if b.epochs == 2 * a.epochs:
                middle = ((a.epochs * b.epochs) ** 0.5, (a.val_top1 + b.val_top1) / 2)
                ax.annotate(
                    f"{b.val_top1 - a.val_top1:+.1f} pts", middle, xytext=(-6, 6), ha="right",
                    textcoords="offset points", fontsize=9,
                )  # fmt: skip
    if chosen is not None:
        ax.axvline(
            chosen, color="black", linestyle=":", label=f"E_c = {chosen:g} epochs (the rule)"
        )
    if campaign is not None and campaign != chosen:
        label = f"converged campaign: {campaign:g} epochs"
        ax.axvline(campaign, color="grey", linestyle="-.", label=label)
    budgets = sorted(set(points["epochs"]) | {e for e in (chosen, campaign) if e is not None})
    ax.set_xscale("log", base=2)
    ax.set_xticks(budgets, [f"{e:g}" for e in budgets])
    ax.set_xlim(budgets[0] / 1.3, budgets[-1] * 1.3)
    ax.minorticks_off()
    ax.set(xlabel="training budget (epochs, log scale)", ylabel="validation top-1 (%)")
    suptitle(fig, title)
    legend_below(fig, *ax.get_legend_handles_labels(), most=2, fontsize="small")
    return fit_column(fig)


# --- performance: the recorded benchmarks -----------------------------------------------------


def latency_flops_figure(depths: Sequence[Mapping[str, float]], title: str) -> Figure:
    """Measured latency against FLOPs, each relative to full depth, one panel per network of
    ``benchmarks/depth_cost.py``'s record; a point on the diagonal costs in time what it saves
    in FLOPs."""
    frame = pd.DataFrame(depths)
    batches = [c for c in frame if c.startswith("latency_ratio_b")]
    batches.sort(key=lambda column: int(column.removeprefix("latency_ratio_b")))
    long = frame.melt(["arch", "s", "flops_ratio"], batches, "batch", "latency_ratio")
    long["batch"] = "batch " + long["batch"].str.removeprefix("latency_ratio_b")
    archs = list(dict.fromkeys(frame["arch"]))
    columns = min(2, len(archs))
    rows = math.ceil(len(archs) / columns)
    fig, axes = figure(columns, height=3.3 * rows + 0.8, nrows=rows, sharey=True)
    for ax, arch in zip(axes, archs, strict=False):
        sns.scatterplot(
            long[long["arch"] == arch],
            x="flops_ratio",
            y="latency_ratio",
            hue="batch",
            style="batch",
            s=60,
            legend=ax is axes[0],
            ax=ax,
        )
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        ax.set(xlim=(0, 1.05), ylim=(0, 1.15), title=arch)
        ax.set_xlabel("FLOPs, share of full depth (ratio)")
        ax.set_ylabel("latency, share of full (ratio)")
    legend_in_slot(fig, axes, len(archs), fontsize="small")
    suptitle(fig, title)
    return fig


def step_parts_figure(parts_ms: Mapping[str, float], step_ms: float, title: str) -> Figure:
    """The cooperative training step beside the sum of its passes timed alone, stacked."""
    fig, (ax,) = figure(1, height=4.6)
    left = 0.0
    colours = sns.color_palette("colorblind", len(parts_ms))
    for (name, ms), colour in zip(parts_ms.items(), colours, strict=True):
        ax.barh("sum of the parts", ms, left=left, color=colour, label=name)
        left += ms
    ax.barh("cooperative step", step_ms, color="grey")
    ax.set(xlabel="time per step (ms)", ylabel="measured (kind)")
    ax.set_title(wrap(title))
    legend_below(fig, *ax.get_legend_handles_labels(), most=2, fontsize="small")
    return fit_column(fig)
