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
import re

import matplotlib.pyplot as plt
from IPython.display import HTML, Markdown, display
from IPython.utils.capture import capture_output

from coop_utils import (
    chapters,
    engineering,
    replication,
    result_plots,
    results,
    training_cost,
    verdict,
)
from coop_utils.config import load_config
from coop_utils.datasets import DATASETS
from coop_utils.models import build_model

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
recorded = chapter.results
verdicts = verdict.replication_verdicts(recorded, margin=comparable_margin_pts)
judged = results.best_runs(recorded.frame)  # every regime's runs, their planned configs only
shown_profile = judged["profile"].iloc[0] if not judged.empty else chapters.CAMPAIGN_PROFILE
plan = results.regime_plan(shown_profile, recorded.frame)
epochs = replication.regime_epochs(plan, judged)
regimes = {name: rows for name, rows in judged.groupby("regime", sort=False)}
regimes = {name: regimes[name] for name in results.REGIMES if name in regimes}  # converged first
REGIME_NAMES = {name: f"{label.lower()}, {epochs.get(name, '?')} epochs"
                for name, label in replication.REGIME_NAMES.items()}  # fmt: skip


def short(claim):
    """A claim without its closing parenthesis."""
    return re.sub(r"\s*\([^()]*\)$", "", claim)


cooperative = plan[plan["run"] == "cooperative"]
config = load_config(shown_profile, dataset=cooperative["dataset"].iloc[0])
if not judged.empty:
    config = results.config_of(judged[judged["run"] == "cooperative"])
paper = load_config("full", dataset=config.dataset)
scope = replication.scope_line(config, list(epochs.values())[::-1], paper)  # shortest first
if verdicts is None:
    tally = (
        "<b>Verdict pending.</b> No cooperative run of the preview or full profile is recorded "
        "in <code>results/</code> yet: <code>make results</code> trains the campaign, and this "
        "page fills itself from the summaries it records."
    )
else:
    tally = replication.tally_line(verdicts, plan, epochs)
display(replication.answer_html(scope, tally))
if verdicts is not None:
    display(replication.verdict_html(verdicts))

# %% tags=["remove-cell", "landing"]
# The landing page's opening: the runner writes what this cell shows into book/generated/,
# which book/index.md includes (the cell itself is not shown here).
landing = [
    "**What was replicated.** The claims of *Cooperative Learning for Cost-Adaptive Inference* "
    "that one cooperatively trained network runs at any depth from 20 % to 100 % of its "
    "residual blocks about as accurately as a network trained for that depth alone, degrades "
    "more smoothly than BYOT and BranchyNet, and owes this to each of its parts.",
    "**At what scale.** A partial replication: "
    + scope.removeprefix("<b>Partial replication:</b> "),
    "**The verdict.** " + replication.tally_line(verdicts, plan, epochs, bold=("*", "*"))
    if verdicts is not None
    else "**The verdict.** Pending: no cooperative run is recorded yet.",
]
display(Markdown(" ".join(landing)))
if regimes:
    name, runs = next(iter(regimes.items()))  # the converged regime once recorded
    figure = result_plots.headline_figure(
        runs.assign(run=runs["run"].str.replace("-flops-matched", "-compute-matched")),
        f"Accuracy against forward cost, {REGIME_NAMES[name]}",
    )
    alt = "Test accuracy of each method against its forward cost in FLOPs"
    display(figure, metadata={"image/png": {"alt": alt}})
    plt.close(figure)
    display(
        Markdown(
            "*The cooperative network is drawn by its deployed Teammate, every other method by "
            "its network of each depth; bars: 95 % t-intervals over seeds.*"
        )
    )

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
family = None
if verdicts is not None:
    if note := replication.disagreement_note(verdicts):
        display(Markdown(note))
    family = verdict.familywise(recorded, comparable_margin_pts, verdicts)

