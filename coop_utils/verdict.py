"""The replication verdict: each claim of the paper, our numbers, and a verdict read from files.

Everything here is computed from results summaries (``results/<profile>/<dataset>/*.json``),
never typed in. A summary named ``<name>-seed<N>`` is seed ``N`` of ``<name>``; the seeds of
one name are pooled: a claim reports the mean over seeds, each seed's own number, and an
uncertainty that uses the spread between seeds where there are several.

The noise model, stated once. A quantity measured on one run (an accuracy, a mean of
accuracies, a drop between two depths) varies from run to run by ``sigma``: the standard
deviation between the seeds of the cooperative run when it has several, but never less than the
binomial standard error of the test set, which is all that is known with one seed. A difference
between the means of ``n`` and ``m`` runs then has standard deviation
``sigma * sqrt(1/n + 1/m)``, and a verdict asks whether the difference clears twice that.
With two seeds the spread is itself a rough estimate; the tables print it so that a reader can
judge.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from coop_utils.book import RESULT_PROFILES, deployed_teammate, summaries_of
from coop_utils.models import ARCHITECTURES, SCALING_FACTORS, depth_plan

__all__ = [
    "FAILS",
    "HOLDS",
    "OPEN",
    "PENDING_NOTE",
    "best_summaries",
    "claim_table",
    "component_rows",
    "discussion",
    "group_seeds",
    "replication_verdicts",
]

HOLDS, FAILS, OPEN = "holds", "does not hold", "inconclusive"

PENDING_NOTE = (
    "**Verdict pending.** No preview or full results are recorded in `results/` yet, and smoke "
    "numbers are never results: a smoke run trains a tiny network for a few dozen steps on "
    "generated data, to prove the code runs. Run `make book PROFILE=preview` (CPU) or "
    "`PROFILE=full` (GPU) and commit `results/`; this table then fills itself from those files."
)

Summary = Mapping[str, Any]

_SEED = re.compile(r"^(?P<name>.+)-seed(?P<seed>\d+)$")

#: the ablations judged, each as (variant, claim, scaling factors averaged over, whether the
#: variant adds the component rather than removing it)
COMPONENTS: tuple[tuple[str, str, tuple[float, ...], bool], ...] = (
    ("no-leader", "The Leader improves the Teammates", SCALING_FACTORS, False),
    ("no-mutual", "Mutual distillation between the Teammates improves them", SCALING_FACTORS,
     False),
    ("no-sfsl", "SFSL improves the shallow sub-networks", (0.2, 0.3, 0.4), False),
    ("one-teammate", "A second Teammate improves the first", SCALING_FACTORS, False),
    ("first-gating", "Learned (Gumbel) gating beats keeping the first blocks",
     SCALING_FACTORS[:-1], False),
    ("bn-recalibration",
     "Per-depth batch-norm recalibration helps the sub-networks (this replication's option, "
     "not a claim of the paper)", SCALING_FACTORS[:-1], True),
)  # fmt: skip


# --- reading summaries ------------------------------------------------------------------------


def group_seeds(summaries: Mapping[str, Summary]) -> dict[str, list[Summary]]:
    """``{name: [summary of each seed, by seed]}``: ``cooperative`` and ``cooperative-seed1``
    are seeds 0 and 1 of ``cooperative``."""
    grouped: dict[str, list[tuple[int, Summary]]] = {}
    for name, summary in summaries.items():
        match = _SEED.match(name)
        base, seed = (match["name"], int(match["seed"])) if match else (name, 0)
        seed = int(summary.get("config", {}).get("seed", seed))
        grouped.setdefault(base, []).append((seed, summary))
    return {
        name: [s for _, s in sorted(runs, key=lambda r: r[0])] for name, runs in grouped.items()
    }


def _seed_of(summary: Summary) -> int:
    return int(summary.get("config", {}).get("seed", 0))


def _row(by_depth: Mapping[str, Mapping[str, float]], s: float) -> Mapping[str, float] | None:
    for key, row in by_depth.items():
        if abs(float(key) - s) < 1e-6:
            return row
    return None


def _top1(by_depth: Mapping[str, Mapping[str, float]], s: float) -> float:
    row = _row(by_depth, s)
    if row is None:
        raise ValueError(f"no accuracy recorded at s={s:g}; recorded: {', '.join(by_depth)}")
    return row["top1"]


def _deployed(summary: Summary) -> Mapping[str, Mapping[str, float]]:
    return summary["metrics"][deployed_teammate(summary["metrics"])]


def _teammates(summary: Summary) -> Mapping[str, Mapping[str, float]]:
    """Mean of the Teammates (the only Teammate of a one-Teammate run)."""
    metrics = summary["metrics"]
    return metrics.get("teammate_mean") or metrics["teammate0"]


def _test_images(config: Mapping[str, Any]) -> int:
    """How many test images a summary's accuracies were measured on."""
    from coop_utils.data import DATASETS

    info = DATASETS[config["dataset"]]
    classes = config.get("num_classes") or info.num_classes
    if config.get("data") == "generated":
        return classes * config["generated_test_per_class"]
    return classes * info.test_per_class


