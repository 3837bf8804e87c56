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
# predictions at several depths, checks the speed of the code on recorded hardware, and ships
# one depth as a plain network.
#
# **Needs:** a CPU. It reads the recorded cooperative run and its committed weights; where
# none is recorded and the build trains, it uses the build's own cooperative run on the same
# dataset (that of chapter 4 or 5, reused).

# %%
import tempfile

import pandas as pd
import torch
from IPython.display import Markdown, display

from coop_utils import chapters, export, plots, results
from coop_utils.evaluate import choose_scaling_factor, count_flops, measure_latency

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

# %%
chapter = chapters.start_chapter(profile, device, seed, data_root, run_root, results_root, train)

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
chapters.show_source(choose_scaling_factor)

# %% [markdown]
# The network to deploy is one Teammate of the cooperative run, the one with the better mean
# validation accuracy (the test split chooses nothing): the recorded run's, with its committed
# weights, or else the run this build trains.

# %%
deployed = chapters.deployed_network(chapter, dataset, sample_images)
if deployed is None:
    display(Markdown(chapters.recorded_label(results.empty(), dataset)))
else:
    display(Markdown(deployed.label))
    weights = "" if deployed.trained else " (weights not committed yet: FLOPs and latency only)"
    print(f"deploying {deployed.name}{weights}")
    net, grid = deployed.net, deployed.config.scaling_factors

# %%
if deployed is not None:
    top1 = deployed.frame.set_index("s")["top1"]
    full_flops = count_flops(net)
    rows = []
    for percent in budget_percents:
        try:
            s = choose_scaling_factor(net, budget_flops=percent / 100 * full_flops)
        except ValueError:  # even the shallowest plan costs more than this budget
            continue
        rows.append({"budget_pct": percent, "s": s, "top1": top1.loc[s]})
    budget_plot = plots.budget_figure(
        pd.DataFrame(rows), f"Depth chosen under a FLOPs budget, and its accuracy ({dataset})"
    )

# %% [markdown]
# The chosen depth is a staircase in the budget: each step is one more depth of the grid that
# fits, and a budget between two steps buys nothing more than the step below it. Accuracy
# follows the chosen depth, up to the noise between plans: a deeper plan need not test better.
#
# Time does not shrink as fast as FLOPs: the stem, the head and the per-call overhead are paid
# at every depth, so on a small network the shallowest plan takes a much larger share of the
# full plan's time than of its FLOPs (the depth-cost benchmark below measures both shares on
# three backbones). The budget below sits halfway between the measured times of the shallowest
# and the full plan; `choose_scaling_factor` measures again, and when a noisy machine makes
# even the shallowest plan miss the budget it says so rather than returning a depth that
# does not fit.

# %%
if deployed is not None:
    shallowest = min(grid)
    ends = {s: measure_latency(net, s, device=chapter.torch_device) for s in (shallowest, 1.0)}
    budget_latency = (ends[shallowest] + ends[1.0]) / 2
    print(
        f"on {chapter.torch_device}, batch 1: s = {shallowest:g} takes "
        f"{1e3 * ends[shallowest]:.2f} ms, s = 1 takes {1e3 * ends[1.0]:.2f} ms; "
        f"budget {1e3 * budget_latency:.2f} ms"
    )
    try:
        s_within = choose_scaling_factor(
            net, budget_latency=budget_latency, device=chapter.torch_device, scaling_factors=grid
        )
        print(f"deepest plan within the budget: s = {s_within:g}")
    except ValueError as error:  # the re-measured times moved past the budget
        print(f"no plan fits: {error}")

# %% [markdown]
# ## The accuracy-latency frontier
#
# Every depth of every recorded method is a point of accuracy against latency (batch 1, as
# timed at the end of each run on the machine that trained it), both the mean over the seeds.
# The frontier joins the points no other point beats on both. These times carry that machine's
# noise: two plans a block apart can swap places; the benchmarks below time depths side by
# side.

