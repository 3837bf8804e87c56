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
# The cooperative system of chapter 4 (its objective and its training step, unchanged; only the
# data differ), trained on Tiny ImageNet {cite}`le2015tiny`, the dataset of every recorded run
# {cite}`fang2023cooperative`. The paper names the dataset, whose official split has 200
# classes of 64x64 images, 500 training images each. Its images are twice the side of CIFAR's, and
# the network is the same (its stem keeps the resolution, so at 64x64 every feature map has twice
# the side, four times the area). The chapter opens on the accuracy of the recorded runs at every
# depth, after the setting they were trained in, which can be smaller than the paper's; *Run it
# yourself* trains (or reuses) the run of a profile.
#
# **Needs:** nothing to read it. To train: a CPU and Tiny ImageNet in `COOP_DATA_ROOT`
# (downloaded if missing) at preview, a GPU at full.

# %%
from IPython.display import Markdown, display

from coop_utils import chapters, training_cost

# %% tags=["parameters"]
profile = "smoke"
data_root = None
device = "cpu"
seed = 0
run_root = "runs"
results_root = "results"
train = True

# %% tags=["remove-input"]
chapter = chapters.start_chapter(
    profile, device, seed, data_root, run_root, results_root, train
)
dataset = "tiny-imagenet"
networks = ["teammate0", "teammate1", "teammate_mean", "leader"]

# %% [markdown]
# ## Accuracy at every depth
#
# The recorded cooperative runs on this dataset (the full profile's where recorded, else the
# preview's): each Teammate, the Teammates' mean and the Leader; with several seeds, the line is
# the mean over the seeds and the band its 95 % t-interval, as in the verdicts. Below them, where
# a run's per-epoch log is committed, its training curves: the loss, and the validation top-1 of
# the first Teammate at its deepest and shallowest depth after every epoch. The loss sums every
# term of the objective, so its level is not comparable with a single network's cross-entropy,
# and it jumps between epochs: each epoch draws new scaling factors, and SFSL weighs a
# sub-network's terms by $1/s$, so an epoch that draws $s = 0.2$ counts them five times.
# Validation accuracy is the curve to read.

# %% tags=["remove-input"]
chapters.show(chapters.recorded_setting(chapter.results, dataset))

# %%
chapters.show_recorded_depths(chapter.results, dataset, networks)

# %% [markdown]
# Each Teammate is one network evaluated at nine depths; the Leader exists at full depth
# only. The claim under test is that the curves stay flat as $s$ shrinks.

# %% tags=["remove-input"]
display(Markdown(chapters.deployed_note(chapter.results, dataset)))

# %% [markdown]
# ## How long to train: the learning budget
#
# The paper trains for 200 epochs; a CPU cannot. How many epochs a replication at this scale
# needs was chosen on validation data only, by a budget pilot (`params/preview.yaml`,
# `budget-pilot`): the plain full-depth network, seed 0, trained for 6, 12, 24 and 48 epochs of
# the same schedule (linear decay to zero), and the rule below. The cooperative runs that exist
# at a budget stand beside it: seed 0 of the short campaign (6 epochs), seed 0 of the converged
# campaign once recorded, and any cooperative run of the pilot.

# %% tags=["remove-input"]
training_cost.show_learning_budget(chapter.results, dataset)

# %% [markdown]
# ## The converged campaign
#
# The same system trained for E_c epochs, the budget chosen above, in the converged campaign
# (`python -m coop_utils results --profile preview --campaign converged`). Its seeds are
# recorded one at a time; until three are, its claims on the summary page read "not yet
# decided", and the curves below are those of the seeds recorded so far.

# %% tags=["remove-input"]
chapters.show_recorded_depths(
    chapter.results, dataset, networks, regime="converged"
)

# %% [markdown]
# ## Run it yourself
#
# The configuration comes from `params/<profile>.yaml`. A finished run with the same
# configuration is reused from the run store, an interrupted one resumes.

# %% tags=["hide-input"]
config = chapter.config(dataset)
display(chapters.config_table(config))
run = chapter.train({"cooperative": config}).get("cooperative")

# %% tags=["remove-input"]
if run is not None:
    chapters.show_run(run, dataset, profile, networks)