def _stderr(accuracy_pct: float, images: int) -> float:
    """Binomial standard error of an accuracy measured on ``images`` images, in points."""
    p = min(max(accuracy_pct / 100, 0.0), 1.0)
    return 100 * math.sqrt(max(p * (1 - p), 0.0025) / images)


def _sigma(values: Sequence[float], floor: float) -> float:
    """Run-to-run standard deviation: the spread of ``values`` over seeds, at least ``floor``."""
    if len(values) < 2:
        return floor
    return max(float(np.std(values, ddof=1)), floor)


def _two_sd(values: Sequence[float], floor: float, others: int = 1) -> float:
    """Twice the standard deviation of mean(values) - (a mean over ``others`` runs)."""
    return 2 * _sigma(values, floor) * math.sqrt(1 / len(values) + 1 / others)


def _seeds(values: Sequence[float]) -> str:
    if len(values) < 2:
        return "one seed"
    return "seeds " + ", ".join(f"{v:+.1f}" for v in values)


def _sign_verdict(difference: float, two_sd: float) -> str:
    if difference - two_sd > 0:
        return HOLDS
    if difference + two_sd < 0:
        return FAILS
    return OPEN


def _depth_curve(by_depth: Mapping[str, Mapping[str, float]]) -> tuple[np.ndarray, np.ndarray]:
    rows = sorted(by_depth.values(), key=lambda row: row["active_blocks"])
    full = rows[-1]["active_blocks"]
    depth = np.array([row["active_blocks"] / full for row in rows])
    return depth, np.array([row["top1"] for row in rows])


# --- the claims -------------------------------------------------------------------------------


def _cost_claim(cooperative: list[Summary]) -> dict[str, str]:
    summary = cooperative[0]
    deployed = deployed_teammate(summary["metrics"])
    coop = summary["metrics"][deployed]
    full, shallow = _row(coop, 1.0), _row(coop, 0.2)
    latency = shallow["latency_ms"] / full["latency_ms"]
    flops = shallow["flops"] / full["flops"]
    return {
        "claim": "Depth chosen at run time cuts the cost of inference",
        "measured": f"at s = 0.2, latency {latency:.0%} and FLOPs {flops:.0%} of full depth "
        f"({deployed}, seed {_seed_of(summary)})",
        "rule": "holds if latency(0.2) <= 60 % of latency(1); does not hold if >= 90 %",
        "verdict": HOLDS if latency <= 0.6 else FAILS if latency >= 0.9 else OPEN,
    }


def _comparable_claim(
    cooperative: list[Summary], independent: list[Summary] | None, images: int, margin: float
) -> dict[str, str]:
    claim = "Comparable accuracy to a network trained for that depth alone, at every depth"
    rule = (
        "gap = deployed Teammate (chosen on validation) - independent network, top-1, mean over "
        f"seeds; holds if every gap - 2 SD > -{margin:g} pts; does not hold if any "
        f"gap + 2 SD < -{margin:g} pts"
    )
    if not independent:
        return {"claim": claim, "measured": "no independent run", "rule": rule, "verdict": OPEN}
    gaps = []
    for key in independent[0]["metrics"]["independent"]:
        s = float(key)
        if _row(_deployed(cooperative[0]), s) is None:
            continue
        reference = float(np.mean([_top1(r["metrics"]["independent"], s) for r in independent]))
        ours = [_top1(_deployed(run), s) for run in cooperative]
        two_sd = _two_sd(ours, _stderr(float(np.mean(ours)), images), len(independent))
        per_seed = [value - reference for value in ours]
        gaps.append((s, float(np.mean(per_seed)), two_sd, per_seed))
    if any(gap + two_sd < -margin for _, gap, two_sd, _ in gaps):
        verdict = FAILS
    elif all(gap - two_sd > -margin for _, gap, two_sd, _ in gaps):
        verdict = HOLDS
    else:
        verdict = OPEN
    measured = "; ".join(
        f"s={s:g}: {gap:+.1f} ± {two_sd:.1f} ({_seeds(per_seed)})"
        for s, gap, two_sd, per_seed in gaps
    )
    return {"claim": claim, "measured": measured + " pts", "rule": rule, "verdict": verdict}


