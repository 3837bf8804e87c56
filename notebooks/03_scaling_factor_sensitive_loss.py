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
# # The Scaling Factor Sensitive Loss
#
# Each epoch, each Teammate draws a few scaling factors and trains the sub-networks of those
# depths, each learning from the labels and from its full-depth Teammate. A shallow
# sub-network has the hardest task, so the paper's *Scaling Factor Sensitive Loss* (SFSL)
# weighs its loss more {cite}`fang2023cooperative`. This chapter shows the weights, which
# blocks the sub-networks of different depths share, and a short run with and without SFSL.
#
# **Needs:** a CPU. At smoke, two tiny cooperative runs (seconds each); at preview, the
# preview runs of chapters 5 and 6, reused if they exist.

# %%
import pandas as pd
from IPython.display import display

from coop_utils import book, plots
from coop_utils.losses import sfsl_weight, subnetwork_loss
from coop_utils.models import SCALING_FACTORS

# %% tags=["parameters"]
profile = "smoke"
data_root = None
device = "cpu"
seed = 0
run_root = "runs"
results_root = "results"
dataset = "cifar100"

# %%
chapter = book.start_chapter(profile, device, seed, data_root, run_root, results_root)

# %% [markdown]
# ## The weights
#
# The sub-network of Teammate $i$ at scaling factor $s < 1$, with logits $z_i^s$, learns from
# the labels and from its Teammate's full-depth logits $z_i$:
#
# $$\mathcal{L}_i^{s} = w(s)\,\bigl[\mathrm{CE}(z_i^{s}, y) + \mathrm{KD}(z_i \to z_i^{s})\bigr],
# \qquad w(s) = \begin{cases} 1/s & \text{with SFSL} \\ 1 & \text{without.} \end{cases}$$

# %%
book.show_source(sfsl_weight)

# %%
book.show_source(subnetwork_loss)

# %%
weight_plot = plots.sfsl_weight_figure()

# %% [markdown]
# With SFSL the 20 % sub-network's loss counts five times, the 90 % one's barely more than
# once: the gradient budget shifts towards the depths that lose most.

# %% [markdown]
# ## A short run with and without SFSL
#
# The same cooperative run twice, differing only in `sfsl`. The run with SFSL is the main
# cooperative run of its dataset (chapters 4 and 5 reuse it); the one without is chapter 6's
# `no-sfsl` ablation.

# %%
configs = {
    "with SFSL": chapter.config(dataset),
    "without SFSL": chapter.ablation(dataset, "no-sfsl"),
}
runs = {label: chapter.train(config) for label, config in configs.items()}
trained = all(run is not None for run in runs.values())

# %%
if trained:
    by_depth = pd.concat(
        plots.metrics_frame(run.metrics, run=label).query("network == 'teammate_mean'")
        for label, run in runs.items()
    )
    sfsl_plot = plots.accuracy_by_depth_figure(
        by_depth,
        f"Mean Teammate accuracy by depth, with and without SFSL ({dataset}, {profile})",
        hue="run",
    )

# %% [markdown]
# SFSL is meant to lift the left of this curve, the shallow depths, at little cost on the
# right; at smoke the two lines differ by noise only.

# %%
if trained:
    table = by_depth.pivot(index="run", columns="s", values="top1").round(1)
    table.columns = [f"s = {s:g}" for s in table.columns]
    display(table)

# %% [markdown]
# ## Which blocks the shallow sub-networks share
#
# At inference, a Teammate keeps the top $k_j - 1$ gateable blocks of each stage *by its
# learned logits*. The same logits rank the blocks for every $s$, so the plans are nested: the
# blocks of a shallow sub-network are a subset of those of every deeper one, and the shallowest
# plan is the core that every depth shares.

# %%
if trained:
    systems = {label: book.load_system(run) for label, run in runs.items()}
    gated = {
        "with SFSL, Teammate 0": systems["with SFSL"].teammates[0],
        "with SFSL, Teammate 1": systems["with SFSL"].teammates[1],
        "without SFSL, Teammate 0": systems["without SFSL"].teammates[0],
    }
    plan_plot = plots.block_plan_figure(
        plots.block_plan_frame(gated), f"Blocks kept by the learned gates ({dataset}, {profile})"
    )

# %% [markdown]
# Each row is a depth; a dark cell is a block that runs. Rows only ever gain blocks going up,
# and the two Teammates, trained from different initialisations, need not choose the same ones.

# %%
if trained:
    nested = {
        label: all(
            set(net.active_blocks(shallow)) <= set(net.active_blocks(deep))
            for shallow, deep in zip(SCALING_FACTORS[:-1], SCALING_FACTORS[1:], strict=True)
        )
        for label, net in gated.items()
    }
    shared = {label: net.active_blocks(min(SCALING_FACTORS)) for label, net in gated.items()}
    display(pd.DataFrame({"plans nested": nested, "blocks every depth shares": shared}))
