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
# # Baselines and ablations
#
# The paper compares cooperative learning with BYOT {cite}`zhang2019byot` and BranchyNet
# {cite}`teerapittayanon2016branchynet`. We read the abstract's "comparable accuracy to its
# full network" as: at each depth, comparable to a full-sized network of that depth, a network
# trained for that depth alone (our reading, {doc}`../open-decisions`); a Teammate's drop from
# its own full depth is in the curves of chapter 5. The ablations switch off one part of the
# cooperative system at a time. Every method has the same backbone, recipe and data; exit
# methods carry heads of their own, so they are compared at measured cost as well as at
# nominal depth.
#
# **Needs:** nothing to read it: it opens on the recorded runs. *Run it yourself* trains one
# run per method listed there (a preview run each at preview).

# %%
from IPython.display import Markdown, display

from coop_utils import chapters, listings, result_plots
from coop_utils.losses import byot_loss
from coop_utils.systems import ExitSystem, IndependentSystem

# %% tags=["parameters"]
profile = "smoke"
data_root = None
device = "cpu"
seed = 0
run_root = "runs"
results_root = "results"
train = True
dataset = "cifar100"
ablations = ["no-sfsl", "no-leader", "no-mutual"]

# %% tags=["remove-input"]
chapter = chapters.start_chapter(
    profile, device, seed, data_root, run_root, results_root, train
)

# %% [markdown]
# ## Accuracy against depth, FLOPs and latency
#
# Every method of the recorded runs on this dataset (the full profile's where recorded, else the
# preview's), each shown through one network per seed: the deployed Teammate (chosen on validation
# data) for the cooperative method, the only network for the others. Points are means over the
# seeds, bars their 95 % t-intervals (a seed's factors that share a plan count once).

# %%
recorded_profile, recorded = chapter.results.campaign(dataset)
display(Markdown(chapters.recorded_label(recorded, dataset)))
cooperative = "cooperative" in set(recorded["run"])
if cooperative:
    chapters.show_comparison(
        recorded, f"recorded {recorded_profile} runs, {dataset}"
    )

# %% [markdown]
# Read across the three panels: a method ahead at equal depth may fall behind at equal FLOPs or
# latency, because exits add heads and the independent networks are separate models. The
# latencies are timed at the end of each run on the machine that trained it, at batch 1, so
# they carry that machine's noise (two depths of one plan can differ by a millisecond); the
# depth-cost benchmark times every depth side by side on a quiet machine
# ({doc}`08_engineering_checks`).
#
# The second figure and table compare each exit below full depth with the cooperative
# network's deployed Teammate within the exit's measured FLOPs (means over the seeds): its
# deepest depth that costs no more, the depth it would really run under that budget, never an
# interpolation between two depths. An exit cheaper than its shallowest depth is listed, not
# compared. A cross above its dot is an exit the cooperative network beats at no greater cost.
#
# Every method trains for the same epochs, so the comparison is at equal inference cost, not at
# equal training compute: the summary page's *Reproducibility report*
# ({doc}`00_does_it_replicate`) sets the training time of each method beside the cooperative
# run's, with the control that matches it.

# %% [markdown]
# ## After the converged budget
#
# The same comparison after the converged campaign's epochs (24, the budget chapter 5 chooses
# on validation data), where every network is trained about four times as long. Its seeds are
# recorded one after another, so the figure fills in as they land: with one seed a point has no
# interval, with two its 95 % interval spans 12.7 standard errors each side, and the summary
# page judges no claim before three.

# %%
converged_profile, converged = chapter.results.campaign(
    dataset, root="converged"
)
display(Markdown(chapters.recorded_label(converged, dataset)))
if "cooperative" in set(converged["run"]):
    chapters.show_comparison(
        converged, f"converged campaign, {converged_profile} runs, {dataset}"
    )

# %% [markdown]
# ## What each part of the method is worth
#
# Each ablation removes one part and is compared on the accuracy of the Teammates it shares with
# the full method; `shared-bn` removes the per-depth batch-norm statistics, and
# `sfsl-normalised` is a control that keeps SFSL's $1/s$ shape but rescales the weights to mean
# 1 over the drawn factors, which separates "shallow sub-networks weigh more" from "the
# sub-network terms weigh more in total". A variant's run of a seed is paired with the full
# method's run of that seed: the Teammates are built first and in the same order, so they share
# their initialisation, their data order and the drawn scaling factors. The band shows how far
# two runs of the full method that differ only in their seed land apart: a gap smaller than the
# band has not been shown to matter. Each panel's title counts the ablation's seeds. The
# campaign runs `first-gating`, `sfsl-normalised` and `gate-all` once, as exploration: their
# claims are marked exploratory, one seed shows a direction, not a difference.