def _excess_drop(coop: Mapping[str, Mapping[str, float]], exits: Mapping[str, Any]) -> float:
    """Mean over the exits inside [0.2, 1) of (our drop from full depth) - (the exits' drop),
    our accuracy interpolated at each exit's fraction of the blocks."""
    coop_depth, coop_top1 = _depth_curve(coop)
    depth, top1 = _depth_curve(exits)
    inside = (depth >= 0.2 - 1e-9) & (depth < 1 - 1e-9)
    ours = np.interp(depth[inside], coop_depth, coop_top1)
    return float(np.mean((coop_top1[-1] - ours) - (top1[-1] - top1[inside])))


def _smoother_claim(
    cooperative: list[Summary], groups: Mapping[str, list[Summary]], images: int
) -> dict[str, str]:
    claim = "Smoother accuracy degradation than BYOT and BranchyNet as depth shrinks"
    rule = (
        "at each baseline exit in [0.2, 1) of the blocks: excess drop = (our drop from full "
        "depth) - (its drop), mean over exits and seeds; holds if excess + 2 SD < 0 for both; "
        "does not hold if excess - 2 SD > 0 for either"
    )
    parts, verdicts = [], []
    for baseline in ("byot", "branchynet"):
        runs = groups.get(baseline)
        if not runs:
            parts.append(f"no {baseline} run")
            verdicts.append(None)
            continue
        per_seed = [
            float(np.mean([_excess_drop(_deployed(ours), r["metrics"][baseline]) for r in runs]))
            for ours in cooperative
        ]
        floor = 2 * _stderr(float(np.mean(_depth_curve(runs[0]["metrics"][baseline])[1])), images)
        excess, two_sd = float(np.mean(per_seed)), _two_sd(per_seed, floor, len(runs))
        parts.append(f"{baseline}: {excess:+.1f} ± {two_sd:.1f} pts ({_seeds(per_seed)})")
        verdicts.append(_sign_verdict(-excess, two_sd))
    if FAILS in verdicts:
        verdict = FAILS
    elif verdicts and all(v == HOLDS for v in verdicts):
        verdict = HOLDS
    else:
        verdict = OPEN
    return {"claim": claim, "measured": "; ".join(parts), "rule": rule, "verdict": verdict}


def _component_claim(
    variant: str,
    claim: str,
    factors: Sequence[float],
    adds: bool,
    cooperative: list[Summary],
    others: list[Summary] | None,
    images: int,
) -> dict[str, str]:
    grid = ", ".join(f"{s:g}" for s in factors)
    with_, without = ("the variant", "the method") if adds else ("the method", "the variant")
    noise = (
        "same trained weights, so SD is the test set's binomial noise"
        if adds
        else "SD from the spread between the full method's seeds (never below the test set's "
        "binomial noise), times sqrt(2 / pairs)"
    )
    rule = (
        f"difference of the Teammates' mean top-1 over s in {{{grid}}}, {with_} minus {without}, "
        f"each run against the full method's run of the same seed; {noise}; "
        "holds if - 2 SD > 0, does not hold if + 2 SD < 0"
    )
    by_seed = {_seed_of(run): run for run in cooperative}
    pairs = [(by_seed[_seed_of(o)], o) for o in others or () if _seed_of(o) in by_seed]
    if not pairs:
        missing = (
            f"no cooperative-{variant} run"
            if not others
            else f"no run of the full method with the seeds of cooperative-{variant}"
        )
        return {"claim": claim, "measured": missing, "rule": rule, "verdict": OPEN}

    def mean_top1(summary: Summary) -> float:
        return float(np.mean([_top1(_teammates(summary), s) for s in factors]))

    full = [mean_top1(base) for base, _ in pairs]
    changed = [mean_top1(other) for _, other in pairs]
    sign = 1 if adds else -1
    per_seed = [sign * (c - f) for f, c in zip(full, changed, strict=True)]
    difference = float(np.mean(per_seed))
    floor = _stderr(float(np.mean(full)), images)
    if adds:  # the variant re-evaluates the very networks of its seed
        sigma = floor
        two_sd = 2 * _sigma(per_seed, floor) / math.sqrt(len(per_seed))
    else:  # separately trained runs, each as variable as the full method between seeds
        sigma = _sigma([mean_top1(run) for run in cooperative], floor)
        two_sd = 2 * sigma * math.sqrt(2 / len(pairs))
    with_mean, without_mean = (
        (float(np.mean(changed)), float(np.mean(full)))
        if adds
        else (float(np.mean(full)), float(np.mean(changed)))
    )
    seeds = ", ".join(str(_seed_of(other)) for _, other in pairs)
    spread = "" if adds else f"; SD between {len(cooperative)} seed(s) {sigma:.1f}"
    measured = (
        f"{with_mean:.1f} vs {without_mean:.1f} %: {difference:+.1f} ± {two_sd:.1f} pts "
        f"(seed {seeds}{spread})"
    )
    verdict = _sign_verdict(difference, two_sd)
    return {"claim": claim, "measured": measured, "rule": rule, "verdict": verdict}


