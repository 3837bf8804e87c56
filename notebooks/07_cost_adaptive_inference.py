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
# # Cost-adaptive inference
#
# What the paper promises is a choice at run time: given a budget of FLOPs or of time, run the
# deepest plan that fits {cite}`fang2023cooperative`. This chapter chooses depths under
# budgets, draws the accuracy-latency frontier of every method, shows the deployed network's
# predictions at several depths, and ships one depth as a plain network. How fast the code
# itself runs, measured on a quiet machine, is the appendix {doc}`08_engineering_checks`.
#
# **Needs:** a CPU. It reads the recorded cooperative run and its committed weights; where
# none is recorded and the build trains, it uses the build's own cooperative run on the same
# dataset (that of chapter 4 or 5, reused).

# %%
import tempfile

import pandas as pd
import torch
from IPython.display import Markdown, display

from coop_utils import (
    chapters,
    export,
    listings,
    plots,
    result_plots,
    results,
)
from coop_utils.evaluate import (
    choose_scaling_factor,
    count_flops,
    measure_latency,
)

# %% tags=["parameters"]
profile = "smoke"
data_root = None
device = "cpu"
seed = 0
run_root = "runs"
results_root = "results"
train = True
dataset = "cifar100"
budget_percents = [20, 30, 40, 50, 60, 70, 80, 90, 100]
sample_images = 8
explorer = True

# %% tags=["remove-input"]
chapter = chapters.start_chapter(
    profile, device, seed, data_root, run_root, results_root, train
)

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
listings.show_source(choose_scaling_factor)

# %% [markdown]
# The network to deploy is one Teammate of the cooperative run, the one with the better mean
# validation accuracy (the test split chooses nothing): the recorded run's, with its committed
# weights, or else the run this build trains. Its accuracies below are those of the deployed
# Teammate, as in chapter 6.

# %%
deployed = chapters.deployed_network(chapter, dataset, sample_images)
if deployed is None:
    display(Markdown(chapters.recorded_label(results.empty(), dataset)))
else:
    net, grid = deployed.net, deployed.config.scaling_factors
    display(Markdown(deployed.label + " " + chapters.deployed_line(deployed)))

# %%
if deployed is not None:
    top1 = deployed.frame.set_index("s")["top1"]
    full_flops = count_flops(net)
    rows = []
    for percent in budget_percents:
        budget = percent / 100 * full_flops
        try:
            s = choose_scaling_factor(net, budget_flops=budget)
        except ValueError:  # even the shallowest plan costs more
            continue
        rows.append({"budget_pct": percent, "s": s, "top1": top1.loc[s]})
    budget_plot = plots.budget_figure(
        pd.DataFrame(rows),
        "Depth chosen under a FLOPs budget, and the deployed Teammate's "
        f"accuracy ({dataset})",
    )

# %% [markdown]
# The chosen depth is a staircase in the budget: each step is one more depth of the grid that
# fits, and a budget between two steps buys nothing more than the step below it. Accuracy
# follows the chosen depth, up to the noise between plans: a deeper plan need not test better.
#
# Time does not shrink as fast as FLOPs: the stem, the head and the per-call overhead are paid
# at every depth, so on a small network the shallowest plan takes a much larger share of the
# full plan's time than of its FLOPs (the depth-cost benchmark of the appendix measures both
# shares on three backbones). The budget below sits halfway between the times of the
# shallowest and the full plan, measured while this page is built on the machine that builds
# it; `choose_scaling_factor` measures again, and when a noisy machine makes even the
# shallowest plan miss the budget it says so rather than returning a depth that does not fit.

# %%
if deployed is not None:
    shallowest, where = min(grid), chapter.torch_device
    ends = {
        s: measure_latency(net, s, device=where) for s in (shallowest, 1.0)
    }
    budget_latency = (ends[shallowest] + ends[1.0]) / 2
    try:
        s_within = choose_scaling_factor(
            net,
            budget_latency=budget_latency,
            device=where,
            scaling_factors=grid,
        )
        chosen = f"the deepest plan within it is s = {s_within:g}"
    except ValueError as error:  # the re-measured times moved past it
        chosen = f"no plan fits it when measured again ({error})"
    display(
        Markdown(
            f"Measured while building this page ({where}, batch 1): "
            f"s = {shallowest:g} takes {1e3 * ends[shallowest]:.2f} ms and "
            f"s = 1 takes {1e3 * ends[1.0]:.2f} ms. For a budget of "
            f"{1e3 * budget_latency:.2f} ms, {chosen}."
        )
    )

# %% [markdown]
# ## The accuracy-latency frontier
#
# Every depth of every recorded method is a point of accuracy against latency (batch 1, timed
# at the end of each run on the machine that trained it, not on a quiet machine), both the
# mean over the seeds; the cooperative method is its deployed Teammate. The frontier joins the
# points no other point beats on both. These times carry that machine's noise: two plans a
# block apart can swap places.