# %% tags=["remove-input"]
if family is not None:
    decided = family.decided.assign(claim=family.decided["claim"].map(short))
    decided["claim"] += ", " + decided["regime"]
    kept = decided[decided["verdict"] == decided["strict"]]
    parts = []
    for verdict_, that, one, many in (
        (verdict.HOLDS, "hold", "holds", "hold"),
        (verdict.FAILS, "do not hold", "does not", "do not"),
    ):
        count = int((decided["verdict"] == verdict_).sum())
        claims = list(kept.loc[kept["verdict"] == verdict_, "claim"])
        if count:
            parts.append(
                f"{len(claims)} of the {count} that {that} still "
                f"{one if len(claims) == 1 else many}"
                + (":" + "".join(f"\n- {claim}" for claim in claims) if claims else ".")
            )
    lost = decided.loc[decided["verdict"] != decided["strict"], "claim"]
    display(
        Markdown(
            "**Read together.** Each verdict above judges its claim at 95 % on its own. Read as "
            f"one family (the {family.claims} claims the runs of every regime decide, recorded "
            f"or not, each interval at {100 * family.level:.2f} %: Bonferroni, up to "
            f"{family.widening:.1f}× as wide with {verdict.MIN_RUNS} seeds): "
            + "\n\n".join(parts)
            + ("\n\nInconclusive at that level:" if len(lost) else "")
            + "".join(f"\n- {claim}" for claim in lost)
        )
    )

# %% tags=["remove-input"]
if profile != "smoke":
    opening.show()
display(Markdown(chapters.progress_note(recorded, ("converged", "campaign", "compute-matched"))))

# %% [markdown]
# :::{dropdown} How the verdicts are computed
# - A claim is a difference between two arms of runs, reported with its **95 % t-interval**,
#   whose degrees of freedom come from the seeds.
# - **Regimes.** Each claim is judged in each regime that records (or plans) its arms: the
#   converged campaign's epochs, the short campaign's, and **at equal training compute**,
#   where the other method's control trains until its recorded training FLOPs match the
#   cooperative run's of the same seed. The regime column gives both arms' epochs and the
#   recorded FLOPs ratio: "matched" within 5 %, else the ratio is stated.
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
# - No run counts as less noisy than the **binomial error of its test set**.
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
# Each method's test accuracy against the compute its training took (the recorded training
# FLOPs of each run: forward FLOPs per image of the passes it ran, ×3 for the backward pass, ×
# the images seen), at full depth and at the shallowest plan, for every budget recorded: the
# short campaign, its control at equal compute, the converged campaign and its FLOPs-matched
# controls. The cooperative network is its deployed Teammate; the budget pilot's plain
# full-depth network (one seed, validation only, hollow) shows how far one network climbs
# with epochs alone. A point above and to the left of another is better on both counts.

# %% tags=["remove-input"]
if not judged.empty:
    points = result_plots.training_compute_frame(
        judged, results.budget_rows(recorded.frame, shown_profile)
    )
    figure = result_plots.training_compute_figure(
        points, "Test top-1 against training compute (numbers: epochs; bars: 95 % over seeds)"
    )
    display(figure)
    plt.close(figure)
else:
    display(Markdown(chapters.recorded_label(results.empty(), "any dataset")))

# %% [markdown]
# ## Accuracy against cost, every method
#
# What each method buys in accuracy for its forward cost at inference, in each recorded
# regime. The cooperative network is one trained network at every depth (its deployed
# Teammate is drawn); the independent networks are one network per depth; BYOT and BranchyNet
# exit early from one network with heads of their own. Dashed: the independent networks
# trained for about the training compute of one cooperative run.