def _claims(summaries: Mapping[str, Summary], margin: float) -> list[dict[str, str]]:
    """Rows of measured numbers and verdicts for one dataset's summaries of one profile."""
    groups = group_seeds(summaries)
    cooperative = groups["cooperative"]
    images = _test_images(cooperative[0]["config"])
    rows = [
        _cost_claim(cooperative),
        _comparable_claim(cooperative, groups.get("independent"), images, margin),
        _smoother_claim(cooperative, groups, images),
    ]
    for variant, claim, factors, adds in COMPONENTS:
        others = groups.get(f"cooperative-{variant}")
        rows.append(_component_claim(variant, claim, factors, adds, cooperative, others, images))
    return rows


def _evidence(cooperative: list[Summary]) -> str:
    first = cooperative[0]
    seeds = len(cooperative)
    return (
        f"{first['config']['profile']}, {first['config']['arch']}, "
        f"{seeds} seed{'s' if seeds > 1 else ''}, {first.get('device', '?')}, "
        f"{str(first.get('date', ''))[:10]}"
    )


def claim_table(
    summaries_by_dataset: Mapping[str, Mapping[str, Summary]], margin: float = 2.0
) -> pd.DataFrame:
    """The claims of the paper, our measured numbers and a verdict, per dataset.

    ``summaries_by_dataset[dataset][name]`` is a results summary (``name`` is the results file
    name: ``cooperative``, ``cooperative-seed1``, ``independent``, ``byot``, ``branchynet``,
    ``cooperative-no-leader``, ...). Summaries of the smoke profile get no verdict.
    """
    rows = []
    comparable = {}
    for dataset, summaries in summaries_by_dataset.items():
        cooperative = group_seeds(summaries).get("cooperative")
        if not cooperative:
            continue
        profile = cooperative[0]["config"]["profile"]
        evidence = _evidence(cooperative)
        for row in _claims(summaries, margin):
            if profile not in RESULT_PROFILES:
                row["verdict"] = f"withheld ({profile}: not a result)"
            rows.append({"dataset": dataset, **row, "evidence": evidence})
            if row["claim"].startswith("Comparable"):
                comparable[dataset] = row["verdict"]
    if len(comparable) > 1:
        verdicts = set(comparable.values())
        if verdicts <= {HOLDS}:
            verdict = HOLDS
        elif FAILS in verdicts:
            verdict = FAILS
        elif all(v.startswith("withheld") for v in verdicts):
            verdict = next(iter(verdicts))
        else:
            verdict = OPEN
        rows.append(
            {
                "dataset": " + ".join(comparable),
                "claim": "Stable across datasets with different feature-map sizes (32 and 64 px)",
                "measured": "; ".join(f"{d}: {v}" for d, v in comparable.items()),
                "rule": "the 'comparable accuracy' verdict on every dataset",
                "verdict": verdict,
                "evidence": "the rows above",
            }
        )
    columns = ["claim", "dataset", "measured", "verdict", "rule", "evidence"]
    return pd.DataFrame(rows, columns=columns)


def replication_verdicts(
    results_root: str | os.PathLike, margin: float = 2.0
) -> pd.DataFrame | None:
    """The verdict table from the best recorded profile of each dataset; ``None`` if none."""
    chosen = best_summaries(results_root)
    return claim_table(chosen, margin) if chosen else None


