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
# # Cooperative training on CIFAR-100
#
# The whole system at once, as the paper trains it {cite}`fang2023cooperative`: two gated
# Teammates, their sub-networks at randomly drawn depths, and a Leader, trained together by
# one optimizer on CIFAR-100 {cite}`krizhevsky2009learning`. The chapter trains (or reuses)
# the run of the chosen profile, shows its training curves and its accuracy at every depth,
# then the best recorded real run from `results/`.
#
# **Needs:** smoke: a CPU, seconds, generated data. Preview: the real CIFAR-100 in
# `COOP_DATA_ROOT` (downloaded if missing) and a CPU. Full: a GPU (see *Reproducing*).

# %%
from IPython.display import display

from coop_utils import book, plots
from coop_utils.losses import cooperative_objective

# %% tags=["parameters"]
profile = "smoke"
data_root = None
device = "cpu"
seed = 0
run_root = "runs"
results_root = "results"

# %%
chapter = book.start_chapter(profile, device, seed, data_root, run_root, results_root)
dataset = "cifar100"
networks = ["teammate0", "teammate1", "teammate_mean", "leader"]

# %% [markdown]
# ## The objective
#
# With the Leader's logits $z_L$, the Teammates' $z_1, z_2$, and the sub-network of Teammate
# $i$ at each drawn scaling factor $s \in S_i$ with logits $z_i^s$, one batch's loss is
#
# $$\mathcal{L} = \mathrm{CE}(z_L, y) + \sum_{i} \Bigl[\mathrm{CE}(z_i, y)
# + \mathrm{KD}(z_j \to z_i) + \mathrm{KD}(z_L \to z_i)
# + \sum_{s \in S_i} w(s)\bigl(\mathrm{CE}(z_i^s, y) + \mathrm{KD}(z_i \to z_i^s)\bigr)\Bigr],$$
#
# $j$ being the other Teammate and $w(s) = 1/s$ (chapter 3). Each term's switch
# (`use_leader`, `mutual`, `sfsl`) removes exactly that term:

# %%
book.show_source(cooperative_objective)

# %% [markdown]
# ## Training at the chosen profile
#
# The configuration comes from `params/<profile>.yaml`. A finished run with the same
# configuration is reused from the run store, an interrupted one resumes.

# %%
config = chapter.config(dataset)
book.config_table(config)

# %%
run = chapter.train(config)
if run is not None:
    status = "reused" if run.reused else "trained"
    print(f"{status}: {run.directory}, {run.wall_time_s:.0f} s of training")

# %%
if run is not None:
    curves = plots.training_curves_figure(
        {"cooperative": run.log}, f"Training the cooperative system ({dataset}, {profile})"
    )

# %% [markdown]
# The loss sums every term of the objective (the Leader, two Teammates and their sub-networks),
# so its level is not comparable with a single network's cross-entropy; its fall is what to
# look for. It can jump from one epoch to the next: each epoch draws new scaling factors, and
# SFSL weighs a sub-network's terms by $1/s$, so an epoch that draws $s = 0.2$ counts them
# five times.

# %% [markdown]
# ## Accuracy at every depth

# %%
if run is not None:
    frame = plots.metrics_frame(run.metrics).query("network in @networks")
    accuracy_plot = plots.accuracy_by_depth_figure(
        frame, f"Test accuracy by depth, each Teammate, their mean and the Leader ({profile})"
    )

# %% [markdown]
# Each Teammate is one network evaluated at nine depths; the Leader exists at full depth
# only. The claim under test is that the curves stay flat as $s$ shrinks.

# %%
if run is not None:
    display(book.accuracy_table(frame))

# %% [markdown]
# ## Recorded results
#
# The best recorded real run on this dataset (full before preview), whatever profile this
# page was executed at:

# %%
recorded = book.show_recorded_run(chapter.results_root, dataset, networks)

# %% [markdown]
# A recorded curve is the evidence that chapter 7's verdict reads; its label says on what
# hardware, when, and at which profile it was measured.
