# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Cost-adaptive inference and the replication verdict
#
# What the paper promises is a choice at run time: given a budget of FLOPs or of time, run the
# deepest plan that fits {cite}`fang2023cooperative`. This chapter chooses depths under
# budgets, draws the accuracy-latency frontier of every method, lets you move through the
# depths with a slider, and ends with the verdict: each claim of the paper, our measured
# numbers, and whether it holds, computed from the result files.
#
# **Needs:** a CPU at smoke and preview (it reuses the runs of chapters 4 to 6 and trains
# those missing); full: the full runs.

# %%
import pandas as pd
from IPython.display import Markdown, display

from coop_utils import book, plots, verdict
from coop_utils.evaluate import choose_scaling_factor, count_flops, measure_latency

# %% tags=["parameters"]
profile = "smoke"
data_root = None
device = "cpu"
seed = 0
run_root = "runs"
results_root = "results"
dataset = "cifar100"
budget_percents = [20, 30, 40, 50, 60, 70, 80, 90, 100]
sample_images = 8
comparable_margin_pts = 2.0

# %%
chapter = book.start_chapter(profile, device, seed, data_root, run_root, results_root)

# %% [markdown]
# ## Choosing a depth for a budget
#
# With the grid $S = \{0.2, 0.3, \dots, 1\}$ and a budget $B$ of FLOPs per image, the depth
# to run is the largest that fits:
#
# $$s^{*}(B) = \max\,\{\, s \in S : \mathrm{FLOPs}(s) \le B \,\}.$$
#
# A latency budget works the same way with measured time on the device that will serve.

# %%
book.show_source(choose_scaling_factor)

# %% [markdown]
# The network to deploy is one Teammate of the cooperative run, the one with the better mean
# validation accuracy (the test split chooses nothing):

# %%
run = chapter.train(chapter.config(dataset), optional=False)
deployed = book.deployed_teammate(run.metrics)
net = book.load_system(run).teammates[int(deployed.removeprefix("teammate"))]
deployed_frame = plots.metrics_frame(run.metrics).query("network == @deployed")
print(f"deploying {deployed} of {run.directory}")

# %%
full_flops = count_flops(net)
rows = []
for percent in budget_percents:
    try:
        s = choose_scaling_factor(net, budget_flops=percent / 100 * full_flops)
    except ValueError:  # even the shallowest plan costs more than this budget
        continue
    rows.append(
        {"budget_pct": percent, "s": s, "top1": deployed_frame.set_index("s").loc[s, "top1"]}
    )
budgets = pd.DataFrame(rows)
budget_plot = plots.budget_figure(
    budgets, f"Depth chosen under a FLOPs budget, and its accuracy ({dataset}, {profile})"
)

# %% [markdown]
# Accuracy is a staircase in the budget: each step is one more depth of the grid that fits,
# and a budget between two steps buys nothing more than the step below it.

# %% [markdown]
# Time does not shrink as fast as FLOPs: the stem, the head and the per-call overhead are paid
# at every depth, so on a small network the shallowest plan can take more than half the time
# of the full one. The budget below sits halfway between the measured times of the shallowest
# and the full plan; `choose_scaling_factor` measures again, and when a noisy machine makes
# even the shallowest plan miss the budget it says so rather than returning a depth that
# does not fit.

# %%
shallowest = min(run.config.scaling_factors)
ends = {s: measure_latency(net, s, device=chapter.torch_device) for s in (shallowest, 1.0)}
budget_latency = (ends[shallowest] + ends[1.0]) / 2
print(
    f"on {chapter.torch_device}, batch 1: s = {shallowest:g} takes {1e3 * ends[shallowest]:.2f} ms,"
    f" s = 1 takes {1e3 * ends[1.0]:.2f} ms; budget {1e3 * budget_latency:.2f} ms"
)
try:
    s_within = choose_scaling_factor(
        net,
        budget_latency=budget_latency,
        device=chapter.torch_device,
        scaling_factors=run.config.scaling_factors,
    )
    print(f"deepest plan within the budget: s = {s_within:g}")
except ValueError as error:  # the re-measured times moved past the budget
    print(f"no plan fits: {error}")

# %% [markdown]
# ## The accuracy-latency frontier
#
# Every depth of every method is a point of accuracy against latency (batch 1, as recorded
# at the end of each run). The frontier joins the points no other point beats on both.

# %%
baselines = {"independent": "independent", "BYOT": "byot", "BranchyNet": "branchynet"}
method_runs = {"cooperative": run} | {
    label: chapter.train(chapter.config(dataset, method=method), optional=False)
    for label, method in baselines.items()
}
frame = pd.concat(book.method_frame(r.metrics, label) for label, r in method_runs.items())
frontier_plot = plots.frontier_figure(
    frame, f"Accuracy against latency, every method and depth ({dataset}, {profile})"
)

