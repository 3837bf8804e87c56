"""The summary page's answer: does the paper replicate, regime by regime. The claim table as
HTML (:func:`verdict_html`), the scope of the replication (:func:`scope_line`), the tally of
verdicts per regime (:func:`tally_line`), where the regimes disagree, and the likely reason for
a claim not shown to hold (:func:`likely_reason`). The verdicts themselves are
:mod:`coop_utils.verdict`'s.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
from IPython.display import HTML

from coop_utils import results, verdict
from coop_utils.config import RunConfig
from coop_utils.datasets import DATASETS


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


def tally_line(
    table: pd.DataFrame,
    plan: pd.DataFrame,
    epochs: Mapping[str, str],
    bold: tuple[str, str] = ("<b>", "</b>"),
) -> str:
    """HTML (``bold``: Markdown's ``("*", "*")``): one sentence per regime of a claim table,
    the converged one first: how many runs its campaigns have recorded (``plan``:
    :func:`results.regime_plan`) and its claims' verdicts counted (:func:`verdict.tally`);
    then the implementation check."""
    parts = []
    for name, count in verdict.tally(table).iterrows():
        runs = plan[plan["regime"] == name]
        recorded = (
            f"{int(runs['recorded'].sum())} of {len(runs)} runs recorded" if len(runs) else ""
        )
        claims = int(count["claims"])
        if count["withheld"] == claims:
            said = f"its {claims} claims withheld (not a result profile)"
        elif count[verdict.PENDING] == claims:
            said = f"its {claims} claims are not yet decided"
        else:
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
            said = f"of its {claims} claims, {', '.join(kinds[:-1])}"
            said += f" and {kinds[-1]}" if len(kinds) > 1 else kinds[-1]
        label = f"{REGIME_NAMES.get(name, name)}, {epochs.get(name, '?')} epochs"
        parts.append(f"{bold[0]}{label}:{bold[1]} {'; '.join(x for x in (recorded, said) if x)}.")
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
        lines.append(f"- *{row.claim}*{where} {', but '.join(parts)}.")
    return "**Where the regimes disagree.**\n" + "\n".join(lines) if lines else ""


#: the datasets and backbones as the text names them
DATASET_NAMES = {"cifar100": "CIFAR-100", "tiny-imagenet": "Tiny ImageNet"}


def arch_name(arch: str) -> str:
    """``resnet152`` as the paper writes it: ``ResNet-152``."""
    return f"ResNet-{arch.removeprefix('resnet')}" if arch.startswith("resnet") else arch


def scope_line(config: RunConfig, epochs: Sequence[str], paper: RunConfig) -> str:
    """HTML, one line: what the recorded runs replicate (``config``: a cooperative run's, at
    each regime's ``epochs``) against the paper's setting (``paper``: the full profile's)."""
    info = DATASETS[config.dataset]
    name = DATASET_NAMES.get(config.dataset, config.dataset)
    classes, size = config.num_classes or info.num_classes, config.image_size or info.image_size
    ours = (
        f"{classes} of {name}'s {info.num_classes} classes"
        if classes < info.num_classes
        else (f"all {classes} {name} classes")
    )
    theirs = paper.num_classes or info.num_classes
    return (
        f"<b>Partial replication:</b> {arch_name(config.arch)}, {ours} at {size} px, "
        f"{' and '.join(epochs)} epochs, against the paper's {arch_name(paper.arch)} on "
        f"{'all ' if theirs == info.num_classes else ''}{theirs} classes at "
        f"{paper.image_size or info.image_size} px, {paper.epochs} epochs."
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
    ``regime``), "Exits" (against an exit baseline), "Depth", "Comparable" (the claims of those
    names), else "Component": the summary page gives each its explanation."""
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
    return next((key for key in ("Depth", "Comparable") if claim.startswith(key)), "Component")
