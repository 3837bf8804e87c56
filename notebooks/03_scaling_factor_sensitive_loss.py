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
# weighs its loss more {cite}`fang2023cooperative`. The abstract names the loss but not its
# formula: the weight $w(s) = 1/s$ below is **our reading** ({doc}`../open-decisions`), the
# simplest weight that grows as the depth shrinks. This chapter shows the weights, which
# blocks the sub-networks of different depths share, and a short run with and without SFSL.
#
# **Needs:** a CPU. It shows the recorded runs; it trains only when asked (the runs of
# chapters 5 and 6, reused if they exist).

# %%
import pandas as pd
from IPython.display import Markdown, display

from coop_utils import chapters, listings, plots, result_plots
from coop_utils.losses import sfsl_weight, subnetwork_loss
from coop_utils.training import load_system

# %% tags=["parameters"]
profile = "smoke"
data_root = None
device = "cpu"
seed = 0
run_root = "runs"
results_root = "results"
train = True
dataset = "cifar100"

# %% tags=["remove-input"]
chapter = chapters.start_chapter(
    profile, device, seed, data_root, run_root, results_root, train
)

# %% [markdown]
# ## The weights
#
# The sub-network of Teammate $i$ at scaling factor $s < 1$, with logits $z_i^s$, learns from
# the labels and from its Teammate's full-depth logits $z_i$ (our reading of SFSL):
#
# $$\mathcal{L}_i^{s} = w(s)\,\bigl[\mathrm{CE}(z_i^{s}, y) + \mathrm{KD}(z_i \to z_i^{s})\bigr],
# \qquad w(s) = \begin{cases} 1/s & \text{with SFSL} \\ 1 & \text{without.} \end{cases}$$

# %%
listings.show_source(sfsl_weight)

# %%
listings.show_source(subnetwork_loss)

# %%
weight_plot = plots.sfsl_weight_figure()

# %% [markdown]
# With SFSL the 20 % sub-network's loss counts five times, the 90 % one's barely more than
# once: the gradient budget shifts towards the depths that lose most.

# %% [markdown]
# ## With and without SFSL: the recorded runs
#
# The same cooperative run twice, differing only in `sfsl`: the main cooperative run of the
# dataset (chapter 5) and chapter 6's `no-sfsl` ablation. The lines are the Teammates'
# mean accuracy, averaged over the recorded seeds. The band is the 95 % t-interval over the
# seeds, the interval the verdicts use (they also floor it at the test set's binomial error).

# %%
arms = {"with SFSL": "cooperative", "without SFSL": "cooperative-no-sfsl"}
recorded_profile, recorded = chapter.results.campaign(
    dataset, list(arms.values())
)
display(Markdown(chapters.recorded_label(recorded, dataset)))
by_depth = pd.concat(
    chapters.seeds_frame(recorded, name)
    .query("network == 'teammate_mean'")
    .assign(run=label)
    for label, name in arms.items()
)
if by_depth["run"].nunique() == len(arms):
    chapters.show(
        result_plots.accuracy_by_depth_figure(
            by_depth,
            "The Teammates' mean accuracy by depth, with and without SFSL "
            f"({dataset})",
            hue="run",
        ),
        chapters.accuracy_table(by_depth, index="run"),
    )

# %% [markdown]
# SFSL is meant to lift the left of this curve, the shallow depths, where the weight $1/s$ is
# largest.

# %% tags=["remove-input"]
if by_depth["run"].nunique() == len(arms):
    # the difference of the mean top-1 at each distinct depth plan, shallow to deep (unrounded,
    # as the verdict computes it; the table above rounds each mean on its own)
    means = by_depth.pivot_table(
        index="active_blocks", columns="run", values="top1"
    )
    factors = by_depth.groupby("active_blocks")["s"].agg(["min", "max"])
    change = (means["with SFSL"] - means["without SFSL"]).dropna()
    spans = {
        blocks: " to ".join(
            dict.fromkeys(f"{s:g}" for s in factors.loc[blocks])
        )
        for blocks in change.index
    }
    parts = [
        f"{change[blocks]:+.1f} points at {blocks:.0f} blocks (*s* = {spans[blocks]})"
        for blocks in change.index
    ]
    shallow, deep = change.iloc[0], change.iloc[-1]
    display(
        Markdown(
            "In the recorded runs SFSL changes the Teammates' mean top-1 by "
            + ", ".join(parts[:-1])
            + (" and " if len(parts) > 1 else "")
            + parts[-1]
            + f": {'a gain' if shallow >= 0 else 'a loss'} of {abs(shallow):.1f} points at the "
            f"shallowest plan, and {'a gain' if deep >= 0 else 'a cost'} of {abs(deep):.1f} "
            "points at the deepest. Chapter 6 judges whether the shallow difference exceeds the "
            "spread between seeds."
        )
    )

# %% [markdown]
# ## Which blocks the shallow sub-networks share
#
# At inference, a Teammate keeps the top $k_j - 1$ gateable blocks of each stage *by its
# learned logits*. The same logits rank the blocks for every $s$, so the plans are nested: the
# blocks of a shallow sub-network are a subset of those of every deeper one, and the shallowest
# plan is the core that every depth shares. The committed weights of the recorded runs (seed 0):

# %%
gated = {
    f"{label}, {network}": chapters.recorded_network(
        chapter.results, recorded_profile, dataset, name, network
    )
    for label, name in arms.items()
    for network in ("teammate0", "teammate1")
    if recorded_profile is not None
}
gated = {label: net for label, net in gated.items() if net is not None}
if gated:
    chapters.show(
        plots.block_plan_figure(
            plots.block_plan_frame(gated),
            f"Blocks kept by the learned gates ({dataset})",
        ),
        plots.nested_plans(gated),
    )
else:
    display(
        Markdown(
            "*No weights of these runs are committed yet "
            "(`results/weights/`).*"
        )
    )

# %% [markdown]
# Each row is a depth; a dark cell is a block that runs. Rows only ever gain blocks going up,
# and two Teammates, trained from different initialisations, need not choose the same ones.
#
# ## Run it yourself
#
# The two runs at the profile of this build; a finished run is reused, never retrained.

# %% tags=["hide-input"]
configs = {
    "with SFSL": chapter.config(dataset),
    "without SFSL": chapter.ablation(dataset, "no-sfsl"),
}
runs = chapter.train(configs)
if len(runs) == len(configs):
    live = pd.concat(
        result_plots.metrics_frame(run.metrics, run=label).query(
            "network == 'teammate_mean'"
        )
        for label, run in runs.items()
    )
    chapters.show(
        result_plots.accuracy_by_depth_figure(
            live,
            "The Teammates' mean accuracy by depth "
            f"({dataset}, {profile}, this build)",
            hue="run",
        )
    )
    systems = {label: load_system(run) for label, run in runs.items()}
    live_gated = {
        f"{label}, teammate{i}": net
        for label, system in systems.items()
        for i, net in enumerate(system.teammates)
    }
    chapters.show(
        plots.block_plan_figure(
            plots.block_plan_frame(live_gated),
            f"Blocks kept by the gates ({dataset}, {profile})",
        ),
        plots.nested_plans(live_gated),
    )
