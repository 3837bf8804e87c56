"""The replication verdict: each claim of the paper, our numbers, and a verdict read from the
recorded results (:mod:`coop_utils.results`).

Everything here is computed from the results frame and the depth-cost benchmark record
(``results/benchmarks/depth_cost.json``), never typed in. A run is the seeds of one name
(``cooperative``, ``cooperative-seed1``, ...); each claim compares the runs of two names.

Each claim is judged in every regime whose campaigns record (or plan) its arms
(:data:`coop_utils.results.REGIMES`): at equal epochs (the converged campaign's, the short
campaign's), and at equal training compute against a control of the other method trained until
its recorded training FLOPs match the cooperative run's of the same seed (within 5 % it is
"matched"; otherwise the regime says the ratio). Only summaries of their campaign's planned
config are judged (:func:`coop_utils.results.best_runs`). A claim whose campaign has not yet
recorded the seeds it plans is "not yet decided".

The statistics, stated once. A claim compares two arms of runs and reports the difference of
their means with its 95 % t-interval, whose degrees of freedom come from the seeds:

- *paired by seed* where the two runs of a seed share their initialisation and data order (the
  Teammates of the cooperative variants, built first and in the same order): the mean of the
  per-seed differences, ``n - 1`` degrees of freedom;
- *unpaired* elsewhere (across methods): Welch's interval, its degrees of freedom rounded down
  to a tenth.

No run is taken to vary less than the binomial standard error of its test set, which is all one
run can tell. A claim with fewer than 3 runs in an arm (3 pairs) is "inconclusive (n < 3)",
whatever its mean: with 2 seeds the 95 % multiplier is 12.7 standard errors, not 2.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from coop_utils.models import SCALING_FACTORS
from coop_utils.results import (
    CONTROLS,
    EXIT_BASELINES,
    REGIMES,
    RESULT_PROFILES,
    Results,
    Run,
    at_flops,
    best_runs,
    depth_plans,
    exit_accuracy,
    group_seeds,
    matched_exits,
    regime_plan,
    span,
    teammates,
)
from coop_utils.results import OURS_WITHIN as OURS_WITHIN  # result_plots.py reads it here
from coop_utils.results import deployed_teammate as deployed_teammate  # export.py reads it here
from coop_utils.results import matched_cost_table as matched_cost_table  # and chapters.py

HOLDS, FAILS, OPEN = "holds", "does not hold", "inconclusive"
#: fewest runs in an arm (or pairs) for a claim to be decided
MIN_RUNS = 3
#: the most seeds per arm :meth:`Difference.runs_to_decide` looks for
MOST_RUNS = 30
FEW = f"{OPEN} (n < {MIN_RUNS})"
#: the verdict of a claim one of whose arms the campaign runs with fewer than 3 seeds by design
EXPLORATORY = f"{OPEN} (exploratory: fewer than {MIN_RUNS} seeds by design)"
#: the verdict of a claim whose campaign has not yet recorded every seed it plans of an arm
PENDING = "not yet decided"


#: the claims about the parts of the method: (the arm expected to be better, the other arm,
#: the claim, the scaling factors its Teammates' accuracy is averaged over: see ``_factors``)
COMPONENTS: tuple[tuple[str, str, str, str], ...] = (
    ("cooperative", "cooperative-no-leader", "The Leader improves the Teammates", "all"),
    ("cooperative", "cooperative-no-mutual",
     "Mutual distillation between the Teammates improves them", "all"),
    ("cooperative", "cooperative-no-sfsl", "SFSL improves the shallow sub-networks", "shallow"),
    ("cooperative-sfsl-normalised", "cooperative-no-sfsl",
     "Weighting shallow sub-networks more helps them at equal total weight (control: SFSL "
     "normalised to mean 1 against no SFSL)", "shallow"),
    ("cooperative", "cooperative-sfsl-normalised",
     "A larger total weight on the sub-networks helps them (control: SFSL against SFSL "
     "normalised to mean 1)", "shallow"),
    ("cooperative", "cooperative-one-teammate",
     "A second Teammate improves the first (teammate0 against teammate0)", "all"),
    ("cooperative", "cooperative-first-gating",
     "Learned (Gumbel) gating beats keeping the first blocks", "choice"),
    ("cooperative", "cooperative-shared-bn",
     "Batch-norm statistics re-estimated per depth help the sub-networks, against the training "
     "run's moving averages (this replication's choice, not a claim of the paper)",
     "below full"),
)  # fmt: skip
#: what the depth-cost row is (its claim says so): it checks the code and replicates nothing
IMPLEMENTATION_CHECK = "an implementation check"
#: the command that records the depth-cost benchmark the first claim reads
DEPTH_COST_COMMAND = "python benchmarks/depth_cost.py --record results/benchmarks/depth_cost.json"
#: training FLOPs within this share of the cooperative run's of the same seed are "matched"
FLOPS_TOLERANCE = 0.05
COMPARABLE = "Comparable accuracy to a network trained for that depth alone, at every depth"


# --- what the claims read of a run (a results.Run) -------------------------------------------


def _mean_top1(runs: Sequence[Run], networks: Sequence[str], factors: Sequence[float]) -> float:
    """The top-1 of ``networks`` at ``factors``, mean over them and ``runs``."""
    values = [run.top1(n, s) for run in runs for n in networks for s in factors]
    return float(np.mean(values))


def _stderr(accuracies: Sequence[float], images: int) -> float:
    """Binomial standard error of their mean accuracy (%) measured on ``images`` images."""
    p = min(max(float(np.mean(accuracies)) / 100, 0.0), 1.0)
    return 100 * math.sqrt(max(p * (1 - p), 0.0025) / images)


# --- statistics -------------------------------------------------------------------------------


@functools.lru_cache
def t_critical(df: float, level: float = 0.95) -> float:
    """``t`` with ``P(|T| <= t) = level`` for Student's t with ``df`` degrees of freedom
    (12.71 at 1, 4.30 at 2, towards 1.96 as ``df`` grows; ``df`` may be fractional)."""
    if isinstance(df, bool) or not isinstance(df, int | float) or not df >= 1:
        raise ValueError(f"degrees of freedom must be a number >= 1, got {df!r}")
    if not 0 < level < 1:
        raise ValueError(f"confidence level must be in (0, 1), got {level!r}")
    return float(stats.t.ppf((1 + level) / 2, df))


@dataclass(frozen=True)
class Difference:
    """``mean(a) - mean(b)`` of two arms of runs and the half-width of its 95 % t-interval
    (``nan`` where an arm has a single run). ``spread`` is the standard deviation behind it, of
    the per-seed differences (paired) or ``sqrt(sd_a**2 + sd_b**2)``, never below the floor's;
    with one run in an arm it is the floor's alone."""

    value: float
    half_width: float
    runs: tuple[int, int]
    paired: bool
    spread: float = math.nan
    #: the standard error and degrees of freedom behind ``half_width`` (``nan``: one run)
    stderr: float = math.nan
    df: float = math.nan
    #: whether the floor, not the runs' own spread, set ``spread``
    floored: bool = False

    def half(self, level: float = 0.95) -> float:
        """The half-width of the two-sided t-interval at ``level``."""
        return t_critical(self.df, level) * self.stderr if self.df >= 1 else math.nan

    def runs_to_decide(self, above: float = 0.0) -> int | None:
        """The fewest seeds per arm at which the 95 % interval would clear ``above``, were the
        mean difference and the spread to stay as measured (the paired form, conservative for
        Welch's); ``None`` beyond :data:`MOST_RUNS`. A lower bound: at that many seeds a real
        difference of this size is found about half the time."""
        gap = abs(self.value - above)
        for n in range(MIN_RUNS, MOST_RUNS + 1):
            if t_critical(n - 1) * self.spread / math.sqrt(n) < gap:
                return n
        return None

    def to_decide(self, above: float = 0.0) -> str:
        """What would decide this difference, in words; empty when it is decided."""
        if self.verdict(above) in (HOLDS, FAILS):
            return ""
        n = self.runs_to_decide(above)
        if n is None:
            return (
                f"more than {MOST_RUNS} seeds per arm: {self.value:+.1f} pts is so close to "
                f"{above:g} that any effect is smaller than these runs' noise can show; longer "
                "training or a larger test set would make the runs less noisy"
            )
        basis = "measured"
        if self.floored:
            basis = "the test set's binomial noise (the floor), so more may be needed"
        return (
            f"at least {n} seeds per arm: there the 95 % interval would just clear {above:g} "
            f"if the difference stayed {self.value:+.1f} pts and the runs varied as {basis}"
        )

    def verdict(self, above: float = 0.0, level: float = 0.95) -> str:
        """Whether the difference exceeds ``above``: holds if the whole interval at ``level``
        does, does not hold if none of it does; :data:`FEW` with fewer than 3 runs in an arm."""
        if min(self.runs) < MIN_RUNS:
            return FEW
        half = self.half(level)
        if self.value - half > above:
            return HOLDS
        if self.value + half < above:
            return FAILS
        return OPEN

    @property
    def sample(self) -> str:
        if self.paired:
            return f"{self.runs[0]} pair{'s' if self.runs[0] != 1 else ''}"
        return f"{self.runs[0]} vs {self.runs[1]} runs"

    def __str__(self) -> str:
        """``+0.9 ± 3.4``, marked ``(floor)`` where the test set's binomial noise, not the
        runs' own spread, set the interval."""
        if not math.isfinite(self.half_width):
            return f"{self.value:+.1f}"
        return f"{self.value:+.1f} ± {self.half_width:.1f}" + " (floor)" * self.floored