# %% [markdown]
# Where the cooperative points sit on the frontier, one trained network covers budgets that
# otherwise need several networks or exits.

# %%
plots.pareto_frontier(frame, "latency_ms", "top1")[["method", "s", "top1", "latency_ms"]].round(2)

# %% [markdown]
# ## Explore the depths
#
# Move the slider to choose $s$: the deployed Teammate's accuracy, FLOPs and latency at that
# depth, and its predictions on a few test images, computed live. The slider needs a running
# kernel (JupyterLab); in the HTML book, the static figure below shows three depths.

# %%
images, raw_images, labels = book.sample_test_images(run.config, sample_images)
plots.depth_explorer(net, images, raw_images, labels, deployed_frame)

# %%
static_plot = plots.predictions_figure(
    raw_images,
    labels,
    plots.predictions(net, images, [0.2, 0.5, 1.0]),
    f"Predictions of {deployed} at three depths ({dataset}, {profile})",
)

# %% [markdown]
# Green titles are right, red ones wrong; an image whose answer survives down to $s = 0.2$ is
# one the shallow plan already separates.

# %% [markdown]
# ## The replication verdict
#
# Each claim of the paper, our measured numbers, and a verdict computed from the result
# files of the preview and full profiles (the best recorded profile per dataset), never typed.
# The rule of each verdict is in its row; the rules share one piece of statistics:
#
# - A claim is a difference between two arms of runs, reported with its **95 % t-interval**,
#   whose degrees of freedom come from the seeds. It holds if the whole interval lies on the
#   claimed side of zero (of minus the margin, for "comparable"), does not hold if the whole
#   interval lies on the other side, and is inconclusive otherwise.
# - **Fewer than 3 runs in an arm: "inconclusive (n < 3)"**, whatever the mean. With 2 seeds
#   (1 degree of freedom) the 95 % multiplier is 12.7 standard errors, not 2.
# - Runs are **paired by seed** only where they share their initialisation and data order (the
#   Teammates across the cooperative variants) and ran the same code (equal code digests;
#   summaries without a digest are paired and say so). Across methods, the arms are unpaired
#   (Welch's interval).
# - No run counts as less noisy than the **binomial error of its test set**; the evidence column
#   states the test set's size.
# - Exit baselines are compared **at equal measured FLOPs**: the deployed Teammate's accuracy is
#   interpolated on measured FLOPs, only inside its measured range (below it an exit is not
#   scored), and absolute accuracy stands beside the drop from full depth.
# - "Depth cuts the cost" reads the depth-cost benchmark, measured on a quiet machine (the
#   performance section below), not the latencies each run timed at its end on a busy CPU: it
#   checks the implementation and replicates nothing.
#
# "Comparable" means within a margin set by the parameter `comparable_margin_pts` (2 points by
# default; see *Open decisions*).

# %%
verdicts = verdict.replication_verdicts(chapter.results_root, margin=comparable_margin_pts)
if verdicts is None:
    display(Markdown(verdict.PENDING_NOTE))
else:
    display(Markdown(f"**{verdict.tally(verdicts)}**"))
    display(verdicts.set_index(["claim", "dataset"]))
    display(Markdown("**Where we disagree with the paper, and why.**"))
    display(Markdown(verdict.discussion(verdicts, verdict.best_summaries(chapter.results_root))))

# %% [markdown]
# The exit-baseline rows are judged on these pairs: each exit below full depth beside the
# deployed Teammate at the same measured FLOPs, means over seeds (chapter 6 draws them).

# %%
for dataset_name, summaries in verdict.best_summaries(chapter.results_root).items():
    display(Markdown(f"*{dataset_name}*"))
    display(verdict.matched_cost_table(summaries).set_index(["method", "exit (share of blocks)"]))

# %% [markdown]
# A verdict is only as good as the runs behind it: the evidence column names their profile,
# backbone, hardware and date.

# %%
if profile not in book.RESULT_PROFILES:
    display(
        Markdown(
            f"The same computation on this execution's own {profile} runs, to show how the "
            "numbers are read. Its verdicts are withheld: smoke numbers are never results."
        )
    )
    display(
        verdict.claim_table(book.summaries_of(chapter.results_root, profile), comparable_margin_pts)
        .query("dataset == @dataset")
        .set_index(["claim", "dataset"])
    )

# %% [markdown]
# ## Performance on recorded hardware
#
# Three benchmarks check that the code is as fast as the method allows, each measuring its
# ratios side by side in one run: whether a shallow plan really costs less time (not only
# fewer FLOPs), what a cooperative training step costs against its passes timed alone, and
# how fast the data pipeline feeds training against torchvision's. Their records live in
# `results/benchmarks/`; `make benchmarks` measures them again on your machine.