# %%
if cooperative:
    ablation_plots = result_plots.ablation_figures(
        result_plots.ablation_frame(recorded),
        f"Ablations, recorded {recorded_profile} runs ({dataset})",
    )

# %% [markdown]
# Whether each part helps is judged in the verdict table of the summary page,
# {doc}`00_does_it_replicate`, one row per ablation (click a claim there for its rule): the
# difference of the Teammates' mean accuracy and its 95 % t-interval, paired by seed between
# the cooperative variants, and "inconclusive (n < 3)" with fewer than 3 runs in an arm,
# whatever the mean.
#
# The Leader learns from the labels alone, by cross-entropy at full depth, the loss of the
# independent full-depth network. What it can pass on to the Teammates is what such a network
# knows; the recorded runs, seed by seed:

# %% tags=["remove-input"]
chapters.show_leader_and_its_twin(recorded)

# %% [markdown]
# ## The methods
#
# **Independent**: one plain network per distinct depth plan of the grid
# $s \in \{0.2, \dots, 1\}$ (3 on ResNet-20, 5 on ResNet-32, 8 on ResNet-56), each trained
# with cross-entropy at its own depth, $\mathcal{L}_s = \mathrm{CE}(z^s, y)$, and evaluated at
# every factor whose plan is its plan: every depth the cooperative network offers has a
# reference trained for it alone.

# %%
listings.show_source(IndependentSystem.__init__)

# %% [markdown]
# **BYOT** {cite}`zhang2019byot` is trained as its public re-implementation
# (`luanyunteng/pytorch-be-your-own-teacher`, `train.py`) trains it: one exit per stage, the
# shallow ones with a bottleneck head (1x1 convolution to a quarter of the final width, a
# $k \times k$ convolution of stride $k$, 1x1 to the final width) that reaches the final stage's
# resolution and width before pooling, and the loss
#
# $$\begin{aligned}
# \mathcal{L} ={}& (1 - \alpha) \sum_{e} \mathrm{CE}(z_e, y) \\
# &+ \alpha\, T^2 \sum_{e < E} \mathrm{CE}\bigl(\operatorname{softmax}(z_e / T),\,
# \operatorname{softmax}(\operatorname{sg}(z_E) / T)\bigr) \\
# &+ \beta \sum_{e < E} \sum_{\text{batch, features}}
# \bigl(f_e - \operatorname{sg}(f_E)\bigr)^2 [f_e > 0 \lor f_E > 0],
# \end{aligned}$$
#
# with $\alpha = 0.1$, $T = 3$, $\beta = 10^{-6}$; $f_e$ are the pooled features an exit
# classifies. *Open decisions* lists where this replication still differs from the reference.

# %%
listings.show_source(byot_loss)

# %% [markdown]
# **BranchyNet** {cite}`teerapittayanon2016branchynet` puts an exit after the first
# `round(s * blocks)` blocks for every scaling factor `s` of the grid (factors that round to the
# same block share an exit: 8 exits on ResNet-20; these depths count blocks over the whole
# network, not per stage as a depth plan does, so an exit can run fewer blocks than the plan of
# its factor) and minimises the weighted sum of the exits' cross-entropies,
# $\mathcal{L} = \sum_e w_e\,\mathrm{CE}(z_e, y)$, with $w_e = 1$ for every exit: the paper
# writes the loss with a weight per exit, and its authors' public code (`kunglab/branchynet`,
# where every branch is built with weight 1) sets them all to 1. The key `branchynet_weights`
# sets others, shallow to deep.

# %%
listings.show_source(ExitSystem.forward)

# %% [markdown]
# ## Run it yourself
#
# One run per method and ablation at the profile of this build; the cooperative run and its
# `no-sfsl` ablation are those of chapters 3 to 5, reused.

# %% tags=["hide-input"]
configs = {
    "cooperative": chapter.config(dataset),
    "independent": chapter.config(dataset, method="independent"),
    "BYOT": chapter.config(dataset, method="byot"),
    "BranchyNet": chapter.config(dataset, method="branchynet"),
}
configs |= {
    f"cooperative, {name}": chapter.ablation(dataset, name)
    for name in ablations
}
finished = chapter.train(configs)
if "cooperative" in finished:
    chapters.show_comparison(
        chapters.as_frame(finished), f"this build, {dataset}, {profile}"
    )