def compare(
    a: Sequence[float], b: Sequence[float], floor: float, paired: bool = False
) -> Difference:
    """``mean(a) - mean(b)`` with its 95 % t-interval; no run's standard deviation is taken
    below ``floor`` (the binomial error of its test set, in points). ``paired``: ``a[i]`` and
    ``b[i]`` are the runs of one seed."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if paired and len(a) != len(b):
        raise ValueError(f"paired arms need as many runs each, got {len(a)} and {len(b)}")
    if not (len(a) and len(b)):
        raise ValueError("each arm needs at least one run")
    stderr = df = math.nan
    runs = (len(a), len(b))
    if paired:
        own = float(np.std(a - b, ddof=1)) if len(a) > 1 else 0.0
        spread = max(own, math.sqrt(2) * floor)
        if len(a) > 1:
            stderr, df = spread / math.sqrt(len(a)), len(a) - 1
        value, floored = float(np.mean(a - b)), own < spread or len(a) < 2
    else:
        own_a, own_b = (float(np.std(x, ddof=1)) if len(x) > 1 else 0.0 for x in (a, b))
        sa, sb = max(own_a, floor), max(own_b, floor)
        if min(runs) > 1:
            va, vb = sa**2 / len(a), sb**2 / len(b)
            df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
            df, stderr = math.floor(df * 10 + 1e-6) / 10, math.sqrt(va + vb)
        floored = own_a < sa or own_b < sb or min(runs) < 2
        spread, value = math.sqrt(sa**2 + sb**2), float(a.mean() - b.mean())
    half = t_critical(df) * stderr if df >= 1 else math.nan
    return Difference(value, half, runs, bool(paired), spread, stderr, df, floored)


def _paired(a_runs: list[Run], b_runs: list[Run]) -> tuple[list, str]:
    """The runs of ``a`` and ``b`` of one seed, and how the two arms are compared. Whether each
    run stands for today's code is its behaviour digest's business (the test suite checks every
    recorded one), not the pairing's."""
    by_seed = {run.seed: run for run in b_runs}
    pairs = [(run, by_seed[run.seed]) for run in a_runs if run.seed in by_seed]
    if not pairs:
        return [], "unpaired: no common seed"
    return pairs, "paired by seed"