def best_summaries(results_root: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """``{dataset: {name: summary}}`` from the best recorded profile of each dataset that has a
    cooperative run (full before preview; smoke never)."""
    chosen: dict[str, dict[str, Any]] = {}
    for profile in RESULT_PROFILES:
        for dataset, summaries in summaries_of(results_root, profile).items():
            if dataset not in chosen and "cooperative" in summaries:
                chosen[dataset] = summaries
    return chosen


def component_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of a claim table about the parts of the method (the ablations)."""
    claims = {claim for _, claim, _, _ in COMPONENTS} | {
        "Smoother accuracy degradation than BYOT and BranchyNet as depth shrinks"
    }
    return table[table["claim"].isin(claims)]


#: the most likely reasons a claim does not hold, or stays open, in a small-scale replication
LIKELY_REASONS: dict[str, str] = {
    "Depth": "time shrinks less than FLOPs when fixed costs dominate: at batch 1 on a CPU a "
    "small network spends much of its time in the stem, the head and per-layer dispatch, which "
    "every depth pays (the depth-cost benchmark, in the performance section of chapter 7, "
    "shows deeper backbones following FLOPs more closely).",
    "Comparable": "a short schedule leaves every network far from convergence, and two seeds "
    "of the same method land as far apart as the gaps being measured; more seeds or a longer "
    "schedule are needed to separate them.",
    "Smoother": "exits with heads of their own are a strong baseline at shallow depth when "
    "training is short; the comparison also needs the cooperative network's depths to line up "
    "with the exits'.",
    "Component": "with a short schedule the Teammates and the Leader are weak teachers with "
    "little to pass on; a backbone with few blocks per stage gives the gate little to choose "
    "and the grid few distinct plans; and the spread between seeds is as large as the effect "
    "sought.",
}


def _reason(claim: str) -> str:
    for key in ("Depth", "Comparable", "Smoother"):
        if claim.startswith(key):
            return LIKELY_REASONS[key]
    return LIKELY_REASONS["Component"]


def _plan_note(config: Mapping[str, Any]) -> str:
    arch = config.get("arch", "")
    if arch not in ARCHITECTURES:
        return ""
    sizes = ARCHITECTURES[arch].stage_sizes
    plans: dict[tuple[int, ...], list[float]] = {}
    for s in config.get("scaling_factors") or SCALING_FACTORS:
        plans.setdefault(depth_plan(sizes, float(s)), []).append(float(s))
    if len(plans) >= len(config.get("scaling_factors") or SCALING_FACTORS):
        return ""
    groups = "; ".join(
        f"s = {', '.join(f'{s:g}' for s in factors)} keep {sum(plan)} blocks"
        for plan, factors in plans.items()
    )
    return (
        f" On {arch} (stages of {', '.join(map(str, sizes))} blocks) the grid has only "
        f"{len(plans)} distinct plans ({groups}), so accuracies repeat across scaling factors."
    )


def discussion(
    table: pd.DataFrame,
    summaries_by_dataset: Mapping[str, Mapping[str, Summary]] | None = None,
) -> str:
    """Markdown that states plainly which claims our runs contradict or leave unconfirmed,
    then the most likely reasons, each once with the claims it bears on;
    ``summaries_by_dataset`` adds what the backbone's depth grid allows."""
    judged = table[~table["verdict"].astype(str).str.startswith("withheld")]
    if judged.empty:
        return "No verdict: every row is withheld."
    short = {claim: re.sub(r"\s*\([^()]*\)$", "", claim) for claim in judged["claim"]}
    paragraphs = []
    for verdict, heading in ((FAILS, "Contradicted by our runs"), (OPEN, "Not confirmed")):
        rows = judged[judged["verdict"] == verdict]
        if not rows.empty:
            claims = "; ".join(f"{short[r.claim]} ({r.dataset})" for r in rows.itertuples())
            paragraphs.append(f"**{heading}:** {claims}.")
    if not paragraphs:
        return "Every claim judged holds on the recorded runs."
    reasons: dict[str, list[str]] = {}
    for row in judged[judged["verdict"] != HOLDS].itertuples():
        reasons.setdefault(_reason(row.claim), []).append(short[row.claim])
    paragraphs.append(
        "**Most likely reasons:**\n"
        + "\n".join(
            f"- *{', '.join(dict.fromkeys(claims))}*: {reason}"
            for reason, claims in reasons.items()
        )
    )
    paragraphs += [
        note
        for summaries in (summaries_by_dataset or {}).values()
        if (cooperative := group_seeds(summaries).get("cooperative"))
        and (note := _plan_note(cooperative[0]["config"]).strip())
    ]
    return "\n\n".join(paragraphs)