# %%
methods = ("cooperative", "independent", "byot", "branchynet")
recorded_profile, recorded = chapter.results.campaign(dataset, methods)
shown = [method for method in methods if method in set(recorded["run"])]
if shown:
    seeds = result_plots.method_seeds_frame(recorded, shown)
    columns = ["latency_ms", "top1"]
    frame = seeds.groupby(["method", "s"], as_index=False)[columns].mean()
    front = plots.pareto_frontier(frame, "latency_ms", "top1")
    chapters.show(
        plots.frontier_figure(
            frame,
            "Accuracy against latency timed by each run, recorded "
            f"{recorded_profile} runs ({dataset})",
        ),
        "The frontier's points:",
        front.set_index(["method", "s"])[columns].round(2),
    )
else:
    display(Markdown(chapters.recorded_label(recorded, dataset)))

# %% [markdown]
# Where the cooperative points sit on the frontier, one trained network covers budgets that
# otherwise need several networks or exits.
#
# ## Predictions at three depths
#
# The deployed Teammate's predictions on a few test images at three depths, computed here from
# its weights. In JupyterLab, the cell after this one (not in the HTML book) adds a slider over
# every depth, with its accuracy, FLOPs and latency.

# %% tags=["remove-cell"]
if (
    explorer
    and deployed is not None
    and deployed.trained
    and deployed.samples
):
    samples = deployed.samples
    display(
        plots.depth_explorer(
            net, samples.images, samples.raw, samples.labels, deployed.frame
        )
    )

# %%
if deployed is not None and deployed.trained and deployed.samples is not None:
    samples = chapters.Samples(
        *(part[:sample_images] for part in deployed.samples)
    )
    chapters.show(
        plots.predictions_figure(
            samples.raw,
            samples.labels,
            plots.predictions(net, samples.images, [0.2, 0.5, 1.0]),
            "Predictions of the deployed Teammate at three depths "
            f"({dataset})",
        ),
        chapters.class_names_line(samples),
    )
else:
    display(
        Markdown("*No weights of the deployed network are committed yet.*")
    )

# %% [markdown]
# Green titles are right, red ones wrong; an image whose answer survives down to $s = 0.2$ is
# one the shallow plan already separates.

# %% [markdown]
# ## Shipping one depth
#
# A device does not run the training system: it runs one network, at the depth it can afford.
# `export_plan` copies the plan's stem, blocks and head into a plain network, with no gate, no
# mask and no branch per block, each batch norm holding the statistics of that plan; the
# command `python -m coop_utils export` writes it as an ExportedProgram (`.pt2`, `torch.export`),
# or as ONNX with the `[export]` extra, for a scaling factor or for a FLOPs budget:
#
# ```bash
# python -m coop_utils export runs/cifar100/cooperative/<hash> \
#     --budget-flops 5e7 --output net.pt2
# python -m coop_utils export runs/cifar100/cooperative/<hash> \
#     --s 0.5 --output net.onnx
# ```
#
# The network takes images normalised as the run's data pipeline normalises them: float images
# in [0, 1], N x 3 x H x W, less the per-channel mean and divided by the standard deviation of
# the run's training images. The file records that normalisation (mean, std, image size), and
# `export.load_plan` returns it beside the network, so raw images go in as `net(norm(images))`
# (`python -m coop_utils export --help` says where the command takes the statistics from).
#
# Here the deployed Teammate ships at the deepest plan within 60 % of its full-depth FLOPs: the
# `.pt2` file is written to a temporary folder with the normalisation of the sample images,
# loaded back, fed the raw images through the normalisation it records, and checked against the
# network of this chapter at the same depth on the same images.

# %%
if deployed is not None and deployed.trained and deployed.samples is not None:
    images, raw = deployed.samples.images, deployed.samples.raw
    s_ship = choose_scaling_factor(
        net, budget_flops=0.6 * full_flops, scaling_factors=grid
    )
    shipped = export.export_plan(net, s_ship)
    # the normalisation the samples were prepared with: the run's statistics
    sample_norm = export.Normalisation.of_samples(raw, images)
    ship_path = export.save_plan(
        shipped,
        f"{tempfile.mkdtemp()}/{deployed.name}-s{s_ship:g}.pt2",
        normalisation=sample_norm,
    )
    reloaded, recorded_norm = export.load_plan(ship_path)
    with torch.no_grad():
        reference = net(images, s=s_ship)
        shipped_logits = reloaded(recorded_norm(raw))  # raw uint8 images in
    display(
        Markdown(
            chapters.shipped_line(
                net, shipped, s_ship, ship_path, shipped_logits, reference
            )
            + " "
            + chapters.normalisation_line(recorded_norm)
        )
    )

# %% [markdown]
# Without the gate's machinery a shipped plan should be no slower than the network choosing
# its depth at run time: the export-latency benchmark of the appendix,
# {doc}`08_engineering_checks`, times each exported form beside the gated network on a quiet
# machine.