#: how the measured column of a claim without the runs of an arm begins
NO_RUN = "no"
#: what decides a claim whose runs are not comparable
SAME_REGIME = "runs of one regime and data"
#: config keys that make a regime: runs compared in one claim share them (``epochs`` aside
#: at equal training compute)
REGIME_KEYS = (
    "dataset", "data", "arch", "epochs", "batch_size", "lr", "num_classes", "image_size",
    "momentum", "nesterov", "weight_decay", "lr_schedule", "lr_milestones", "lr_gamma",
    "train_fraction", "val_fraction", "temperature", "tau", "sampled_factors", "sampling",
    "bn_batches", "scaling_factors",
)  # fmt: skip
#: how the regime column of a claim judged at equal training compute begins
EQUAL_COMPUTE = "equal compute"


def _mismatch(*arms: list[Run], ignore: Sequence[str] = ()) -> str:
    """Why the runs of ``arms`` cannot be compared (their regimes, data or precision differ,
    ``ignore``: regime keys that differ by design), or ``""``."""
    runs = [run for arm in arms for run in arm]
    keys = [key for key in REGIME_KEYS if key not in ignore]
    for what, read in (
        ("regimes", lambda run: tuple(run.config.get(k) for k in keys)),
        ("data fingerprints", lambda run: run.summary["data_fingerprint"]),
        ("precisions", lambda run: run.summary["precision"]),
    ):
        if len({str(read(run)) for run in runs}) > 1:
            return f"not comparable: the runs' {what} differ"
    return ""


@dataclass(frozen=True)
class Regime:
    """One dataset's runs in one regime (``name``: a key of :data:`results.REGIMES`) by run
    name, and the rows of :func:`results.regime_plan` its campaigns plan; ``config`` is a
    cooperative run's config on the dataset (the backbone and grid, recorded here or not)."""

    name: str
    groups: Mapping[str, list[Run]]
    plan: pd.DataFrame
    config: Mapping[str, Any]

    def planned(self, run: str) -> int:
        """The seeds of ``run`` the regime's campaigns plan."""
        return int((self.plan["run"] == run).sum())

    def has(self, run: str | None) -> bool:
        """Whether ``run`` is recorded in the regime or planned."""
        return run is not None and (run in self.groups or self.planned(run) > 0)

    def control(self, method: str) -> str | None:
        """The run of ``method`` trained for a cooperative run's compute, if any."""
        return next((f"{method}-{c}" for c in CONTROLS if self.has(f"{method}-{c}")), None)

    def epochs(self, run: str) -> str:
        """The epochs of ``run``'s seeds, recorded, else planned: ``"24"``, ``"63–65"``."""
        found = {int(r.config["epochs"]) for r in self.groups.get(run, []) if "epochs" in r.config}
        found = found or {int(e) for e in self.plan.loc[self.plan["run"] == run, "epochs"]}
        return span(sorted(found)) if found else "?"

    def label(self, control: str | None = None) -> str:
        """The regime column of a claim: ``"converged, 24 epochs"``; against ``control``,
        ``"equal compute: 24 vs 64 epochs (control's FLOPs 1.01× the cooperative run's,
        matched)"``."""
        ours = self.epochs("cooperative")
        if control is None:
            return f"{self.name}, {ours} epochs"
        ratio = self.flops_ratio(control)
        return f"{EQUAL_COMPUTE}: {ours} vs {self.epochs(control)} epochs ({ratio})"

    def flops_ratio(self, control: str) -> str:
        """The recorded training FLOPs of ``control`` over the cooperative run's of the same
        seed, and whether every pair is matched (within :data:`FLOPS_TOLERANCE`)."""
        pairs, _ = _paired(self.groups.get(control, []), self.groups.get("cooperative", []))
        if not pairs:
            return "planned"
        ratios = [a.summary["training_flops"] / b.summary["training_flops"] for a, b in pairs]
        ratios = sorted(r for r in ratios if math.isfinite(r))
        if not ratios:
            return "training FLOPs not recorded"
        within = all(abs(r - 1) <= FLOPS_TOLERANCE for r in ratios)
        matched = "matched" if within else f"not within {100 * FLOPS_TOLERANCE:g} %"
        ratio = span([f"{r:.2f}" for r in ratios])
        return f"control's FLOPs {ratio}× the cooperative run's, {matched}"


