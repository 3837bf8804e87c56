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
# # Cooperative training: the objective and one step
#
# The whole system at once, as the paper trains it {cite}`fang2023cooperative`: two gated
# Teammates, their sub-networks at randomly drawn depths, and a Leader, trained together by
# one optimizer. This chapter writes the objective down, shows the training step that
# minimises it (the code every recorded run executes), and the test that ties the two
# together. The paper trains it on CIFAR-100 {cite}`krizhevsky2009learning` and Tiny
# ImageNet; chapter 5 shows the recorded runs.
#
# **Needs:** nothing to read it. To train: a CPU and CIFAR-100 in `COOP_DATA_ROOT`
# (downloaded if missing) at preview, a GPU at full.

# %%
from IPython.display import Markdown, display

from coop_utils import chapters, listings
from coop_utils.losses import cooperative_objective
from coop_utils.systems import CooperativeSystem

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
dataset = "cifar100"
networks = ["teammate0", "teammate1", "teammate_mean", "leader"]

# %% tags=["remove-input"]
recorded_profile, recorded = chapter.results.campaign(
    dataset, ["cooperative"]
)
if recorded.empty:
    display(
        Markdown(
            "**No CIFAR-100 run is recorded.** The machines that record the "
            "campaign hold no copy of CIFAR-100, so the campaign "
            f"(`params/{chapters.CAMPAIGN_PROFILE}.yaml`) trains on Tiny ImageNet "
            "only, and the paper's CIFAR-100 claims are neither confirmed nor "
            "contradicted here: this chapter shows the method, not a CIFAR-100 "
            "result. *Run it yourself*, at its end, gives the command that trains "
            "the run where CIFAR-100 is available (the preview profile keeps the "
            "first 50 of its 100 classes, as it does for Tiny ImageNet)."
        )
    )
else:
    chapters.show_recorded_depths(chapter.results, dataset, networks)

# %% [markdown]
# ## The objective
#
# With the Leader's logits $z_L$, the Teammates' $z_1, z_2$, and the sub-network of Teammate
# $i$ at each drawn scaling factor $s \in S_i$ with logits $z_i^s$, one batch's loss is
#
# $$\begin{aligned}
# \mathcal{L} ={}& \mathrm{CE}(z_L, y) \\
# &+ \sum_{i} \Bigl[\mathrm{CE}(z_i, y) + \mathrm{KD}(z_j \to z_i)
#   + \mathrm{KD}(z_L \to z_i)\Bigr] \\
# &+ \sum_{i} \sum_{s \in S_i} w(s)\bigl(\mathrm{CE}(z_i^s, y)
#   + \mathrm{KD}(z_i \to z_i^s)\bigr),
# \end{aligned}$$
#
# $j$ being the other Teammate and $w(s) = 1/s$ (chapter 3); every teacher in a KD term is
# detached. Each term's switch (`use_leader`, `mutual`, `sfsl`) removes exactly that term:

# %%
listings.show_source(cooperative_objective)

# %% [markdown]
# ## One training step
#
# Training does not build $\mathcal{L}$ and call `backward()` once: that would hold the
# graphs of all seven forward passes (the Leader, two Teammates, four sub-networks) in
# memory at once. Because every teacher is detached, the gradient of $\mathcal{L}$ is the
# sum of the gradients of its three lines, and each line's graph can be freed as soon as it
# has been back-propagated: the Leader's term first, then the Teammates' terms, then each
# sub-network's term, one pass at a time. This is the step every recorded run takes:

# %%
listings.show_source(CooperativeSystem.backward_step)

# %% [markdown]
# ## The test that ties the step to the objective
#
# That the step computes the gradient of the objective above is tested, not assumed: the
# test suite (`make test`) computes the gradient of every parameter both ways, with and
# without the Leader, and requires them to agree:

# %%
listings.show_test(
    "test_pass_by_pass_backward_gives_the_gradients_of_the_whole_loss"
)

# %% [markdown]
# The test builds a small cooperative system (the smoke profile's ResNet-20), draws the scaling
# factors and the Gumbel noise of one step twice from the same seeds, and computes the
# gradients once by the objective's single `backward()` (`system(...)`, which returns
# `cooperative_objective`) and once by `backward_step`: the losses must be equal and every
# parameter's gradient equal to within floating-point rounding.

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