# %%
records = book.benchmark_records(chapter.results_root)
missing = [name for name in book.BENCHMARKS if name not in records]
if missing:
    display(
        Markdown(
            "Not recorded yet: "
            + "; ".join(f"`{name}` (`{book.BENCHMARKS[name]}`)" for name in missing)
        )
    )

# %% [markdown]
# ### Latency against FLOPs
#
# For each scaling factor, latency and FLOPs relative to full depth. Points on the diagonal
# save as much time as FLOPs; points above it lose part of the saving to costs every depth
# pays (stem, head, per-layer dispatch), most at batch 1.

# %%
if "depth_cost" in records:
    record = records["depth_cost"]
    display(Markdown(book.benchmark_label(record)))
    latency_plot = plots.latency_flops_figure(
        record["results"]["depths"], "Latency against FLOPs per scaling factor (depth_cost)"
    )
    display(pd.DataFrame(record["results"]["depths"]).set_index(["arch", "s"]).round(3))
    display(pd.DataFrame(record["results"]["gate_overhead"]).set_index("arch").round(3))

# %% [markdown]
# The second table is the training-time price of the gate's machinery: with the `all`
# estimator every block runs, so a gated step costs what a full-depth step costs, plus the
# sampling and the gate's gradient. The default `kept` estimator runs only the kept blocks; the
# next benchmark measures what that saves in a whole cooperative step.
#
# ### The cooperative step against its parts

# %%
if "train_step" in records:
    record = records["train_step"]["results"]
    display(Markdown(book.benchmark_label(records["train_step"])))
    step_plot = plots.step_parts_figure(
        record["parts_ms"],
        record["cooperative_step_ms"],
        f"One cooperative step ({record['arch']}, batch {record['batch_size']}) against its "
        f"passes timed alone: ratio {record['ratio']:.2f} (target <= {record['target']:.2f})",
    )
    display(
        Markdown(
            f"Throughput: {record['images_per_s']['cooperative']:.0f} images/s for the "
            f"cooperative step, {record['images_per_s']['single network']:.0f} for one plain "
            "network."
        )
    )

# %% [markdown]
# ### Data throughput against torchvision

# %%
if "data_throughput" in records:
    record = records["data_throughput"]["results"]
    display(Markdown(book.benchmark_label(records["data_throughput"])))
    display(pd.DataFrame(record["measurements"]).set_index("measurement").round(2))
    display(pd.DataFrame(record["ratios"]).set_index("ratio").round(2))

# %% [markdown]
# ## Shipping one depth
#
# A device does not run the training system: it runs one network, at the depth it can afford.
# `export_plan` copies the plan's stem, blocks and head into a plain network, with no gate, no
# mask and no branch per block, each batch norm holding the statistics of that plan; the
# command `python -m coop_utils export` writes it as TorchScript, or as ONNX with the `[export]`
# extra, for a scaling factor or for a FLOPs budget:
#
# ```bash
# python -m coop_utils export runs/cifar100/cooperative/<hash> --budget-flops 5e7 --output net.onnx
# ```
#
# Here the deployed Teammate ships at the deepest plan within 60 % of its full-depth FLOPs: the
# TorchScript file is written beside the run's checkpoint, loaded back, and checked against the
# network of this chapter at the same depth on the sample images.

# %%
import torch  # noqa: E402 (this section's own imports)

from coop_utils import export  # noqa: E402

s_ship = choose_scaling_factor(
    net, budget_flops=0.6 * full_flops, scaling_factors=run.config.scaling_factors
)
shipped = export.export_plan(net, s_ship)
ship_path = export.save_plan(shipped, run.directory / f"{deployed}-s{s_ship:g}.pt", force=True)
reloaded = export.load_plan(ship_path)
with torch.no_grad():
    reference = net(images, s=s_ship)
    gap = (reloaded(images) - reference).abs().max().item()
    agree = (reloaded(images).argmax(1) == reference.argmax(1)).float().mean().item()
print(
    f"{deployed} at s = {s_ship:g}: blocks {shipped.plan_blocks} of {net.num_blocks}, "
    f"{count_flops(net, s_ship):,} FLOPs per image, {ship_path.stat().st_size / 1e6:.2f} MB "
    f"({ship_path.name}); reloaded: largest logit difference {gap:.1e}, "
    f"{agree:.0%} of predictions the same"
)

# %% [markdown]
# Without the gate's machinery a shipped plan is never slower than the network choosing its
# depth at run time. Timed here at batch 1, on this execution's CPU
# (`benchmarks/export_latency.py` measures it at batch 1 and 64, with ONNX Runtime too):

# %%
ship_timings = {
    f"net(x, s={s_ship:g})": lambda x: net(x, s=s_ship),
    "exported, eager": shipped,
    "exported, TorchScript file": reloaded,
}
ship_latency = {
    name: 1e3 * export.time_call(call, images[:1]) for name, call in ship_timings.items()
}
pd.Series(ship_latency, name="latency_ms, batch 1").round(3).to_frame()