# --- the claims -------------------------------------------------------------------------------


def _claim(claim: str, measured: str, rule: str, verdict: str, decide: str = "") -> dict[str, str]:
    """A row of the claim table; ``decide`` says what would decide a claim left open."""
    return dict(claim=claim, measured=measured, rule=rule, verdict=verdict, decide=decide)


def _unready(
    claim: str,
    rule: str,
    arms: Mapping[str, list[Run] | None],
    why: str = "",
    ignore: Sequence[str] = (),
) -> dict[str, str] | None:
    """The open row of a claim that lacks the runs of an arm (``arms``: ``{name: runs}``),
    that ``why`` leaves open, or whose arms cannot be compared (``ignore``: regime keys that
    differ by design); ``None`` when it can be judged."""
    missing = next((name for name, runs in arms.items() if not runs), None)
    if missing:
        return _claim(claim, f"{NO_RUN} {missing} run", rule, OPEN, f"the {missing} runs")
    if why:
        return _claim(claim, why, rule, OPEN)
    if mismatch := _mismatch(*arms.values(), ignore=ignore):
        return _claim(claim, mismatch, rule, OPEN, SAME_REGIME)
    return None


def _settle(regime: Regime, row: dict[str, str], arms: Sequence[str]) -> dict[str, str]:
    """A row that lacks runs of ``arms``, read with its campaigns' plan: "exploratory" where
    the plan runs fewer than 3 seeds of an arm, "not yet decided" where seeds it plans are still
    to come (which, and the command that records them)."""
    if row["verdict"] != FEW and not row["measured"].startswith(f"{NO_RUN} "):
        return row
    counts = [(arm, len(regime.groups.get(arm, [])), regime.planned(arm)) for arm in arms]
    if row["verdict"] == FEW and (few := [c for c in counts if 0 < c[2] < MIN_RUNS]):
        arm, _, planned = few[0]
        why = f"an exploratory arm: the campaign runs {planned} seed(s) of {arm}; {row['decide']}"
        return row | {"verdict": EXPLORATORY, "decide": why}
    to_come = [count for count in counts if count[1] < count[2]]
    if not to_come:
        return row
    campaigns = regime.plan.loc[regime.plan["run"].isin([c[0] for c in to_come]), "campaign"]
    commands = ", ".join(
        f"`make results{'' if name == 'campaign' else f' CAMPAIGN={name}'}`"
        for name in dict.fromkeys(campaigns)
    )
    runs = "; ".join(f"{arm}: {got} of {planned} seeds recorded" for arm, got, planned in to_come)
    return row | {"verdict": PENDING, "decide": f"the runs to come ({runs}): {commands}"}


def _depth_cost_check(
    record: Mapping[str, Any] | None, archs: Sequence[str] = ()
) -> dict[str, str]:
    """The implementation check on the depth-cost record; it decides nothing unless the record
    covers ``archs`` (the backbones of the recorded runs)."""
    claim = (
        f"Depth chosen at run time cuts the cost of inference ({IMPLEMENTATION_CHECK} on the "
        "quiet-machine benchmark, not a replicated claim)"
    )
    rule = (
        "latency at s = 0.2 relative to s = 1, batch 1, each benchmarked backbone; holds if every "
        "one is <= 60 %, does not hold if one is >= 90 %"
    )
    if record is None:
        decide = f"a quiet-machine record: `{DEPTH_COST_COMMAND}`"
        return _claim(claim, "no depth-cost benchmark record", rule, OPEN, decide)
    shallow = [row for row in record["results"]["depths"] if abs(row["s"] - 0.2) < 1e-9]
    uncovered = sorted(set(archs) - {row["arch"] for row in shallow})
    if uncovered:
        why = f"the record has no {', '.join(uncovered)} row at s = 0.2, the runs' backbone"
        return _claim(claim, why, rule, OPEN, f"a record that covers it: `{DEPTH_COST_COMMAND}`")
    if not shallow:
        return _claim(claim, "no row at s = 0.2", rule, OPEN)
    measured = "; ".join(
        f"{row['arch']}: latency {row['latency_ratio_b1']:.0%}, FLOPs {row['flops_ratio']:.0%} "
        "of full depth"
        for row in shallow
    )
    worst = max(row["latency_ratio_b1"] for row in shallow)
    verdict = FAILS if worst >= 0.9 else HOLDS if worst <= 0.6 else OPEN
    return _claim(claim, measured, rule, verdict)