# %%
methods = ("cooperative", "independent", "byot", "branchynet")
recorded_profile, recorded = chapter.results.campaign(dataset, methods)
shown = [method for method in methods if method in set(recorded["run"])]
if shown:
    seeds = plots.method_seeds_frame(recorded, shown)
    frame = seeds.groupby(["method", "s"], as_index=False)[["latency_ms", "top1"]].mean()
    frontier_plot = plots.frontier_figure(
        frame, f"Accuracy against latency, recorded {recorded_profile} runs ({dataset})"
    )
    front = plots.pareto_frontier(frame, "latency_ms", "top1")
    display(front.set_index(["method", "s"])[["top1", "latency_ms"]].round(2))
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
if explorer and deployed is not None and deployed.trained and deployed.samples is not None:
    samples = deployed.samples
    display(plots.depth_explorer(net, samples.images, samples.raw, samples.labels, deployed.frame))

# %%
if deployed is not None and deployed.trained and deployed.samples is not None:
    samples = chapters.Samples(*(part[:sample_images] for part in deployed.samples))
    static_plot = plots.predictions_figure(
        samples.raw,
        samples.labels,
        plots.predictions(net, samples.images, [0.2, 0.5, 1.0]),
        f"Predictions of {deployed.name} at three depths ({dataset})",
    )
    classes = {int(label): name for label, name in zip(samples.labels, samples.names, strict=True)}
    print("true classes: " + "; ".join(f"{label}: {name}" for label, name in classes.items()))
else:
    display(Markdown("*No weights of the deployed network are committed yet.*"))

# %% [markdown]
# Green titles are right, red ones wrong; an image whose answer survives down to $s = 0.2$ is
# one the shallow plan already separates.

# %% [markdown]
# ## Performance on recorded hardware
#
# Four benchmarks check that the code is as fast as the method allows, each measuring its
# ratios side by side in one run: whether a shallow plan really costs less time (not only
# fewer FLOPs), what a cooperative training step costs against its passes timed alone, how
# fast the data pipeline feeds training against torchvision's, and (at the end of the
# chapter) whether a shipped depth runs as fast as the network that chooses it. Their records
# live in `results/benchmarks/`; `make benchmarks` measures them again on your machine.

