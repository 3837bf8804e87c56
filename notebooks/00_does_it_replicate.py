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
# # Does it replicate?

# %% tags=["remove-input"]
from IPython.utils.capture import capture_output

from coop_utils import chapters, replication, training_cost

# %% tags=["parameters"]
profile = "smoke"
data_root = None
device = "cpu"
seed = 0
run_root = "runs"
results_root = "results"
train = True
comparable_margin_pts = 2.0

# %% tags=["remove-input"]
with capture_output(stdout=False, stderr=False) as opening:  # the banner: shown below
    chapter = chapters.start_chapter(
        profile, device, seed, data_root, run_root, results_root, train
    )
if profile == "smoke":  # a smoke build says so first
    opening.show()
summary = replication.summarise(chapter.results, margin=comparable_margin_pts)
summary.show_answer()

# %% tags=["remove-cell", "landing"]
# The landing page's opening: the runner writes what this cell shows into book/generated/,
# which book/index.md includes (the cell itself is not shown here).
summary.show_landing()

# %% [markdown]
# Each claim of *Cooperative Learning for Cost-Adaptive Inference* {cite}`fang2023cooperative`
# is judged in every regime whose runs it needs: after the converged budget (the epochs chosen
# on validation data, chapter 5), after the short schedule of the first campaign, and at equal
# training compute, against a control of the other method trained until its training FLOPs
# match the cooperative run's. Each row compares two arms of runs: the difference of their
# means, with its 95 % t-interval from the spread between seeds (never narrower than the
# binomial noise of the test set). A claim holds when the whole interval lies on the claimed
# side, does not hold when it lies on the other, and stays inconclusive otherwise; it is not
# yet decided while its campaign has not recorded the seeds it plans. Click a claim for its
# rule and the runs behind it.

# %% tags=["remove-input"]
summary.show_read_together()

# %% tags=["remove-input"]
if profile != "smoke":
    opening.show()
regimes = ("converged", "campaign", "compute-matched")
chapters.show(chapters.progress_note(chapter.results, regimes))

# %% [markdown]
# :::{dropdown} How the verdicts are computed
# - A claim is a difference between two arms of runs, reported with its **95 % t-interval**,
#   whose degrees of freedom come from the seeds.
# - **Regimes.** Each claim is judged in each regime that records (or plans) its arms: the
#   converged campaign's epochs, the short campaign's, and **at equal training compute**,
#   where the other method's control trains until its recorded training FLOPs match the
#   cooperative run's of the same seed. The regime column gives both arms' epochs and the
#   control's recorded training FLOPs over the cooperative run's: "matched" within 5 %, else
#   the ratio is stated.
# - **Only planned runs.** A summary is judged only if its configuration is the one its
#   campaign plans (`params/preview.yaml`, its config hash), so a stray file in a results
#   folder cannot enter a verdict.
# - **Fewer than 3 runs in an arm: "inconclusive (n < 3)"**, whatever the mean. With 2 seeds
#   (1 degree of freedom) the 95 % multiplier is 12.7 standard errors, not 2. While the
#   campaign has seeds still to record, the claim is **not yet decided**.
# - Runs are **paired by seed** only where they share their initialisation and data order (the
#   Teammates across the cooperative variants); every run stands for today's code by its
#   behaviour digest, which the test suite recomputes.
#   Across methods the arms are unpaired (Welch's interval).
# - No run counts as less noisy than the **binomial error of its test set**. An interval marked
#   **(floor)** is that noise, wider than the spread the seeds showed: a conservative width, as
#   both arms are scored on the same test images.
# - Exit baselines are compared **at measured FLOPs**: each exit against the deployed
#   Teammate's deepest depth that costs no more, never an interpolation between depths it
#   cannot run.
# - "Depth cuts the cost" reads the depth-cost benchmark measured on a quiet machine: it checks
#   the implementation and replicates nothing.
# - "Comparable" means within a margin of 2 points (see {doc}`../open-decisions`).
# - Each claim is judged **at 95 % on its own**. Many claims judged at once will let one pass
#   by chance more often than 1 in 20, so the note under the table also reads them as one
#   family (Bonferroni, conservative) and says which verdicts survive that stricter reading.
# :::

# %% [markdown]
# ## What training compute buys
#
# Each method's test accuracy against the compute its training took: the recorded training
# FLOPs of the whole run, every network it trains (the independent networks' run trains one
# network per depth, the cooperative run its Leader and Teammates), counted as the forward
# FLOPs per image of the passes it ran, ×3 for the backward pass, × the images seen. At full
# depth and at the shallowest plan, for every budget recorded: the short campaign, its control
# at equal training compute, the converged campaign and its controls at equal training
# compute. The cooperative network is its deployed Teammate; the budget pilot's plain
# full-depth network (one seed, hollow) shows how far one network climbs with epochs alone:
# the budget rule reads its validation accuracy (chapter 5), but its points here are test
# accuracy, like every other. A point above and to the left of another is better on both
# counts.

# %% tags=["remove-input"]
summary.show_training_compute()

# %% [markdown]
# Points on one vertical line trained with the same compute. In every regime the cooperative
# network sits to the right of the methods it is compared with at equal epochs: whatever lead it
# has there, it bought with more training compute. The controls at equal training compute stand
# on its vertical line, and the verdicts "at equal compute" judge those pairs. The grey pilot
# line marks what one full-depth network gains from epochs alone.