def _images(runs: Sequence[Run]) -> int:
    """The test images the runs' accuracies were measured on."""
    return int(runs[0].summary["test_images"])


def _comparable_claim(regime: Regime, name: str, margin: float, level: float) -> dict[str, str]:
    """The cooperative run against the independent networks ``name`` (those of the regime's
    epochs, or its control for compute)."""
    cooperative, independent = regime.groups.get("cooperative"), regime.groups.get(name)
    rule = (
        "gap = deployed Teammate (chosen on validation) minus the independent network of the "
        "same depth plan, top-1, at each distinct plan (the factors of one plan share their "
        "networks), unpaired (different methods); holds if at every plan the 95 % t-interval "
        f"of the gap lies above -{margin:g} pts, does not hold if at some plan the interval at "
        "1 - 0.05/k (Bonferroni over the k plans) lies below"
    )
    ignore = () if name == "independent" else ("epochs",)
    if ignore:
        rule += "; the independent networks train for the cooperative run's training FLOPs"
    arms = {"cooperative": cooperative, name: independent}
    if unready := _unready(COMPARABLE, rule, arms, ignore=ignore):
        return unready
    first, reference = cooperative[0], independent[0]
    shared = [
        s for s in reference.metrics["independent"] if first.row(first.deployed, s) is not None
    ]
    plans = reference.plans("independent", shared)
    label = {  # a plan by what runs: "3 blocks (s=0.2-0.4)"
        min(factors): f"{blocks} blocks (s={min(factors):g}"
        + (f"–{max(factors):g})" if len(factors) > 1 else ")")
        for blocks, factors in plans.items()
    }
    gaps = []
    for s in sorted(label):
        ours = [run.top1(run.deployed, s) for run in cooperative]
        theirs = [run.top1("independent", s) for run in independent]
        gaps.append((s, compare(ours, theirs, _stderr(theirs, _images(independent)))))
    if not gaps:
        return _claim(COMPARABLE, "no depth in common", rule, OPEN)
    verdicts = {gap.verdict(-margin, level) for _, gap in gaps}
    if FEW in verdicts:
        verdict = FEW
    elif any(gap.verdict(-margin, 1 - (1 - level) / len(gaps)) == FAILS for _, gap in gaps):
        verdict = FAILS
    else:
        verdict = HOLDS if verdicts == {HOLDS} else OPEN
    measured = "; ".join(f"{label[s]}: {gap}" for s, gap in gaps)
    undecided = [(s, gap) for s, gap in gaps if gap.verdict(-margin) != HOLDS]
    decide = ""
    if verdict in (OPEN, FEW) and undecided:  # the plan that needs the most seeds decides
        s, gap = max(undecided, key=lambda g: g[1].runs_to_decide(-margin) or math.inf)
        decide = f"at {label[s]}, {gap.to_decide(-margin)}"
    measured = f"deployed Teammate minus independent network: {measured} pts ({gaps[0][1].sample})"
    return _claim(COMPARABLE, measured, rule, verdict, decide)


def _exit_claims(regime: Regime, method: str, name: str, level: float) -> list[dict[str, str]]:
    """The cooperative run against the exit baseline ``method`` (its runs ``name``: those of
    the regime's epochs, or its control for compute): smoother, and more accurate."""
    label, cooperative, runs = (
        EXIT_BASELINES[method],
        *map(regime.groups.get, ("cooperative", name)),
    )
    where = (
        "at each exit below its full depth and not cheaper than our shallowest depth, our top-1 "
        "at our deepest depth whose measured FLOPs do not exceed the exit's (never "
        "interpolated), mean over those exits, unpaired; holds if the 95 % t-interval lies "
        "above 0, does not hold if below"
    )
    smoother = f"Smoother accuracy degradation than {label} as depth shrinks"
    accurate = (
        f"More accurate than {label} at equal measured FLOPs (beside the drop: a weak "
        "full-depth network drops little)"
    )
    claims = (
        (smoother, f"their drop from own full depth minus ours, {where}"),
        (accurate, f"our top-1 minus theirs, {where}"),
    )
    arms, ignore = {"cooperative": cooperative, name: runs}, () if name == method else ("epochs",)
    unready = [_unready(c, r, arms, ignore=ignore) for c, r in claims]
    keys = [] if any(unready) else matched_exits(cooperative, runs, method)
    if not keys:
        why = "every exit is cheaper than our shallowest depth"
        return [row or _claim(c, why, r, OPEN) for row, (c, r) in zip(unready, claims, strict=True)]
    points = [runs[0].metrics[method][key]["flops"] for key in keys]
    our_full, ours = np.array([at_flops(run, points) for run in cooperative]).T
    their_full, theirs = np.array([exit_accuracy(run, method, keys) for run in runs]).T
    our_drop, their_drop = our_full - ours, their_full - theirs
    floor = _stderr(theirs, _images(runs))
    drop = compare(their_drop, our_drop, math.sqrt(2) * floor)
    gain = compare(ours, theirs, floor)
    exits = f"{len(keys)} exit(s) at {', '.join(f'{p / 1e6:.1f}' for p in points)} MFLOPs"
    measured = (
        f"drop from full depth: {label} exits {np.mean(their_drop):.1f} vs deployed Teammate "
        f"{np.mean(our_drop):.1f} pts: {drop} pts ({drop.sample}; {exits})",
        f"deployed Teammate {np.mean(ours):.1f} vs {label} exits {np.mean(theirs):.1f} %: "
        f"{gain} pts ({gain.sample}; {exits})",
    )
    return [
        _claim(c, m, r, d.verdict(level=level), d.to_decide())
        for (c, r), m, d in zip(claims, measured, (drop, gain), strict=True)
    ]