# %%
records = chapters.benchmark_records(chapter.results)
missing = [name for name in chapters.BENCHMARKS if name not in records]
if missing:
    display(
        Markdown(
            "Not recorded yet: "
            + "; ".join(f"`{name}` (`{chapters.BENCHMARKS[name]}`)" for name in missing)
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
    display(Markdown(chapters.benchmark_label(record)))
    latency_plot = plots.latency_flops_figure(
        record["results"]["depths"], "Latency against FLOPs per scaling factor (depth_cost)"
    )

# %% [markdown]
# The figure's numbers, each backbone's plans as shares of its full depth (the times
# themselves are in the record), then the training-time price of the gate's machinery:

# %%
if "depth_cost" in records:
    depths = pd.DataFrame(record["results"]["depths"]).set_index(["arch", "s"])
    ratios = [column for column in depths if column.endswith("_ratio") or "ratio_b" in column]
    display(depths[["active_blocks", *ratios]].round(2))
    display(pd.DataFrame(record["results"]["gate_overhead"]).set_index("arch").round(3))
    target = record["results"]["gate_overhead_target"]
    overheads = ", ".join(
        f"{row['arch']} {row['overhead']:+.1%}" for row in record["results"]["gate_overhead"]
    )
    display(
        Markdown(
            f"Gate overhead target: at most {target:.0%} ({overheads}). The record's targets "
            f"(latency within {record['results']['latency_tolerance']:.0%} of the FLOPs ratio "
            f"at every depth, and this overhead) are "
            f"{'all met' if record['results']['targets_met'] else 'not all met'}."
        )
    )

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
    display(Markdown(chapters.benchmark_label(records["train_step"])))
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
    display(Markdown(chapters.benchmark_label(records["data_throughput"])))
    display(pd.DataFrame(record["measurements"]).set_index("measurement").round(2))
    display(pd.DataFrame(record["ratios"]).set_index("ratio").round(2))

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
# python -m coop_utils export runs/cifar100/cooperative/<hash> --budget-flops 5e7 --output net.pt2
# python -m coop_utils export runs/cifar100/cooperative/<hash> --s 0.5 --output net.onnx
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
    images = deployed.samples.images
    s_ship = choose_scaling_factor(net, budget_flops=0.6 * full_flops, scaling_factors=grid)
    shipped = export.export_plan(net, s_ship)
    folder = tempfile.mkdtemp()
    # the normalisation the sample images were prepared with: the run's training statistics
    sample_norm = export.Normalisation.of_samples(deployed.samples.raw, images)
    ship_path = export.save_plan(
        shipped, f"{folder}/{deployed.name}-s{s_ship:g}.pt2", normalisation=sample_norm
    )
    reloaded, recorded_norm = export.load_plan(ship_path)
    with torch.no_grad():
        reference = net(images, s=s_ship)
        shipped_logits = reloaded(recorded_norm(deployed.samples.raw))  # raw uint8 images in
        gap = (shipped_logits - reference).abs().max().item()
        agree = (shipped_logits.argmax(1) == reference.argmax(1)).float().mean().item()
    print(
        f"{deployed.name} at s = {s_ship:g}: blocks {shipped.plan_blocks} of {net.num_blocks}, "
        f"{count_flops(net, s_ship):,} FLOPs per image, {ship_path.stat().st_size / 1e6:.2f} MB"
        f"; reloaded: largest logit difference {gap:.1e}, {agree:.0%} of predictions the same"
    )
    print(
        "recorded input normalisation: mean "
        + ", ".join(f"{v:.4f}" for v in recorded_norm.mean)
        + "; std "
        + ", ".join(f"{v:.4f}" for v in recorded_norm.std)
        + f"; {recorded_norm.image_size}x{recorded_norm.image_size} px"
    )

# %% [markdown]
# Without the gate's machinery a shipped plan should be no slower than the network choosing
# its depth at run time. Timed here at batch 1, on this execution's CPU:

# %%
if deployed is not None and deployed.trained and deployed.samples is not None:
    ship_timings = {
        f"net(x, s={s_ship:g})": lambda x: net(x, s=s_ship),
        "exported, eager": shipped,
        "exported, .pt2 file": reloaded,
    }
    ship_latency = {
        name: 1e3 * export.time_call(call, images[:1]) for name, call in ship_timings.items()
    }
    display(pd.Series(ship_latency, name="latency_ms, batch 1").round(3).to_frame())

# %% [markdown]
# The recorded benchmark (`benchmarks/export_latency.py`) times each exported form beside the
# gated network, interleaved, at batch 1 and 64; its target is every form within 1.03x of the
# gated network's time (the median of the per-round ratios) at every plan and batch.

# %%
if "export_latency" in records:
    record = records["export_latency"]["results"]
    display(Markdown(chapters.benchmark_label(records["export_latency"])))
    rows = pd.DataFrame(record["rows"])
    ratios = rows.pivot_table(
        index=["s", "batch_size"], columns="variant", values="ratio_to_gated", sort=False
    )
    display(ratios.drop(columns="gated net(x, s)").round(2))
    exported = rows[rows["variant"] != "gated net(x, s)"]
    slowest = exported.loc[exported["ratio_to_gated"].idxmax()]
    met = "met" if record["passed"] else "not met"
    display(
        Markdown(
            f"Target {met} on {record['arch']}: the slowest case is {slowest['variant']} at "
            f"s = {slowest['s']:g}, batch {slowest['batch_size']}, "
            f"{slowest['ratio_to_gated']:.2f}x the gated network's time."
        )
    )
