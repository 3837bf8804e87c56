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
# is twice as large). The chapter opens on the recorded runs' accuracy at every depth; *Run
# it yourself* trains (or reuses) the run of a profile.
#
# **Needs:** nothing to read it. To train: a CPU and Tiny ImageNet in `COOP_DATA_ROOT`
# (downloaded if missing) at preview, a GPU at full.

# %%
from IPython.display import display

from coop_utils import chapters

# %% tags=["parameters"]
profile = "smoke"
data_root = None
device = "cpu"
seed = 0
run_root = "runs"
results_root = "results"
train = True

# %%
chapter = chapters.start_chapter(profile, device, seed, data_root, run_root, results_root, train)
dataset = "tiny-imagenet"
networks = ["teammate0", "teammate1", "teammate_mean", "leader"]

# %% [markdown]
# ## Accuracy at every depth
#
# The recorded cooperative runs on this dataset (full before preview), each Teammate, their
# mean and the Leader; with several seeds, the line is their mean and the band seaborn's 95 %
# interval over them. Below them, each seed's training curves: the loss (which jumps between
# epochs, as chapter 4 explains) and the validation top-1 of the first Teammate at its deepest
# and shallowest depth after every epoch, the curve to read.

# %%
chapters.show_recorded_depths(chapter.results_root, dataset, networks)

# %% [markdown]
# Each Teammate is one network evaluated at nine depths; the Leader exists at full depth
# only. The claim under test is that the curves stay flat as $s$ shrinks.

# %% [markdown]
# ## The objective
#
# The objective is chapter 4's, unchanged: the Leader's cross-entropy, each Teammate's
# cross-entropy with distillation from the other Teammate and from the Leader, and each drawn
# sub-network's cross-entropy with distillation from its own Teammate, weighted by
# $w(s) = 1/s$ (chapter 3). Only the data differ.

# %% [markdown]
# ## Run it yourself
#
# The configuration comes from `params/<profile>.yaml`. A finished run with the same
# configuration is reused from the run store, an interrupted one resumes.

# %% tags=["hide-input"]
config = chapter.config(dataset)
display(chapters.config_table(config))
run = chapter.train({"cooperative": config}).get("cooperative")

# %% tags=["hide-input"]
if run is not None:
    chapters.show_run(run, dataset, profile, networks)