def _factors(kind: str, config: Mapping[str, Any]) -> tuple[float, ...]:
    """The scaling factors a component claim averages over: ``all``, ``shallow`` (up to 0.4),
    ``below full`` (plans that leave a block out), or ``choice`` (plans where a gate has
    blocks to choose between: some stage keeps more than its first block and fewer than all)."""
    grid = tuple(float(s) for s in config.get("scaling_factors") or SCALING_FACTORS)
    if kind == "all":
        return grid
    if kind == "shallow":
        return tuple(s for s in grid if s <= 0.4 + 1e-9)
    sizes, plans = depth_plans(config)
    if kind == "below full":  # resnet20 at s = 0.9 keeps every block: not a sub-network
        return tuple(s for s, plan in plans if plan != tuple(sizes))
    return tuple(s for s, plan in plans if any(1 < k < n for k, n in zip(plan, sizes, strict=True)))


def _component_claim(
    regime: Regime, better: str, worse: str, claim: str, kind: str, level: float
) -> dict[str, str]:
    factors = _factors(kind, regime.config)
    rule = (
        "top-1 of the Teammates in both runs, mean over s in "
        f"{{{', '.join(f'{s:g}' for s in factors)}}}: {better} minus {worse}, paired by seed; "
        "holds if the 95 % t-interval lies above 0, does not hold "
        "if below"
    )
    a_runs, b_runs = regime.groups.get(better), regime.groups.get(worse)
    why = "" if factors else "no scaling factor at which the two can differ"
    if unready := _unready(claim, rule, {better: a_runs, worse: b_runs}, why):
        return unready
    networks = [name for name in teammates(a_runs[0].metrics) if name in b_runs[0].metrics]
    pairs, how = _paired(a_runs, b_runs)
    a_arm, b_arm = zip(*pairs, strict=True) if pairs else (a_runs, b_runs)
    xs, ys = ([_mean_top1([run], networks, factors) for run in arm] for arm in (a_arm, b_arm))
    difference = compare(xs, ys, _stderr(xs, _images(a_runs)), paired=bool(pairs))
    network = "mean of the Teammates" if len(networks) > 1 else networks[0]
    measured = (
        f"{network}: {np.mean(xs):.1f} vs {np.mean(ys):.1f} %: {difference} pts "
        f"({difference.sample}, {how})"
    ) + _opposite_by_plan(a_arm, b_arm, networks, factors)
    return _claim(claim, measured, rule, difference.verdict(level=level), difference.to_decide())


#: how a component claim's measured column begins the per-plan means that change sign
OPPOSITE = "; opposite by plan:"


def _opposite_by_plan(
    a_arm: Sequence[Run], b_arm: Sequence[Run], networks: list[str], factors: tuple
) -> str:
    """The mean difference at each depth plan of ``factors`` (blocks kept), when those means
    change sign: an average over depths would hide a gain at one and a loss at another."""
    gaps = {
        blocks: _mean_top1(a_arm, networks, kept) - _mean_top1(b_arm, networks, kept)
        for blocks, kept in a_arm[0].plans(networks[0], factors).items()
    }
    if len(gaps) < 2 or not (min(gaps.values()) < 0 < max(gaps.values())):
        return ""
    return OPPOSITE + ",".join(f" {k} blocks {gap:+.1f}" for k, gap in sorted(gaps.items()))