# %% tags=["remove-input"]
for name, runs in regimes.items():
    for dataset, rows in runs.groupby("dataset", sort=False):
        figure = result_plots.headline_figure(
            rows.assign(run=rows["run"].str.replace("-flops-matched", "-compute-matched")),
            f"Accuracy against forward cost, {REGIME_NAMES[name]} (bars: 95 % over seeds)",
        )
        display(Markdown(chapters.recorded_label(rows, dataset)), figure)
        plt.close(figure)

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
for dataset in sorted(set(judged["dataset"])):
    cooperative_runs = judged[(judged["dataset"] == dataset) & (judged["run"] == "cooperative")]
    config = results.config_of(cooperative_runs)
    info = DATASETS[dataset]
    classes = config.num_classes or info.num_classes
    size = config.image_size or info.image_size
    net = build_model(config.arch, classes, size)
    shallowest = min(config.scaling_factors)
    kept = len(net.active_blocks(shallowest))
    display(
        Markdown(
            f"- **{dataset}**: {config.arch}, {classes} of its {info.num_classes} classes at "
            f"{size} px; "
            + "; ".join(
                f"{REGIME_NAMES[name]}, {rows['seed'].nunique()} seeds of the cooperative run"
                for name, rows in cooperative_runs.groupby("regime", sort=False)
            )
            + f". On its {net.num_blocks} residual blocks the shallowest scaling factor, "
            f"s = {shallowest:g}, keeps {kept} blocks ({kept / net.num_blocks:.0%})"
            + (
                f": the shallowest depth tested is {kept / net.num_blocks:.0%} of the network, "
                f"not {shallowest:.0%}."
                if round(100 * kept / net.num_blocks) != round(100 * shallowest)
                else "."
            )
        )
    )
for dataset in sorted(set(DATASETS) - set(judged["dataset"])):
    display(
        Markdown(
            f"- **{dataset}: not tested.** No {dataset} run is recorded (the recording machine "
            "holds no copy of the dataset), so the paper's claims on it are neither confirmed "
            "nor contradicted here."
        )
    )
display(
    Markdown(
        f"The paper trains {replication.arch_name(paper.arch)} for {paper.epochs} epochs (our "
        f"`full` profile, `params/full.yaml`); our converged budget is "
        f"{epochs.get('converged', '?')} epochs."
    )
)

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
counts = plan.groupby(["regime", "campaign"], sort=False).agg(
    runs=("run", "size"), recorded=("recorded", "sum"), names=("run", "unique")
)
lines = []
for (name, campaign), row in counts.iterrows():
    what = {
        "campaign": "the short campaign: every method and every ablation",
        "compute-matched": "its control at equal training compute",
        "converged": "every method, then the FLOPs-matched controls, then two ablations",
    }.get(campaign, campaign)
    lines.append(
        f"- **{REGIME_NAMES[name]}** (`{campaign}`): {what}; {row['recorded']} of "
        f"{row['runs']} runs recorded ({', '.join(f'`{n}`' for n in row['names'])})."
    )
display(Markdown("\n".join(lines)))

# %% tags=["remove-input"]
pilot_plan = results.campaign_state(shown_profile, recorded, name=results.BUDGET_CAMPAIGN)
display(
    Markdown(
        "A budget pilot chooses the converged budget on validation data only: the plain "
        "full-depth network at "
        + ", ".join(str(config.epochs) for config, _ in pilot_plan)
        + f" epochs ({sum(state == 'recorded' for _, state in pilot_plan)} of {len(pilot_plan)} "
        "recorded), under the rule chapter 5 states and applies. The verdicts read the test "
        "split only for the numbers they report; the deployed Teammate is chosen on validation "
        "accuracy."
    )
)

# %% [markdown]
# ## Results

# %% tags=["remove-input"]
judged_rows = (
    verdicts[~verdicts["verdict"].str.startswith("withheld")] if verdicts is not None else None
)
discussed = judged_rows is not None and not judged_rows.empty  # claims to discuss
if verdicts is None:
    display(Markdown("Nothing yet: no cooperative run is recorded."))
else:
    display(HTML(f"<p>{replication.tally_line(verdicts, plan, epochs)}</p>"))
    contradicted = judged_rows[judged_rows["verdict"] == verdict.FAILS]
    undecided = judged_rows[judged_rows["verdict"].str.startswith(verdict.OPEN)]
    pending = judged_rows[judged_rows["verdict"] == verdict.PENDING]
    if judged_rows.empty:
        display(Markdown("No verdict: every row is withheld."))
    if not contradicted.empty:
        claims = "; ".join(f"{short(r.claim)}, {r.regime}" for r in contradicted.itertuples())
        display(Markdown(f"**Contradicted by our runs:** {claims}."))
    if not undecided.empty:
        display(
            Markdown(
                "**Not confirmed**, and what would decide each:\n"
                + "\n".join(
                    f"- {short(r.claim)}, {r.regime}" + (f": {r.decide}." if r.decide else ".")
                    for r in undecided.itertuples()
                )
            )
        )
    for name, rows in pending.groupby("regime_key", sort=False):
        runs = plan[plan["regime"] == name]
        missing = runs.loc[~runs["recorded"], "run"].value_counts(sort=False)
        display(
            Markdown(
                f"**Not yet decided ({REGIME_NAMES[name]}):** {len(rows)} claims, until "
                f"{int(missing.sum())} more runs are recorded ("
                + ", ".join(f"`{run}` ×{count}" for run, count in missing.items())
                + ")."
            )
        )

