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

from coop_utils import book, plots
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

# %%
full_latency = measure_latency(net, 1.0, device=chapter.torch_device)
half_time = choose_scaling_factor(net, budget_latency=full_latency / 2, device=chapter.torch_device)
print(
    f"full depth: {1e3 * full_latency:.2f} ms per image on {chapter.torch_device}; "
    f"within half of that: s = {half_time:g}"
)

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
# The rule of each verdict is in its row: accuracies differ by more than sampling noise when
# the gap is larger than two binomial standard errors of the test set, and "comparable" means
# within a margin set by the parameter `comparable_margin_pts` (2 points by default; see
# *Open decisions*).

# %%
verdicts = book.replication_verdicts(chapter.results_root, margin=comparable_margin_pts)
if verdicts is None:
    display(Markdown(book.PENDING_NOTE))
else:
    display(verdicts.set_index(["claim", "dataset"]))

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
        book.claim_table(book.summaries_of(chapter.results_root, profile), comparable_margin_pts)
        .query("dataset == @dataset")
        .set_index(["claim", "dataset"])
    )