def _claims(regime: Regime, margin: float, level: float) -> list[dict[str, str]]:
    """Rows of measured numbers and verdicts of one dataset's runs in one regime, each claim
    judged at ``level`` where its arms are recorded or planned: at equal epochs, the comparable
    claim, the exit baselines and the components; at equal compute, the first two against each
    method's control."""
    if not regime.has("cooperative"):
        return []
    judged = []  # (rows, their arms, whether at equal compute)
    for name in (str, regime.control):
        if regime.has(arm := name("independent")):
            judged.append(([_comparable_claim(regime, arm, margin, level)], arm, name is not str))
        for method in EXIT_BASELINES:
            if regime.has(arm := name(method)):
                judged.append((_exit_claims(regime, method, arm, level), arm, name is not str))
        if name is str:
            judged += [
                ([_component_claim(regime, *arms, level)], arms[:2], False)
                for arms in COMPONENTS
                if regime.has(arms[0]) and regime.has(arms[1])
            ]
    return [
        {"regime": regime.label(arms if compute else None)}
        | _settle(regime, row, ("cooperative", arms) if isinstance(arms, str) else arms)
        for rows, arms, compute in judged
        for row in rows
    ]


def _evidence(regime: Regime) -> str:
    cooperative = regime.groups.get("cooperative")
    if not cooperative:
        return f"no cooperative run of the {regime.name} regime recorded yet"
    first = cooperative[0].summary
    seeds = len(cooperative)
    return (
        f"{first['config']['profile']}, {first['config']['arch']}, "
        f"{seeds} seed{'s' if seeds > 1 else ''} of the method, "
        f"{int(first['test_images']):,} test images, {_digests(cooperative)}, "
        f"{first['device'] or '?'}, {str(first['date'] or '')[:10]}"
    )


def _digests(runs: Sequence[Run]) -> str:
    """The code that trained ``runs``: one code digest, or several with the behaviour digest
    that says whether they train alike (:mod:`coop_utils.behaviour`)."""
    codes = sorted({str(run.summary["code_digest"] or "unknown") for run in runs})
    if len(codes) == 1:
        return f"code digest {codes[0]}"
    behaviours = sorted({str(run.summary.get("behaviour_digest") or "unknown") for run in runs})
    alike = (
        f"one behaviour digest, {behaviours[0]}: they train alike"
        if len(behaviours) == 1 and behaviours[0] != "unknown"
        else f"behaviour digests {', '.join(behaviours)}"
    )
    return f"code digests {', '.join(codes)} ({alike})"


#: the claim table's columns; ``regime_key`` is the regime's name (a key of ``REGIMES``)
COLUMNS = ["claim", "regime", "dataset", "measured", "verdict", "decide", "rule", "evidence"]
COLUMNS += ["regime_key"]


