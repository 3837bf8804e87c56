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
# {cite}`teerapittayanon2016branchynet`, and the abstract's "comparable accuracy to its full
# network" needs a reference at each depth: a network trained for that depth alone. The
# ablations switch off one part of the cooperative system at a time. Every method has the same
# backbone, recipe and data; exit methods carry heads of their own, so they are compared at
# measured cost as well as at nominal depth.
#
# **Needs:** smoke: a CPU, under a minute. Preview: a CPU and about as many preview runs as
# methods listed below. Full: a GPU.

# %%
import pandas as pd
from IPython.display import Markdown, display

from coop_utils import book, plots, verdict
from coop_utils.training import ExitSystem, IndependentSystem

# %% tags=["parameters"]
profile = "smoke"
data_root = None
device = "cpu"
seed = 0
run_root = "runs"
results_root = "results"
dataset = "cifar100"
ablations = ["no-sfsl", "no-leader", "no-mutual"]

# %%
chapter = book.start_chapter(profile, device, seed, data_root, run_root, results_root)

# %% [markdown]
# ## The baselines
#
# **Independent**: one plain network per depth plan $s \in \{0.2, 0.5, 1\}$, each trained with
# cross-entropy at its own depth, $\mathcal{L}_s = \mathrm{CE}(z^s, y)$.

# %%
book.show_source(IndependentSystem.forward)

# %% [markdown]
# **BYOT** puts an exit $e$ after each stage but the last. Each exit learns from the labels,
# from the deepest exit's softened output ($T = 3$, weight $0.1$), and from its pooled
# features $f$ (an $L_2$ hint, weight $10^{-6}$):
#
# $$\mathcal{L} = \sum_{e} \mathrm{CE}(z_e, y)
# + \sum_{e < E} \Bigl[0.1\,\mathrm{KD}_{T=3}(z_E \to z_e)
# + 10^{-6}\,\lVert f_e - \operatorname{sg}(f_E) \rVert^2\Bigr].$$
#
# **BranchyNet** puts an exit at the depth of every scaling factor and sums the exits'
# cross-entropies, $\mathcal{L} = \sum_e \mathrm{CE}(z_e, y)$.

# %%
book.show_source(ExitSystem.forward)

# %% [markdown]
# ## The runs
#
# The cooperative run and its `no-sfsl` ablation are those of chapters 3 to 5, reused. Each
# method is shown through one network: the deployed Teammate (chosen on validation data) for
# the cooperative variants, the only network for the others.

# %%
configs = {
    "cooperative": chapter.config(dataset),
    "independent": chapter.config(dataset, method="independent"),
    "BYOT": chapter.config(dataset, method="byot"),
    "BranchyNet": chapter.config(dataset, method="branchynet"),
}
configs |= {f"cooperative, {name}": chapter.ablation(dataset, name) for name in ablations}
runs = {label: chapter.train(config) for label, config in configs.items()}
finished = {label: run for label, run in runs.items() if run is not None}
pd.DataFrame(
    [
        {"method": label, "reused": run.reused, "training (s)": round(run.wall_time_s, 1)}
        for label, run in finished.items()
    ]
).set_index("method")

# %% [markdown]
# ## Accuracy against depth, FLOPs and latency

# %%
if finished:
    frame = pd.concat(book.method_frame(run.metrics, label) for label, run in finished.items())
    comparison_plot = plots.method_comparison_figure(
        frame, f"Every method at every depth it offers ({dataset}, {profile} profile)"
    )

# %% [markdown]
# Read across the three panels: a method ahead at equal depth may fall behind at equal FLOPs or
# latency, because exits add heads and the independent networks are separate models.

# %%
if finished:
    display(plots.comparison_table(frame))

# %% [markdown]
# ## Recorded results
#
# The same comparison from the best recorded real runs on this dataset, full before preview.
# Each method is shown through seed 0; the seeds of the cooperative run appear below, where
# their spread matters.

# %%
recorded_profile, recorded = book.best_recorded_profile(chapter.results_root, dataset)
baseline_names = ("cooperative", "independent", "byot", "branchynet")
if recorded_profile is None:
    display(Markdown(book.no_recorded_note(dataset, "any method")))
else:
    display(Markdown(book.recorded_label(recorded_profile, recorded)))
    recorded_frame = pd.concat(
        book.method_frame(recorded[name]["metrics"], name)
        for name in baseline_names
        if name in recorded
    )
    recorded_plot = plots.method_comparison_figure(
        recorded_frame, f"Recorded {recorded_profile} runs ({dataset})"
    )
    display(plots.comparison_table(recorded_frame))

# %% [markdown]
# ## What each part of the method is worth
#
# Each ablation removes one part (or, for batch-norm recalibration, adds one) and is compared
# on the mean accuracy of the Teammates with the full method's run of the same seed: same
# initialisation, same data order, same drawn scaling factors. With two or more seeds of the
# full method, the band shows how far two runs that differ only in their seed land apart: a
# gap smaller than the band has not been shown to matter.

# %%
if recorded_profile is not None:
    ablation_plot = plots.ablation_figure(
        plots.ablation_frame(recorded), f"Ablations, recorded {recorded_profile} runs ({dataset})"
    )

# %% [markdown]
# The verdicts below are computed from the same files by the rules of chapter 7 (which also
# judges the remaining claims): the difference over the scaling factors named in each rule, and
# twice its standard deviation, estimated from the spread between the full method's seeds and
# never below the binomial noise of the test set.

# %%
if recorded_profile is not None:
    parts = verdict.component_rows(verdict.claim_table({dataset: recorded}))
    display(parts.set_index("claim")[["measured", "verdict", "rule", "evidence"]])