# %% [markdown]
# ## Accuracy against cost, every method
#
# What each method buys in accuracy for its forward cost at inference, in each recorded
# regime. The cooperative network is one trained network at every depth (its deployed
# Teammate is drawn); the independent networks are one network per depth; BYOT and BranchyNet
# exit early from one network with heads of their own. Dashed: the independent networks
# trained for about the training compute of one cooperative run (their epochs in the legend).

# %% tags=["remove-input"]
summary.show_accuracy_against_cost()

# %% [markdown]
# A point above and to the left of another is better on both counts. Each bar is one method's
# interval on its own; whether two methods differ is read from the verdicts above, which test
# the difference itself (paired by seed where the runs allow) and floor every run's spread at
# its test set's binomial error, so overlapping bars can still differ and separate bars need
# not.

# %% [markdown]
# ## Scope of reproducibility
#
# We test the paper's claims that one cooperatively trained network offers every depth from
# 20 % to 100 % of its residual blocks with accuracy comparable to a network trained for that
# depth alone; that it degrades more smoothly than BYOT {cite}`zhang2019byot` and BranchyNet
# {cite}`teerapittayanon2016branchynet` and is more accurate at equal cost; that each part of
# the method (the Leader, mutual distillation, the Scaling Factor Sensitive Loss, a second
# Teammate, learned gating) helps; and that a shallower depth costs less at inference. We do so
# at a CPU-sized scale, far from the paper's:

# %% tags=["remove-input"]
summary.show_scope()

# %% [markdown]
# ## Methodology
#
# Only the paper's abstract was accessible to us, so the method is our reading of it, written
# from scratch in PyTorch (`coop_utils/`; chapters 1 to 5 explain each part beside its code),
# and so are the baselines, written after their authors' code ({doc}`../open-decisions`). Every
# run is one configuration of `params/preview.yaml`, trained on CPUs, and recorded with its
# configuration, its code and behaviour digests, its training FLOPs and its wall time. The
# campaigns:

# %% tags=["remove-input"]
summary.show_campaigns()

# %% [markdown]
# :::{dropdown} Reproduce this page
# - `make book` rebuilds the whole book, this page included, from the summaries in
#   `results/`: it trains nothing and takes minutes.
# - In Python, `verdict.replication_verdicts(results.load("results"))` (from `coop_utils`)
#   returns the verdict table above, one row per claim and regime, with each row's rule and
#   evidence.
# - `python -m coop_utils results --profile preview --campaign NAME --list` lists a campaign's
#   runs and the state of each; without `--list` it trains the runs not yet recorded, resuming
#   any interrupted one (`make results CAMPAIGN=NAME`; set `COOP_DATA_ROOT` to the folder
#   that holds `tiny-imagenet-200`). The campaigns, all in `params/preview.yaml`: `campaign`
#   (the short regime), `compute-matched` (its control at equal training compute),
#   `budget-pilot` (the learning budget) and `converged`.
# - Each summary records its configuration, code and behaviour digests, training FLOPs and wall
#   time; *Run it yourself* in chapters 2 to 6 gives the command of each single run.
# :::

# %% [markdown]
# ## Results

# %% tags=["remove-input"]
summary.show_results()

# %% tags=["remove-input"]
summary.show_reasons()

# %% tags=["remove-input"]
summary.show_compute_notes()

# %% tags=["remove-input"]
summary.show_shared_bn()

# %% [markdown]
# **How far seeds land apart.** Every run the verdicts judge, its seeds, and the test
# accuracy at full depth of the mean of its Teammates (the only network of the other methods):
# the mean over seeds and the range between them. A difference between two methods smaller
# than their seed range is one the verdicts above cannot separate.

# %% tags=["remove-input"]
summary.show_seed_ranges()

# %% [markdown]
# ## What was easy
#
# Once the method is written down, its parts are short: a depth plan per scaling factor, a
# learned logit per gateable block with a Gumbel top-k mask, distillation terms, and a
# per-depth weight. Skipping a block really saves its cost (chapter 1 counts the blocks that
# run; the depth-cost benchmark times them). The baselines' authors published their code,
# which settled most of their recipes.
#
# ## What was difficult
#
# Only the paper's abstract was accessible to us: its equations, hyper-parameters and tables
# were not, so the loss, the sampling of depths, the gating estimator, batch norm across depths
# and the baselines' recipes are our reading, each a configuration key
# ({doc}`../open-decisions`). The paper's scale (ResNet-152, 200 epochs) is out of reach of a
# CPU: every claim here is judged on a small backbone and a short schedule, with three seeds
# per arm and the statistics above, and small effects stay undecided at that sample size. A
# short schedule also favours whatever trains more: the controls at equal training compute
# exist for that reason, and the converged regime tests whether the verdicts survive longer
# training.
#
# What we could not decide is listed under *Results*: the claims still waiting for runs, the
# claims marked inconclusive with how many seeds per arm an effect of the measured size would
# need (a lower bound), or, where the difference is too close to the threshold for any number
# of seeds, less noisy runs. The paper's claim that the method is insensitive to the
# feature-map size needs 64 px runs, which this CPU-sized campaign does not make, and its
# claim that the method does not depend on the architecture needs runs on other backbones.
#
# ## Communication with the original authors
#
# None: we did not contact the authors. Every reading of the method that their paper's full
# text would settle is listed, with its alternatives, in {doc}`../open-decisions`.

# %% [markdown]
# ## Computational requirements
#
# Every recorded run: where it is recorded, its epochs and seeds, its hours of training (wall
# time on a shared machine, so load as much as work; the `shared-bn` ablation re-evaluates the
# cooperative run's networks and trains nothing), and its training compute per seed.

# %% tags=["remove-input"]
training_cost.show_requirements(chapter.results)