# %% tags=["remove-input"]
# the most likely reason for a claim not shown to hold: the first of replication.likely_reason's
REASONS = {
    "Missing": "their campaign has not recorded all the runs it plans: nothing is concluded "
    "before they are.",
    "Regime": "their runs differ in regime, data or precision, so a difference would measure "
    "that, not the method.",
    "Opposite": "the measured effect changes sign with depth (the claim's per-plan means): a "
    "gain at one depth and a loss at another average out, so the mean over depths describes "
    "no single depth; telling them apart needs each depth judged on its own, with more seeds.",
    "Null": "the measured difference is close to zero: the part may make no difference at this "
    'scale. The rule says "does not hold" only when the other arm is significantly better, so '
    "a part without effect stays inconclusive rather than refuted.",
    "Seeds": f"fewer than {verdict.MIN_RUNS} runs in an arm: one seed gives no interval at all, "
    "and two give a 95 % t-interval 12.7 standard errors wide, so no difference can be shown; "
    f"every arm needs at least {verdict.MIN_RUNS} seeds.",
    "Exploratory": "the campaign runs these variants once, as exploration: one seed shows a "
    "direction, not a difference the seeds can support.",
    "Exits": "exits with heads of their own are a strong baseline at shallow depth when "
    "training is short; under an exit's cost the cooperative network runs its deepest depth "
    "that fits, and a backbone with few distinct depths (ResNet-20 has three) must often fall "
    "back to a much shallower one where the exits sit at every block; an exit cheaper than "
    "its shallowest depth is left out, not extrapolated.",
    "Depth": "time shrinks less than FLOPs when fixed costs dominate: at batch 1 on a CPU a "
    "small network spends much of its time in the stem, the head and per-layer dispatch, which "
    "every depth pays (the depth-cost benchmark, in the appendix *Engineering checks*, "
    "shows deeper backbones following FLOPs more closely).",
    "Comparable": "a short schedule leaves every network far from convergence, and seeds of "
    "the same method land as far apart as the gaps being measured; more seeds or a longer "
    "schedule are needed to separate them.",
    "At equal training compute": "a cooperative step spends its compute on seven forward "
    "passes (the Leader, two Teammates, four sub-networks) that train three networks, of which "
    "one is deployed; the control spends the same compute on more epochs of its own networks. "
    "While every network is still far from converged, more epochs buy accuracy fast. The "
    "comparison does not price what the cooperative method keeps: one network, stored and "
    "shipped once, that runs at every depth.",
    "Component": "with a short schedule the Teammates and the Leader are weak teachers with "
    "little to pass on; a backbone with few blocks per stage gives the gate little to choose "
    "and the grid few distinct plans; and the spread between seeds is as large as the effect "
    "sought.",
}
if discussed:
    reasons = {}
    shown = ~judged_rows["verdict"].isin([verdict.HOLDS, verdict.PENDING])  # pending: above
    for row in judged_rows[shown].itertuples():
        reason = replication.likely_reason(
            row.claim, row.verdict, row.decide, row.measured, row.regime
        )
        reasons.setdefault(reason, []).append(short(row.claim))
    lines = [
        f"- *{', '.join(dict.fromkeys(claims))}*: {REASONS[reason]}"
        for reason, claims in reasons.items()
    ]
    if reasons:
        display(Markdown("**Most likely reasons:**\n" + "\n".join(lines)))
    elif (judged_rows["verdict"] == verdict.HOLDS).all():
        display(Markdown("Every claim judged holds on the recorded runs."))

