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
# one optimizer on CIFAR-100 {cite}`krizhevsky2009learning`. The chapter opens on the recorded
# runs' accuracy at every depth; *Run it yourself* trains (or reuses) the run of a profile.
# The preview profile keeps the first 50 of CIFAR-100's 100 classes (`num_classes`, in the
# configuration below), as it does for Tiny ImageNet; the full profile keeps them all.
#
# **Needs:** nothing to read it. To train: a CPU and CIFAR-100 in `COOP_DATA_ROOT`
# (downloaded if missing) at preview, a GPU at full.

# %%
from IPython.display import display

from coop_utils import chapters
from coop_utils.losses import cooperative_objective

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
dataset = "cifar100"
networks = ["teammate0", "teammate1", "teammate_mean", "leader"]

# %% [markdown]
# ## Accuracy at every depth
#
# The recorded cooperative runs on this dataset (the full profile's where recorded, else the
# preview's), each Teammate, their mean and the Leader; with several seeds, the line is their mean
# and the band its 95 % t-interval over the seeds, as in the verdicts. Below them, each seed's
# training curves: the loss, and the validation top-1 of the first Teammate at its deepest and
# shallowest depth after every epoch. The loss sums every term of the objective, so its level is not
# comparable with a single network's cross-entropy, and it jumps between epochs: each epoch draws
# new scaling factors, and SFSL weighs a sub-network's terms by $1/s$, so an epoch that draws $s =
# 0.2$ counts them five times. Validation accuracy is the curve to read.

# %%
chapters.show_recorded_depths(chapter.results, dataset, networks)

# %% [markdown]
# Where runs are recorded, each Teammate's curve is one network evaluated at nine depths, and
# the Leader exists at full depth only. The claim under test is that the curves stay flat as
# $s$ shrinks.

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
chapters.show_source(cooperative_objective)

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
