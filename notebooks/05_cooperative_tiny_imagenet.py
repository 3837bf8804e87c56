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
# # Cooperative training on Tiny ImageNet
#
# The whole system at once, as the paper trains it {cite}`fang2023cooperative`: two gated
# Teammates, their sub-networks at randomly drawn depths, and a Leader, trained together by
# one optimizer on Tiny ImageNet {cite}`le2015tiny`: 200 classes of 64x64 images, twice the
# side of CIFAR's, with the same network (its stem keeps the resolution, so every feature map
# is twice as large). The chapter trains (or reuses) the run of the chosen profile, shows its
# training curves and its accuracy at every depth, then the best recorded real run.
#
# **Needs:** smoke: a CPU, seconds, generated data. Preview: Tiny ImageNet in
# `COOP_DATA_ROOT` (downloaded if missing) and a CPU. Full: a GPU (see *Reproducing*).

# %%
from IPython.display import display

from coop_utils import book, plots

# %% tags=["parameters"]
profile = "smoke"
data_root = None
device = "cpu"
seed = 0
run_root = "runs"
results_root = "results"

# %%
chapter = book.start_chapter(profile, device, seed, data_root, run_root, results_root)
dataset = "tiny-imagenet"
networks = ["teammate0", "teammate1", "teammate_mean", "leader"]

# %% [markdown]
# ## The objective
#
# The objective is chapter 4's, unchanged: the Leader's cross-entropy, each Teammate's
# cross-entropy with distillation from the other Teammate and from the Leader, and each drawn
# sub-network's cross-entropy with distillation from its own Teammate, weighted by
# $w(s) = 1/s$ (chapter 3). Only the data differ.

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
