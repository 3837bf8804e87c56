"""The summary page, *Does it replicate?*, regime by regime: :func:`summarise` reads the
recorded results once into a :class:`Summary`, whose ``show_*`` methods display the page's
sections. The parts: the claim table as HTML (:func:`verdict_html`), the scope of the
replication (:func:`scope_line`), the tally of verdicts per regime (:func:`tally_line`), where
the regimes disagree, and the likely reason for a claim not shown to hold
(:func:`likely_reason`, :data:`REASONS`). The verdicts themselves are
:mod:`coop_utils.verdict`'s.
"""

from __future__ import annotations

import functools
import html
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import HTML, Markdown, display

from coop_utils import chapters, engineering, result_plots, results, training_cost, verdict
from coop_utils.config import RunConfig, load_config
from coop_utils.datasets import DATASETS
from coop_utils.models import build_model
from coop_utils.results import Results


def verdict_html(table: pd.DataFrame) -> Any:
    """A claim table as a narrow HTML table: claim, regime, dataset (where several), our
    number, verdict; each claim's rule, evidence and (when it is open) what would decide it
    fold out under it."""
    datasets = table.loc[table["dataset"] != "benchmark", "dataset"].nunique() > 1
    regime = "regime" in table and bool(table["regime"].astype(bool).any())
    rows = []
    for row in table.to_dict("records"):
        said = str(row["verdict"])
        kind = said.split(" (")[0].replace(" ", "-")
        decide = f"<p><b>To decide:</b> {html.escape(row['decide'])}</p>" if row["decide"] else ""
        cells = [row.get("regime") or "every regime"] if regime else []
        cells += [row["dataset"]] if datasets else []
        rows.append(
            f"<tr><td><details><summary>{html.escape(row['claim'])}</summary><p><b>Rule:</b> "
            f"{html.escape(row['rule'])}</p><p><b>Evidence:</b> {html.escape(row['evidence'])}"
            f"</p>{decide}</details></td>"
            + "".join(f"<td>{html.escape(cell)}</td>" for cell in cells)
            + f"<td>{html.escape(row['measured'])}</td>"
            f'<td class="verdict-{kind}">{html.escape(said)}</td></tr>'
        )
    heads = ["regime"] * regime + ["dataset"] * datasets
    return HTML(
        '<table class="verdicts"><thead><tr><th>claim (click for its rule)</th>'
        + "".join(f"<th>{head}</th>" for head in heads)
        + "<th>our number: difference ± 95 % interval</th><th>verdict</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )


#: the regimes as the summary page names them (``results.REGIMES``)
REGIME_NAMES = {"converged": "Converged regime", "short": "Short regime"}


def _counted(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def regime_epochs(plan: pd.DataFrame, frame: pd.DataFrame) -> dict[str, str]:
    """``{regime: the epochs of its cooperative runs}``, recorded (``frame``: with a
    ``regime`` column, :func:`results.best_runs`) or else planned: ``"24"``."""
    epochs = {}
    for name in results.REGIMES:
        found = frame.loc[(frame.get("regime") == name) & (frame["run"] == "cooperative"), "epochs"]
        if found.empty:
            found = plan.loc[(plan["regime"] == name) & (plan["run"] == "cooperative"), "epochs"]
        if not found.empty:
            epochs[name] = results.span(sorted({int(e) for e in found}))
    return epochs


def _verdicts_said(count: pd.Series) -> str:
    """One regime's verdicts counted (a row of :func:`verdict.tally`), in words: "of its 13
    claims, 5 hold and 8 are inconclusive (3 exploratory by design)"."""
    claims = int(count["claims"])
    if count["withheld"] == claims:
        return f"its {_counted(claims, 'claim', 'claims')} withheld (not a result profile)"
    if count[verdict.PENDING] == claims:
        return f"its {_counted(claims, 'claim is', 'claims are')} not yet decided"
    why = [
        f"{count['exploratory']} exploratory by design" * bool(count["exploratory"]),
        f"{count['n < 3']} with fewer than {verdict.MIN_RUNS} seeds" * bool(count["n < 3"]),
    ]
    why = f" ({'; '.join(w for w in why if w)})" if any(why) else ""
    kinds = [
        _counted(int(count[verdict.HOLDS]), "holds", "hold"),
        _counted(int(count[verdict.FAILS]), "does not hold", "do not hold"),
        _counted(int(count[verdict.OPEN]), "is inconclusive", "are inconclusive") + why,
        _counted(int(count[verdict.PENDING]), "is not yet decided", "are not yet decided"),
    ]
    kinds = [kind for kind in kinds if not kind.startswith("0 ")]
    if claims == 1:
        return f"its 1 claim {kinds[0].removeprefix('1 ')}"
    return f"of its {claims} claims, {chapters.listed(kinds)}"


def tally_line(
    table: pd.DataFrame,
    plan: pd.DataFrame,
    epochs: Mapping[str, str],
    bold: tuple[str, str] = ("<b>", "</b>"),
    compute: Mapping[str, str] | None = None,
) -> str:
    """HTML (``bold``: Markdown's ``("*", "*")``): one sentence per regime of a claim table,
    the converged one first: how many runs its campaigns have recorded (``plan``:
    :func:`results.regime_plan`) and its claims' verdicts counted (:func:`verdict.tally`),
    those at equal epochs apart from those at equal training compute; ``compute``: per regime,
    how many times its baselines' training FLOPs the cooperative run trains with at equal
    epochs (``"2.7–5.3"``). Then the implementation check."""
    at_compute = table["regime"].astype(str).str.startswith(verdict.EQUAL_COMPUTE)
    counted = {
        kind: verdict.tally(rows)
        for kind, rows in (("epochs", table[~at_compute]), ("compute", table[at_compute]))
    }
    parts = []
    for name, overall in verdict.tally(table).iterrows():
        runs = plan[plan["regime"] == name]
        said = [f"{int(runs['recorded'].sum())} of {len(runs)} runs recorded"] if len(runs) else []
        kinds = [kind for kind, count in counted.items() if name in count.index]
        if overall["claims"] in (overall[verdict.PENDING], overall["withheld"]):
            kinds = []  # nothing decided: no need to tell the two kinds apart
            said.append(_verdicts_said(overall))
        for kind in kinds:
            words = _verdicts_said(counted[kind].loc[name])
            if len(kinds) == 1:
                said.append(words)
            elif kind == "compute":
                said.append(f"at equal training compute, {words}")
            else:
                ratio = (compute or {}).get(name)
                more = (
                    f" (where the cooperative run trains with {ratio}× the FLOPs of the other "
                    "methods)"
                    if ratio
                    else ""
                )
                said.append(f"at equal epochs{more}, {words}")
        label = f"{REGIME_NAMES.get(name, name)}, {epochs.get(name, '?')} epochs"
        parts.append(f"{bold[0]}{label}:{bold[1]} {'; '.join(said)}.")
    check = table.loc[table["claim"].str.contains(verdict.IMPLEMENTATION_CHECK), "verdict"]
    parts += [f"Implementation check (depth cuts inference cost): {v}." for v in check]
    return " ".join(parts)


def disagreement_note(table: pd.DataFrame) -> str:
    """Markdown: one sentence per claim whose verdicts differ between regimes
    (:func:`verdict.disagreements`), or ""."""
    found = verdict.disagreements(table)
    several = table.loc[table["dataset"] != "benchmark", "dataset"].nunique() > 1
    lines = []
    for row in found.itertuples():
        said: dict[str, list[str]] = {}
        for regime, judged in zip(row.regimes, row.verdicts, strict=True):
            said.setdefault(judged, []).append(regime)
        parts = [
            f"{judged} ({'; '.join(r.replace(' (', ', ').removesuffix(')') for r in regimes)})"
            for judged, regimes in said.items()
        ]
        where = f" ({row.dataset})" if several else ""
        lines.append(f"- *{row.claim}*{where}: {'; '.join(parts)}.")
    return "**Where the regimes disagree.**\n" + "\n".join(lines) if lines else ""


#: the datasets and backbones as the text names them
DATASET_NAMES = {"cifar100": "CIFAR-100", "tiny-imagenet": "Tiny ImageNet"}


def arch_name(arch: str) -> str:
    """``resnet152`` as the paper writes it: ``ResNet-152``."""
    return f"ResNet-{arch.removeprefix('resnet')}" if arch.startswith("resnet") else arch


#: how the scope line opens
SCOPE_HEAD = "Partial replication, rebuilt from the paper's abstract"


def scope_line(config: RunConfig, epochs: Sequence[str], paper: RunConfig) -> str:
    """HTML, one line: what the recorded runs replicate (``config``: a cooperative run's, at
    each regime's ``epochs``; the depths its grid of scaling factors runs) against the paper's
    setting (``paper``: the full profile's backbone and data; its epochs are our choice, not
    the paper's)."""
    info = DATASETS[config.dataset]
    name = DATASET_NAMES.get(config.dataset, config.dataset)
    classes, size = config.num_classes or info.num_classes, config.image_size or info.image_size
    ours = (
        f"{classes} of {name}'s {info.num_classes} classes"
        if classes < info.num_classes
        else (f"all {classes} {name} classes")
    )
    sizes, by_factor = results.depth_plans(config.to_dict())
    depths = [str(d) for d in sorted({sum(plan) for _, plan in by_factor})]
    theirs = paper.num_classes or info.num_classes
    return (
        f"<b>{SCOPE_HEAD}:</b> {arch_name(config.arch)} run at {chapters.listed(depths)} of "
        f"its {sum(sizes)} blocks, {ours} at {size} px, {' and '.join(epochs)} epochs, "
        f"against the paper's {arch_name(paper.arch)} on "
        f"{'all ' if theirs == info.num_classes else ''}{theirs} classes at "
        f"{paper.image_size or info.image_size} px."
    )


def answer_html(scope: str, tally: str) -> Any:
    """The summary page's opening: the scope line, then the tally."""
    return HTML(
        f'<div class="replication-answer"><p class="replication-scope">{scope}</p>'
        f'<p class="replication-tally">{tally}</p></div>'
    )


def likely_reason(claim: str, said: str, decide: str, measured: str, regime: str = "") -> str:
    """Which likely reason a claim of the verdict table not shown to hold has (its verdict
    ``said``), the first that applies: "Missing" (its runs are not all recorded yet), "Regime"
    (not comparable), "Opposite" (the effect changes sign with depth), "Null" (too close to zero
    for any number of seeds), "Seeds" (n < 3), "Exploratory", "At equal training compute" (its
    ``regime``), "Exits" (against an exit baseline), "Leader", "Depth", "Comparable" (the claims
    of those names), else "Component": the summary page gives each its explanation."""
    if said == verdict.PENDING or re.fullmatch(rf"{verdict.NO_RUN} \S+ run", measured):
        return "Missing"
    if decide == verdict.SAME_REGIME:
        return "Regime"
    if verdict.OPPOSITE in measured:
        return "Opposite"
    if decide.startswith(f"more than {verdict.MOST_RUNS} seeds"):
        return "Null"
    if said == verdict.FEW:
        return "Seeds"
    if said == verdict.EXPLORATORY:
        return "Exploratory"
    if regime.startswith(verdict.EQUAL_COMPUTE):
        return "At equal training compute"
    if claim.startswith(("Smoother", "More accurate")):
        return "Exits"
    if claim.startswith("The Leader"):
        return "Leader"
    return next((key for key in ("Depth", "Comparable") if claim.startswith(key)), "Component")


#: what a claim not shown to hold most likely suffers from, by :func:`likely_reason`'s answer
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
    "Comparable": "seeds of the same method land as far apart as the gaps being measured, and "
    "at these budgets every network is still learning; more seeds, or a longer schedule, are "
    "needed to separate them.",
    "At equal training compute": "a cooperative step spends its compute on seven forward "
    "passes (the Leader, two Teammates, four sub-networks) that train three networks, of which "
    "one is deployed; the control spends the same compute on more epochs of its own networks. "
    "While every network is still far from converged, more epochs buy accuracy fast. The "
    "comparison does not price what the cooperative method keeps: one network, stored and "
    "shipped once, that runs at every depth.",
    "Leader": "the Leader is a plain full-depth network: it trains exactly as the independent "
    "arm's full-depth network of the same seed (same initialisation, batches and loss; chapter "
    "6 shows equal accuracies in every seed), so the claim asks whether distilling from such a "
    "network helps the Teammates. Trained as briefly as they are, it knows little more than "
    "they do, and the spread between seeds is as large as the effect sought.",
    "Component": "the Teammates teach each other what they learned in the same few epochs, so "
    "each has little to pass on to the other, and the spread between seeds is as large as the "
    "effect sought.",
}

#: what each campaign of a regime trains, as the methodology names it
CAMPAIGN_ROLES = {
    "campaign": "the short campaign: every method and every ablation",
    "compute-matched": "its control at equal training compute",
    "converged": "every method, then the FLOPs-matched controls, then two ablations",
}


def short_claim(claim: str) -> str:
    """A claim without its closing parenthesis."""
    return re.sub(r"\s*\([^()]*\)$", "", claim)


def _claim_in(claim: str, regime: str) -> str:
    """A claim, shortened, with its regime where it has one: "Smoother than BYOT, converged
    regime (24 epochs)"."""
    return ", ".join(part for part in (short_claim(claim), regime) if part)


def as_shown(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs as the figures name them: a ``-flops-matched`` control is ``-compute-matched``."""
    return runs.assign(run=runs["run"].str.replace("-flops-matched", "-compute-matched"))


@dataclass
class Summary:
    """What the summary page reads from the recorded results, computed once
    (:func:`summarise`): the verdict table, the runs it judges by regime (converged first), each
    regime's epochs and the campaigns' plan, and the scope against the paper's setting. Its
    ``show_*`` methods display the page's sections."""

    recorded: Results
    margin: float
    verdicts: pd.DataFrame | None
    judged: pd.DataFrame  # every regime's runs, their planned configs only
    plan: pd.DataFrame  # results.regime_plan: every planned run and whether it is recorded
    profile: str
    epochs: dict[str, str]  # {regime: its cooperative runs' epochs}

    @property
    def regimes(self) -> dict[str, pd.DataFrame]:
        """``{regime: its judged runs}``, converged first (:data:`results.REGIMES`)."""
        found = dict(iter(self.judged.groupby("regime", sort=False)))
        return {name: found[name] for name in results.REGIMES if name in found}

    @property
    def names(self) -> dict[str, str]:
        """``{regime: "converged regime, 24 epochs"}``, as the page names each regime."""
        return {
            name: f"{label.lower()}, {self.epochs.get(name, '?')} epochs"
            for name, label in REGIME_NAMES.items()
        }

    @property
    def paper(self) -> RunConfig:
        """The paper's setting: the ``full`` profile on the cooperative runs' dataset."""
        return load_config("full", dataset=self.config.dataset)

    @property
    def scope(self) -> str:
        """:func:`scope_line`: the cooperative runs' setting, each regime's epochs (shortest
        first), against the paper's."""
        return scope_line(self.config, list(self.epochs.values())[::-1], self.paper)

    @property
    def rows(self) -> pd.DataFrame | None:
        """The verdict table's rows that are not withheld (``None``: no verdict table)."""
        if self.verdicts is None:
            return None
        return self.verdicts[~self.verdicts["verdict"].str.startswith("withheld")]

    @functools.cached_property
    def compute(self) -> dict[str, str]:
        """``{regime: "2.7–5.3"}``: how many times its baselines' training FLOPs per seed the
        cooperative run trains with (:func:`training_cost.flops_multiples`), where recorded."""
        compute = {}
        for name, runs in self.regimes.items():
            if multiples := training_cost.flops_multiples(runs):
                compute[name] = results.span([f"{r:.1f}" for r in multiples])
        return compute

    def tally(self, bold: tuple[str, str] = ("<b>", "</b>")) -> str | None:
        """:func:`tally_line` of the verdicts, or ``None`` without any."""
        if self.verdicts is None:
            return None
        return tally_line(self.verdicts, self.plan, self.epochs, bold, self.compute)

    def show_answer(self) -> None:
        """The page's opening: the scope and tally (:func:`answer_html`), then the claims, those
        not yet decided last."""
        tally = self.tally() or (
            "<b>Verdict pending.</b> No cooperative run of the preview or full profile is "
            "recorded in <code>results/</code> yet: <code>make results</code> trains the "
            "campaign, and this page fills itself from the summaries it records."
        )
        display(answer_html(self.scope, tally))
        if self.verdicts is not None:  # the claims decided first, those waiting for runs last
            waiting = self.verdicts["verdict"] == verdict.PENDING
            display(verdict_html(pd.concat([self.verdicts[~waiting], self.verdicts[waiting]])))

    def show_landing(self) -> None:
        """The landing page's opening: what was replicated, at what scale, the verdict; then
        the first regime's accuracy against forward cost."""
        tally = self.tally(bold=("*", "*"))
        landing = [
            "**What was replicated.** The claims of *Cooperative Learning for Cost-Adaptive "
            "Inference* that one cooperatively trained network runs at any depth from 20 % to "
            "100 % of its residual blocks about as accurately as a network trained for that "
            "depth alone, degrades more smoothly than BYOT and BranchyNet, and owes this to each "
            "of its parts.",
            f"**At what scale.** {SCOPE_HEAD.replace('Partial', 'A partial')}: "
            + self.scope.removeprefix(f"<b>{SCOPE_HEAD}:</b> "),
            "**The verdict.** "
            + (tally if tally is not None else "Pending: no cooperative run is recorded yet."),
        ]
        display(Markdown(" ".join(landing)))
        if self.regimes:
            name, runs = next(iter(self.regimes.items()))  # the converged regime once recorded
            figure = result_plots.headline_figure(
                as_shown(runs), f"Accuracy against forward cost, {self.names[name]}"
            )
            alt = "Test accuracy of each method against its forward cost in FLOPs"
            display(figure, metadata={"image/png": {"alt": alt}})
            plt.close(figure)
            display(
                Markdown(
                    "*The cooperative network is drawn by its deployed Teammate, every other "
                    "method by its network of each depth; bars: 95 % t-intervals over seeds.*"
                )
            )

    def show_read_together(self) -> None:
        """Where the regimes disagree (:func:`disagreement_note`), then the verdicts read as one
        family (Bonferroni, :func:`verdict.familywise`): which still hold, or still do not."""
        if self.verdicts is None:
            return
        if note := disagreement_note(self.verdicts):
            display(Markdown(note))
        family = verdict.familywise(self.recorded, self.margin, self.verdicts)
        if family is None:
            return
        decided = family.decided.assign(claim=family.decided["claim"].map(short_claim))
        decided["claim"] += ", " + decided["regime"]
        kept = decided[decided["verdict"] == decided["strict"]]
        parts = []
        for said, that, one, many in (
            (verdict.HOLDS, "hold", "holds", "hold"),
            (verdict.FAILS, "do not hold", "does not", "do not"),
        ):
            count = int((decided["verdict"] == said).sum())
            claims = list(kept.loc[kept["verdict"] == said, "claim"])
            if count:
                parts.append(
                    f"{len(claims)} of the {count} that {that} still "
                    f"{one if len(claims) == 1 else many}"
                    + (":" + "".join(f"\n- {claim}" for claim in claims) if claims else ".")
                )
        lost = decided.loc[decided["verdict"] != decided["strict"], "claim"]
        display(
            Markdown(
                "**Read together.** Each verdict above judges its claim at 95 % on its own. Read "
                f"as one family (the {family.claims} claims the runs of every regime decide, "
                f"recorded or not, each interval at {100 * family.level:.2f} %: Bonferroni, up "
                f"to {family.widening:.1f}× as wide with {verdict.MIN_RUNS} seeds): "
                + "\n\n".join(parts)
                + ("\n\nInconclusive at that level:" if len(lost) else "")
                + "".join(f"\n- {claim}" for claim in lost)
            )
        )

    def show_training_compute(self) -> None:
        """Test top-1 against training FLOPs for every method and recorded budget, with the
        budget pilot's plain network (:func:`result_plots.training_compute_figure`)."""
        if self.judged.empty:
            display(Markdown(chapters.recorded_label(results.empty(), "any dataset")))
            return
        points = result_plots.training_compute_frame(
            self.judged, results.budget_rows(self.recorded.frame, self.profile)
        )
        figure = result_plots.training_compute_figure(
            points, "Test top-1 against training compute (numbers: epochs; bars: 95 % over seeds)"
        )
        display(figure)
        plt.close(figure)

    def show_accuracy_against_cost(self) -> None:
        """Every method's accuracy against forward cost, one figure per regime and dataset."""
        for name, runs in self.regimes.items():
            for dataset, rows in runs.groupby("dataset", sort=False):
                figure = result_plots.headline_figure(
                    as_shown(rows),
                    f"Accuracy against forward cost, {self.names[name]} (bars: 95 % over seeds)",
                )
                drawn = result_plots.headline_rows(rows)  # the label names the runs drawn
                display(Markdown(chapters.recorded_label(drawn, dataset)), figure)
                plt.close(figure)

    def show_scope(self) -> None:
        """One line per dataset: the backbone, classes and size, the seeds of each regime, and
        the depth the shallowest scaling factor really keeps; then the paper's setting."""
        for dataset in sorted(set(self.judged["dataset"])):
            cooperative = self.judged[
                (self.judged["dataset"] == dataset) & (self.judged["run"] == "cooperative")
            ]
            config = results.config_of(cooperative)
            info = DATASETS[dataset]
            classes = config.num_classes or info.num_classes
            size = config.image_size or info.image_size
            net = build_model(config.arch, classes, size)
            shallowest = min(config.scaling_factors)
            kept = len(net.active_blocks(shallowest))
            share = kept / net.num_blocks
            seeds = "; ".join(
                f"{self.names[name]}, {rows['seed'].nunique()} seeds of the cooperative run"
                for name, rows in cooperative.groupby("regime", sort=False)
            )
            depth = (
                f": the shallowest depth tested is {share:.0%} of the network, not "
                f"{shallowest:.0%}."
                if round(100 * share) != round(100 * shallowest)
                else "."
            )
            which = "the first " if classes < info.num_classes else "all "
            images = int(cooperative["test_images"].iloc[0])
            noise = 100 * 1.96 * (0.25 / images) ** 0.5  # a binomial 95 % half-width at 50 %
            display(
                Markdown(
                    f"- **{dataset}**: {config.arch}, {which}{classes} of its {info.num_classes} "
                    f"classes at {size} px, {100 * config.val_fraction:g} % of the training "
                    f"images held out for validation, {images:,} test images (the official "
                    "validation images of those classes: one run's top-1 near 50 % carries a "
                    f"95 % binomial margin of ±{noise:.1f} points from the test images alone); "
                    f"{seeds}. On its {net.num_blocks} residual blocks the "
                    f"shallowest scaling factor, s = {shallowest:g}, keeps {kept} blocks "
                    f"({share:.0%}){depth}"
                )
            )
        for dataset in sorted(set(DATASETS) - set(self.judged["dataset"])):
            display(
                Markdown(
                    f"- **{dataset}: not tested.** No {dataset} run is recorded (the recording "
                    "machine holds no copy of the dataset), so the paper's claims on it are "
                    "neither confirmed nor contradicted here."
                )
            )
        paper = self.paper
        display(
            Markdown(
                f"The paper trains {arch_name(paper.arch)}; its abstract gives no schedule, and "
                f"our `full` profile (`params/full.yaml`) trains it for {paper.epochs} epochs, "
                "the common CIFAR schedule. Our converged budget is "
                f"{self.epochs.get('converged', '?')} epochs.{self.flatness}"
            )
        )

    @property
    def config(self) -> RunConfig:
        """The configuration of a recorded cooperative run, else the planned one's."""
        if not self.judged.empty:
            return results.config_of(self.judged[self.judged["run"] == "cooperative"])
        cooperative = self.plan[self.plan["run"] == "cooperative"]
        return load_config(self.profile, dataset=cooperative["dataset"].iloc[0])

    def show_campaigns(self) -> None:
        """The methodology's campaigns: what each trains and how much of it is recorded; then
        the budget pilot's epochs."""
        counts = self.plan.groupby(["regime", "campaign"], sort=False).agg(
            runs=("run", "size"), recorded=("recorded", "sum"), names=("run", "unique")
        )
        lines = [
            f"- **{self.names[name]}** (`{campaign}`): {CAMPAIGN_ROLES.get(campaign, campaign)}; "
            f"{row['recorded']} of {row['runs']} runs recorded "
            f"({', '.join(f'`{n}`' for n in row['names'])})."
            for (name, campaign), row in counts.iterrows()
        ]
        display(Markdown("\n".join(lines)))
        pilot = results.campaign_state(self.profile, self.recorded, name=results.BUDGET_CAMPAIGN)
        display(
            Markdown(
                "A budget pilot chooses the converged budget on validation data only: the plain "
                "full-depth network at "
                + ", ".join(str(config.epochs) for config, _ in pilot)
                + f" epochs ({sum(state == 'recorded' for _, state in pilot)} of {len(pilot)} "
                "recorded), under the rule chapter 5 states and applies. The verdicts read the "
                "test split only for the numbers they report; the deployed Teammate is chosen "
                "on validation accuracy."
            )
        )

    @property
    def flatness(self) -> str:
        """A sentence (with a leading space), or "": how far from flat the converged budget is,
        by what doubling it gains the budget pilot's plain network."""
        converged = self.epochs.get("converged", "")
        if not converged.isdigit():
            return ""
        gain = training_cost.doubling_gain(self.recorded.frame, int(converged), self.profile)
        if gain is None or gain < training_cost.BUDGET_GAIN_PTS:
            return ""
        return (
            f" It is not yet flat: doubling it still gains the plain network {gain:+.1f} "
            f"validation points ({converged} → {2 * int(converged)} epochs), and {converged} "
            "epochs is the longest budget whose cooperative run fits the campaign's time: every "
            "network there trains longer, not as long as more epochs still pay."
        )

    def show_results(self) -> None:
        """The tally, then the claims contradicted, not confirmed (with what would decide
        each) and not yet decided (with the runs still to record), regime by regime."""
        rows = self.rows
        if rows is None:
            display(Markdown("Nothing yet: no cooperative run is recorded."))
            return
        display(HTML(f"<p>{self.tally()}</p>"))
        if rows.empty:
            display(Markdown("No verdict: every row is withheld."))
        contradicted = rows[rows["verdict"] == verdict.FAILS]
        undecided = rows[rows["verdict"].str.startswith(verdict.OPEN)]
        pending = rows[rows["verdict"] == verdict.PENDING]
        if not contradicted.empty:
            claims = "; ".join(_claim_in(r.claim, r.regime) for r in contradicted.itertuples())
            display(Markdown(f"**Does not hold:** {claims}."))
        if not undecided.empty:
            display(
                Markdown(
                    "**Inconclusive**, and what would decide each:\n"
                    + "\n".join(
                        f"- {_claim_in(r.claim, r.regime)}"
                        + (f": {r.decide}." if r.decide else ".")
                        for r in undecided.itertuples()
                    )
                )
            )
        for name, claims in pending.groupby("regime_key", sort=False):
            runs = self.plan[self.plan["regime"] == name]
            missing = runs.loc[~runs["recorded"], "run"].value_counts(sort=False)
            display(
                Markdown(
                    f"**Not yet decided ({self.names[name]}):** {len(claims)} claims, until "
                    f"{int(missing.sum())} more runs are recorded ("
                    + ", ".join(f"`{run}` ×{count}" for run, count in missing.items())
                    + ")."
                )
            )

    def show_reasons(self) -> None:
        """The most likely reason (:data:`REASONS`) for each claim not shown to hold and not
        waiting for runs, claims of one reason together."""
        rows = self.rows
        if rows is None or rows.empty:
            return
        reasons: dict[str, list[str]] = {}
        shown = ~rows["verdict"].isin([verdict.HOLDS, verdict.PENDING])  # pending: above
        for row in rows[shown].itertuples():
            reason = likely_reason(row.claim, row.verdict, row.decide, row.measured, row.regime)
            reasons.setdefault(reason, []).append(short_claim(row.claim))
        lines = [
            f"- *{', '.join(dict.fromkeys(claims))}*: {REASONS[reason]}"
            for reason, claims in reasons.items()
        ]
        if reasons:
            display(Markdown("**Likely reasons** (our reading; not tested):\n" + "\n".join(lines)))
        elif (rows["verdict"] == verdict.HOLDS).all():
            display(Markdown("Every claim judged holds on the recorded runs."))

    def show_compute_notes(self) -> None:
        """Where scaling factors share a depth plan (accuracies then repeat), and each regime's
        training compute against its baselines' (:func:`training_cost.training_compute_note`)."""
        rows = self.rows
        if rows is None or rows.empty:
            return
        step_record = engineering.benchmark_records(self.recorded).get("train_step")
        for name, runs in self.regimes.items():
            config = results.config_of(runs[runs["run"] == "cooperative"])
            sizes, by_factor = results.depth_plans(config.to_dict())
            plans: dict[Any, list[float]] = {}  # {plan: the scaling factors that run it}
            for s, plan in by_factor:
                plans.setdefault(plan, []).append(s)
            first = name == next(iter(self.regimes))  # the grid and step benchmark: said once
            if first and len(plans) < len(by_factor):
                groups = "; ".join(
                    f"s = {', '.join(f'{s:g}' for s in factors)} keep {sum(plan)} blocks"
                    for plan, factors in plans.items()
                )
                display(
                    Markdown(
                        f"On {config.arch} (stages of {', '.join(map(str, sizes))} blocks) the "
                        f"grid has only {len(plans)} distinct plans ({groups}), so accuracies "
                        "repeat across scaling factors."
                    )
                )
            if note := training_cost.training_compute_note(runs, step_record if first else None):
                display(Markdown(f"*{self.names[name].capitalize()}.* {note}"))

    def show_shared_bn(self) -> None:
        """Where the short campaign records both: what the ``shared-bn`` claim measures, with
        the moving averages' and the re-estimated statistics' top-1 at full depth per seed."""
        short_runs = self.regimes.get("short", results.empty())
        if not {"cooperative", "cooperative-shared-bn"} <= set(short_runs["run"]):
            return
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
                "The `shared-bn` row holds the cooperative run's own networks with the "
                "batch-norm statistics they ended training with: moving averages over augmented "
                "training batches, one set for every depth. The cooperative row has them "
                "re-estimated after training on clean training images, one set per depth plan "
                "(every method's networks have theirs re-estimated). At full depth both arms run "
                "one plan, so there only the re-estimation differs: the mean of the Teammates "
                f"reaches {top1['cooperative-shared-bn'][gaps.index].mean():.1f} % with the "
                f"moving averages and {top1['cooperative'][gaps.index].mean():.1f} % re-estimated "
                "(per seed, moving averages minus re-estimated: "
                + ", ".join(f"{gap:+.1f}" for gap in gaps)
                + " points; every accuracy on this page is taken with re-estimated statistics). "
                "The `shared-bn` claim in the verdict table therefore measures two "
                "changes at once, statistics per depth and statistics re-estimated on clean "
                "images; a control that re-estimates one shared set would tell them apart."
            )
        )

    def show_seed_ranges(self) -> None:
        """Per regime: every judged run's seeds, its top-1 at full depth and the range between
        its seeds (:func:`results.campaign_table`)."""
        for name, runs in self.regimes.items():
            table = results.campaign_table(runs)
            table = table[["seeds", "top-1 at full depth (%)", "seed range (pts)"]].rename(
                columns={
                    "top-1 at full depth (%)": "top-1 at full depth (%): Teammates' mean or network"
                }
            )
            display(Markdown(f"*{self.names[name].capitalize()}:*"))
            display(chapters.dashes(table))  # one seed: no range


def summarise(recorded: Results, margin: float) -> Summary:
    """The summary page's reading of ``recorded``: its verdicts with ``margin`` points for
    "comparable", the runs they judge by regime, the plan and epochs of each regime, and the
    scope against the paper's setting (the ``full`` profile)."""
    verdicts = verdict.replication_verdicts(recorded, margin=margin)
    judged = results.best_runs(recorded.frame)
    profile = judged["profile"].iloc[0] if not judged.empty else chapters.CAMPAIGN_PROFILE
    plan = results.regime_plan(profile, recorded.frame)
    epochs = regime_epochs(plan, judged)
    return Summary(recorded, margin, verdicts, judged, plan, profile, epochs)
