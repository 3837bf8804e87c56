"""The benchmarks' records as the book shows them: each engineering check of the appendix
page with its targets and what a miss would mean to a user (:func:`show_depth_cost`,
:func:`show_train_step`, :func:`show_data_throughput`, :func:`show_export_latency`), the
commands of those not recorded yet, and what a depth costs in chapter 1
(:func:`depth_costs_shown`), timed by the depth-cost benchmark where it recorded the backbone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from coop_utils import result_plots
from coop_utils.chapters import Chapter, show
from coop_utils.listings import wrap_command
from coop_utils.results import Results
from coop_utils.runs import device_name
from coop_utils.verdict import DEPTH_COST_COMMAND

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
    show(
        benchmark_label(record),
        result_plots.latency_flops_figure(
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
    show(
        benchmark_label(record),
        result_plots.step_parts_figure(step["parts_ms"], step["cooperative_step_ms"], title),
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
    show(benchmark_label(record), measurements, ratios, _targets(rows))


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
    show(
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


def missing_benchmarks(names: Sequence[str]) -> str:
    """Markdown: the benchmarks not recorded yet, and the command that records each."""
    commands = "\n".join(wrap_command(BENCHMARKS[name]) for name in names)
    return f"Not recorded yet: {', '.join(f'`{n}`' for n in names)}.\n\n```bash\n{commands}\n```"