def claim_table(
    frame: pd.DataFrame,
    margin: float = 2.0,
    depth_cost: Mapping[str, Any] | None = None,
    level: float = 0.95,
    plan: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The claims of the paper, our numbers and a verdict, per dataset with a cooperative run
    and per regime (the frame's ``regime`` column, else the short one), the converged one first,
    each interval at ``level`` (:func:`familywise` reads them stricter); ``plan``: the runs the
    regimes' campaigns plan (default: those of the frame's regimes), which adds the claims of a
    regime not yet recorded. Runs of the smoke profile get no verdict."""
    evidence = "no record"
    if depth_cost is not None:
        evidence = f"{depth_cost['device']}, commit {depth_cost['git_commit']}, "
        evidence += str(depth_cost["date"])[:10]
    frame = frame if "regime" in frame else frame.assign(regime="short")
    configs = frame.loc[frame["run"] == "cooperative"].sort_values("seed")
    configs = dict(zip(configs["dataset"], configs["config"], strict=True))  # the last seed's
    check = _depth_cost_check(depth_cost, sorted({c.get("arch", "?") for c in configs.values()}))
    rows = [{"dataset": "benchmark", **check, "regime": "", "evidence": evidence}]
    if configs and plan is None:
        profile = next(iter(configs.values())).get("profile", "")
        plan = regime_plan(profile, frame, [r for r in REGIMES if r in set(frame["regime"])])
    for dataset, config in configs.items():
        recorded = frame[frame["dataset"] == dataset].groupby("regime", sort=False)
        recorded = {name: group_seeds(rows) for name, rows in recorded}
        for name in REGIMES:
            planned = plan[plan["regime"] == name]
            regime = Regime(name, recorded.get(name, {}), planned, config)
            for row in _claims(regime, margin, level):
                if config.get("profile") not in RESULT_PROFILES:
                    row["verdict"] = f"withheld ({config.get('profile')}: not a result)"
                rows.append({"dataset": dataset, **row, "evidence": _evidence(regime)})
                rows[-1]["regime_key"] = name
    return pd.DataFrame(rows + _stable(rows), columns=COLUMNS).fillna({"regime_key": ""})


def _stable(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """The claim that the comparable verdict holds on every dataset (feature-map sizes 32 and
    64 px), per regime at equal epochs where more than one dataset is judged."""
    stable = []
    for name in REGIMES:
        comparable = {
            row["dataset"]: row
            for row in rows
            if row["claim"] == COMPARABLE and row.get("regime_key") == name
            if not row["regime"].startswith(EQUAL_COMPUTE)
        }
        if len(comparable) < 2:
            continue
        verdicts = {row["verdict"] for row in comparable.values()}
        verdict = next((v for v in (FAILS, PENDING, FEW) if v in verdicts), OPEN)
        if verdicts <= {HOLDS} or all(v.startswith("withheld") for v in verdicts):
            verdict = next(iter(verdicts))
        row = _claim(
            "Stable across datasets with different feature-map sizes (32 and 64 px)",
            "; ".join(f"{d}: {row['verdict']}" for d, row in comparable.items()),
            "the 'comparable accuracy' verdict on every dataset",
            verdict,
            "" if verdict in (HOLDS, FAILS) else "the rows above, decided",
        )
        regime = next(iter(comparable.values()))["regime"]
        stable.append({"dataset": " + ".join(comparable), **row, "regime": regime})
        stable[-1] |= {"evidence": "the rows above", "regime_key": name}
    return stable


def replication_verdicts(
    recorded: Results, margin: float = 2.0, level: float = 0.95
) -> pd.DataFrame | None:
    """The verdict table of every regime of the best recorded profile (:func:`best_runs`:
    only summaries of their campaign's planned config) and the depth-cost benchmark record,
    each claim's interval at ``level``; ``None`` if no cooperative run is recorded."""
    chosen = best_runs(recorded.frame)
    if chosen.empty:
        return None
    plan = regime_plan(chosen["profile"].iloc[0], recorded.frame)
    return claim_table(chosen, margin, recorded.benchmarks.get("depth_cost"), level, plan)


@dataclass(frozen=True)
class Family:
    """The ``claims`` that runs decide (all but the benchmark check, in every regime, their
    runs recorded or not) read as one family: Bonferroni, every interval at ``level``
    (``1 - 0.05 / claims``), up to ``widening`` times as wide with 3 seeds. ``decided``: the
    claims that hold or do not hold at 95 % (claim, regime), each with its ``verdict`` and its
    verdict at ``level`` (``strict``)."""

    claims: int
    level: float
    widening: float
    decided: pd.DataFrame


def familywise(
    recorded: Results, margin: float = 2.0, table: pd.DataFrame | None = None
) -> Family | None:
    """The verdicts of :func:`replication_verdicts` read as one :class:`Family`, or ``None``
    with none decided. ``table``: the 95 % table for these arguments, if the caller has it."""
    table = replication_verdicts(recorded, margin) if table is None else table
    if table is None:
        return None
    runs = table[(table["dataset"] != "benchmark") & ~table["verdict"].str.startswith("withheld")]
    decided = runs[runs["verdict"].isin([HOLDS, FAILS])]
    if decided.empty:
        return None
    level = 1 - 0.05 / len(runs)
    strict = replication_verdicts(recorded, margin, level).loc[decided.index, "verdict"]
    widening = t_critical(MIN_RUNS - 1, level) / t_critical(MIN_RUNS - 1)
    decided = decided[["claim", "regime", "verdict"]].assign(strict=strict)
    return Family(len(runs), level, widening, decided)


def tally(table: pd.DataFrame) -> pd.DataFrame:
    """The verdicts of a claim table counted per regime (``regime_key``, in the table's order;
    the implementation check apart): ``claims``, ``withheld``, and of those judged: holds,
    does not hold, inconclusive (of which ``n < 3`` and ``exploratory``) and not yet decided."""
    counts = {}
    for name, rows in table[table["regime_key"] != ""].groupby("regime_key", sort=False):
        verdicts = rows["verdict"].astype(str)
        counts[name] = {
            "claims": len(verdicts),
            "withheld": int(verdicts.str.startswith("withheld").sum()),
            **{kind: int((verdicts == kind).sum()) for kind in (HOLDS, FAILS, PENDING)},
            OPEN: int(verdicts.str.startswith(OPEN).sum()),
            "n < 3": int((verdicts == FEW).sum()),
            "exploratory": int((verdicts == EXPLORATORY).sum()),
        }
    return pd.DataFrame.from_dict(counts, orient="index")


def disagreements(table: pd.DataFrame) -> pd.DataFrame:
    """The claims whose verdicts differ between regimes, one of them decided (holds or does not
    hold): one row per claim and dataset, with the ``regimes`` and their ``verdicts`` in the
    table's order (regimes not yet decided, or withheld, left out)."""
    judged = table[(table["regime_key"] != "") & (table["verdict"] != PENDING)]
    judged = judged[~judged["verdict"].str.startswith("withheld")]
    rows = []
    for (claim, dataset), part in judged.groupby(["claim", "dataset"], sort=False):
        kinds = {OPEN if v.startswith(OPEN) else v for v in part["verdict"]}
        if len(kinds) > 1 and kinds & {HOLDS, FAILS}:
            rows.append((claim, dataset, list(part["regime"]), list(part["verdict"])))
    return pd.DataFrame(rows, columns=["claim", "dataset", "regimes", "verdicts"])


def component_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of a claim table about the parts of the method and the exit baselines."""
    parts = {claim for _, _, claim, _ in COMPONENTS}
    baselines = table["claim"].str.startswith(("Smoother", "More accurate"))
    return table[table["claim"].isin(parts) | baselines]