# %% tags=["remove-input"]
step_record = engineering.benchmark_records(recorded).get("train_step")
for name, runs in regimes.items() if discussed else []:
    config = results.config_of(runs[runs["run"] == "cooperative"])
    sizes, by_factor = results.depth_plans(config.to_dict())
    plans = {}  # {plan: the scaling factors that run it}
    for s, plan_ in by_factor:
        plans.setdefault(plan_, []).append(s)
    if name == next(iter(regimes)) and len(plans) < len(by_factor):
        groups = "; ".join(
            f"s = {', '.join(f'{s:g}' for s in factors)} keep {sum(plan_)} blocks"
            for plan_, factors in plans.items()
        )
        display(
            Markdown(
                f"On {config.arch} (stages of {', '.join(map(str, sizes))} blocks) the grid has "
                f"only {len(plans)} distinct plans ({groups}), so accuracies repeat across "
                "scaling factors."
            )
        )
    if note := training_cost.training_compute_note(runs, step_record):
        display(Markdown(f"*{REGIME_NAMES[name].capitalize()}.* {note}"))

# %% tags=["remove-input"]
short_runs = regimes.get("short", results.empty())
if {"cooperative", "cooperative-shared-bn"} <= set(short_runs["run"]):
    # full depth: one plan in both arms, so only where the statistics come from differs
    top1 = {
        name: chapters.seeds_frame(short_runs, name)
        .query("network == 'teammate_mean' and s == 1")
        .set_index("seed")["top1"]
        for name in ("cooperative", "cooperative-shared-bn")
    }
    gaps = (top1["cooperative-shared-bn"] - top1["cooperative"]).dropna()
    display(
        Markdown(
            "The `shared-bn` row holds the cooperative run's own networks with the batch-norm "
            "statistics they ended training with: moving averages over augmented training "
            "batches, one set for every depth. The cooperative row has them re-estimated "
            "after training on clean training images, one set per depth plan (every "
            "method's networks have theirs re-estimated). At full depth both arms run one "
            "plan, so there only the re-estimation differs, and the moving averages give the "
            f"mean of the Teammates {top1['cooperative-shared-bn'][gaps.index].mean():.1f} % "
            f"against {top1['cooperative'][gaps.index].mean():.1f} % (per seed: "
            + ", ".join(f"{gap:+.1f}" for gap in gaps)
            + " points). The `shared-bn` claim in the verdict table therefore measures two "
            "changes at once, statistics per depth and statistics re-estimated on clean "
            "images; a control that re-estimates one shared set would tell them apart."
        )
    )

# %% [markdown]
# **How far seeds land apart.** Every run the verdicts judge, its seeds, and the test
# accuracy at full depth of the mean of its Teammates (the only network of the other methods):
# the mean over seeds and the range between them. A difference between two methods smaller
# than their seed range is one the verdicts above cannot separate.

# %% tags=["remove-input"]
for name, runs in regimes.items():
    costs = results.campaign_table(runs)[["seeds", "top-1 at full depth (%)", "seed range (pts)"]]
    costs = costs.rename(
        columns={"top-1 at full depth (%)": "top-1 at full depth (%): Teammates' mean or network"}
    )
    display(Markdown(f"*{REGIME_NAMES[name].capitalize()}:*"))
    display(chapters.dashes(costs))  # one seed: no range

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
if not recorded.frame.empty:
    needs = training_cost.compute_table(recorded.frame)
    files = results.summaries(recorded.frame)
    devices = sorted({str(device or "unknown hardware") for device in files["device"]})
    hours, flops = needs["training (h)"].sum(), needs["training PFLOPs"].sum()
    display(
        Markdown(
            f"**{len(files)} result files, {hours:.0f} hours of training and "
            f"{flops:.1f} PFLOPs in all, on {', '.join(devices)}**; no GPU."
        )
    )
    display(
        chapters.dashes(
            needs.drop(columns="training PFLOPs"),
            {"training (h)": 1, "per seed (h)": 2, "PFLOPs per seed": 3},
        )
    )
