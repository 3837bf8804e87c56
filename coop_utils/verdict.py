"""The replication verdict: each claim of the paper, our numbers, and a verdict read from the
recorded results (:mod:`coop_utils.results`).

Everything here is computed from the results frame and the depth-cost benchmark record
(``results/benchmarks/depth_cost.json``), never typed in. A run is the seeds of one name
(``cooperative``, ``cooperative-seed1``, ...); each claim compares the runs of two names.

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
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from coop_utils.models import ARCHITECTURES, SCALING_FACTORS, depth_plan
from coop_utils.results import (
    MATCHED_NAME,
    MATCHED_ROOT,
    RESULT_PROFILES,
    Results,
    Run,
    best_runs,
    group_seeds,
    planned_seeds,
    teammates,
)
from coop_utils.results import deployed_teammate as deployed_teammate  # export.py reads it here

HOLDS, FAILS, OPEN = "holds", "does not hold", "inconclusive"
#: fewest runs in an arm (or pairs) for a claim to be decided
MIN_RUNS = 3
#: the most seeds per arm :meth:`Difference.runs_to_decide` looks for
MOST_RUNS = 30
FEW = f"{OPEN} (n < {MIN_RUNS})"
#: the verdict of a claim one of whose arms the campaign runs with fewer than 3 seeds by design
EXPLORATORY = f"{OPEN} (exploratory: fewer than {MIN_RUNS} seeds by design)"


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
EXIT_BASELINES = {"byot": "BYOT", "branchynet": "BranchyNet"}
#: what the depth-cost row is (its claim says so): it checks the code and replicates nothing
IMPLEMENTATION_CHECK = "an implementation check"
#: the command that records the depth-cost benchmark the first claim reads
DEPTH_COST_COMMAND = "python benchmarks/depth_cost.py --record results/benchmarks/depth_cost.json"
#: the control this replication adds (``results.MATCHED_NAME``): independent networks trained
#: for as much compute as a cooperative run, ``MATCHED_EPOCHS`` times its epochs; a cooperative
#: step costs about 3x the steps of the independent networks of every depth together (the
#: side-by-side step benchmark and the recorded wall times agree)
MATCHED_EPOCHS = 3


# --- what the claims read of a run (a results.Run) -------------------------------------------


def _digest(run: Run) -> str:
    return str(run.summary["code_digest"] or "unknown")


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
        spread = f" ± {self.half_width:.1f}" if math.isfinite(self.half_width) else ""
        return f"{self.value:+.1f}{spread}"


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


#: what decides a claim that lacks the runs of an arm (after their name)
CAMPAIGN_RUNS = "runs of the campaign (`make results`)"
#: how the measured column of a claim without the runs of an arm begins
NO_RUN = "no"
#: what decides a claim whose runs are not comparable
SAME_REGIME = "runs of one regime and data"
#: config keys that make a regime: runs compared in one claim share them
REGIME_KEYS = ("dataset", "data", "arch", "epochs", "batch_size", "lr", "num_classes", "image_size")


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
    to_run: str = "",
) -> dict[str, str] | None:
    """The open row of a claim that lacks the runs of an arm (``arms``: ``{name: runs}``;
    ``to_run``: what records them, default the campaign), that ``why`` leaves open, or whose
    arms cannot be compared (``ignore``: regime keys that differ by design); ``None`` when it
    can be judged."""
    missing = next((name for name, runs in arms.items() if not runs), None)
    if missing:
        decide = f"the {missing} {to_run or CAMPAIGN_RUNS}"
        return _claim(claim, f"{NO_RUN} {missing} run", rule, OPEN, decide)
    if why:
        return _claim(claim, why, rule, OPEN)
    if mismatch := _mismatch(*arms.values(), ignore=ignore):
        return _claim(claim, mismatch, rule, OPEN, SAME_REGIME)
    return None


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


def matched_command(config: Mapping[str, Any]) -> str:
    """The command that trains one seed of the independent networks matched in compute to the
    cooperative run of ``config``."""
    return (
        f"python -m coop_utils train --profile {config['profile']} --dataset "
        f"{config['dataset']} --method independent --seed N --set "
        f"epochs={MATCHED_EPOCHS * int(config['epochs'])} --set "
        f"results_root=results/{MATCHED_ROOT}"
    )


def _comparable_claim(
    groups: Mapping[str, list[Run]], images: int, margin: float, matched: bool, level: float
) -> dict[str, str]:
    """The cooperative run against the independent networks, or (``matched``) against the
    compute-matched control."""
    cooperative = groups["cooperative"]
    claim = "Comparable accuracy to a network trained for that depth alone, at every depth"
    name, why, ignore, to_run = "independent", "", (), ""
    if matched:
        claim = (
            "At equal training compute, still comparable to a network trained for that depth "
            f"alone (a control this replication adds: {MATCHED_EPOCHS}x the epochs)"
        )
        name, ignore = MATCHED_NAME, ("epochs",)
        to_run = f"runs, 3 seeds of `{matched_command(cooperative[0].config)}`"
    independent = groups.get(name)
    rule = (
        "gap = deployed Teammate (chosen on validation) minus the independent network of the "
        "same depth plan, top-1, at each distinct plan (the factors of one plan share their "
        "networks), unpaired (different methods); holds if at every plan the 95 % t-interval "
        f"of the gap lies above -{margin:g} pts, does not hold if at some plan the interval at "
        "1 - 0.05/k (Bonferroni over the k plans) lies below"
    )
    if matched and independent:
        rule += f"; the independent networks train {MATCHED_EPOCHS}x the cooperative epochs"
        epochs = {run.config.get("epochs") for run in independent}
        expected = MATCHED_EPOCHS * int(cooperative[0].config.get("epochs", 0))
        if epochs != {expected}:
            why = f"not comparable: the control trained {sorted(epochs)} epochs, not {expected}"
    arms = {"cooperative": cooperative, name: independent}
    if unready := _unready(claim, rule, arms, why, ignore, to_run):
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
        gaps.append((s, compare(ours, theirs, _stderr(theirs, images))))
    if not gaps:
        return _claim(claim, "no depth in common", rule, OPEN)
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
    return _claim(claim, f"{measured} pts ({gaps[0][1].sample})", rule, verdict, decide)


def _matched_exits(cooperative: list[Run], exits: list[Run], method: str) -> list[float]:
    """The exits below their own full depth that cost at least our shallowest depth (measured
    FLOPs, every seed): only those have a depth of ours that runs within their cost."""
    cheapest = max(run.curve(run.deployed)[0][0] for run in cooperative)
    rows = exits[0].metrics[method]
    full = exits[0].full_depth(method)["flops"]
    return [key for key, row in rows.items() if cheapest <= row["flops"] < full]


def _at_flops(run: Run, points: Sequence[float]) -> tuple[float, float]:
    """A cooperative run's deployed Teammate: full-depth top-1, and the top-1 of its deepest
    depth whose measured FLOPs do not exceed each of ``points`` (what it runs within that
    cost; never interpolated between depths), averaged."""
    flops, top1 = run.curve(run.deployed)
    within = [top1[np.searchsorted(flops, point, side="right") - 1] for point in points]
    return float(top1[-1]), float(np.mean(within))


def _exit_accuracy(run: Run, method: str, keys: Sequence[float]) -> tuple[float, float]:
    """An exit network's full-depth top-1, and its top-1 at the exits ``keys``, averaged."""
    rows = run.metrics[method]
    return run.full_depth(method)["top1"], float(np.mean([rows[key]["top1"] for key in keys]))


def _matched_cost_claims(
    groups: Mapping[str, list[Run]], images: int, level: float
) -> list[dict[str, str]]:
    cooperative = groups["cooperative"]
    where = (
        "at each exit below its full depth and not cheaper than our shallowest depth, our top-1 "
        "at our deepest depth whose measured FLOPs do not exceed the exit's (never "
        "interpolated), mean over those exits, unpaired; holds if the 95 % t-interval lies "
        "above 0, does not hold if below"
    )
    rows = []
    for method, name in EXIT_BASELINES.items():
        smoother = f"Smoother accuracy degradation than {name} as depth shrinks"
        accurate = (
            f"More accurate than {name} at equal measured FLOPs (beside the drop: a weak "
            "full-depth network drops little)"
        )
        drop_rule = f"their drop from own full depth minus ours, {where}"
        gain_rule = f"our top-1 minus theirs, {where}"
        runs = groups.get(method)
        keys = _matched_exits(cooperative, runs, method) if runs else []
        claims = ((smoother, drop_rule), (accurate, gain_rule))
        unready = [_unready(c, r, {"cooperative": cooperative, method: runs}) for c, r in claims]
        if any(unready) or not keys:
            why = "every exit is cheaper than our shallowest depth"
            rows += [
                row or _claim(c, why, r, OPEN) for row, (c, r) in zip(unready, claims, strict=True)
            ]
            continue
        points = [runs[0].metrics[method][key]["flops"] for key in keys]
        our_full, ours = np.array([_at_flops(run, points) for run in cooperative]).T
        their_full, theirs = np.array([_exit_accuracy(run, method, keys) for run in runs]).T
        our_drop, their_drop = our_full - ours, their_full - theirs
        floor = _stderr(theirs, images)
        drop = compare(their_drop, our_drop, math.sqrt(2) * floor)
        gain = compare(ours, theirs, floor)
        exits = f"{len(keys)} exit(s) at {', '.join(f'{p / 1e6:.1f}' for p in points)} MFLOPs"
        measured = (
            f"drop from full depth {np.mean(their_drop):.1f} (theirs) vs "
            f"{np.mean(our_drop):.1f} pts: {drop} pts ({drop.sample}; {exits})",
            f"{np.mean(ours):.1f} vs {np.mean(theirs):.1f} %: {gain} pts ({gain.sample}; {exits})",
        )
        rows += [
            _claim(c, m, r, d.verdict(level=level), d.to_decide())
            for (c, r), m, d in zip(claims, measured, (drop, gain), strict=True)
        ]
    return rows


def depth_plans(
    config: Mapping[str, Any],
) -> tuple[tuple[int, ...], list[tuple[float, tuple[int, ...]]]]:
    """The stage sizes of the config's backbone, and each scaling factor of its grid with the
    depth plan it runs (blocks kept per stage)."""
    sizes = ARCHITECTURES[config["arch"]].stage_sizes
    grid = config.get("scaling_factors") or SCALING_FACTORS
    return sizes, [(float(s), depth_plan(sizes, float(s))) for s in grid]


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
    groups: Mapping[str, list[Run]],
    better: str,
    worse: str,
    claim: str,
    kind: str,
    images: int,
    level: float,
) -> dict[str, str]:
    config = groups["cooperative"][0].config
    factors = _factors(kind, config)
    rule = (
        "top-1 of the Teammates in both runs, mean over s in "
        f"{{{', '.join(f'{s:g}' for s in factors)}}}: {better} minus {worse}, paired by seed; "
        "holds if the 95 % t-interval lies above 0, does not hold "
        "if below"
    )
    a_runs, b_runs = groups.get(better), groups.get(worse)
    why = "" if factors else "no scaling factor at which the two can differ"
    if unready := _unready(claim, rule, {better: a_runs, worse: b_runs}, why):
        return unready
    networks = [name for name in teammates(a_runs[0].metrics) if name in b_runs[0].metrics]
    pairs, how = _paired(a_runs, b_runs)
    a_arm, b_arm = zip(*pairs, strict=True) if pairs else (a_runs, b_runs)
    xs, ys = ([_mean_top1([run], networks, factors) for run in arm] for arm in (a_arm, b_arm))
    difference = compare(xs, ys, _stderr(xs, images), paired=bool(pairs))
    measured = (
        f"{np.mean(xs):.1f} vs {np.mean(ys):.1f} %: {difference} pts ({difference.sample}, "
        f"{how}; {', '.join(networks)})"
    ) + _opposite_by_plan(a_arm, b_arm, networks, factors)
    verdict, decide = difference.verdict(level=level), difference.to_decide()
    planned = planned_seeds(config.get("profile", ""))
    exploratory = [n for n in (better, worse) if planned.get(n, MIN_RUNS) < MIN_RUNS]
    if verdict == FEW and exploratory:
        verdict = EXPLORATORY
        decide = (
            f"an exploratory arm: the campaign runs {planned[exploratory[0]]} seed(s) of "
            f"{exploratory[0]}; {decide}"
        )
    return _claim(claim, measured, rule, verdict, decide)


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


def _claims(groups: Mapping[str, list[Run]], margin: float, level: float) -> list[dict[str, str]]:
    """Rows of measured numbers and verdicts for one dataset's runs of one profile, each claim
    judged at ``level``."""
    images = int(groups["cooperative"][0].summary["test_images"])
    rows = [_comparable_claim(groups, images, margin, matched, level) for matched in (False, True)]
    rows += _matched_cost_claims(groups, images, level)
    rows += [_component_claim(groups, *component, images, level) for component in COMPONENTS]
    return rows


def _evidence(cooperative: list[Run]) -> str:
    first = cooperative[0].summary
    seeds = len(cooperative)
    digests = {_digest(run) for run in cooperative}
    digest = digests.pop() if len(digests) == 1 else "mixed"
    return (
        f"{first['config']['profile']}, {first['config']['arch']}, "
        f"{seeds} seed{'s' if seeds > 1 else ''} of the method, "
        f"{int(first['test_images']):,} test images, code digest {digest}, "
        f"{first['device'] or '?'}, {str(first['date'] or '')[:10]}"
    )


def claim_table(
    frame: pd.DataFrame,
    margin: float = 2.0,
    depth_cost: Mapping[str, Any] | None = None,
    level: float = 0.95,
) -> pd.DataFrame:
    """The claims of the paper, our measured numbers and a verdict, per dataset of a results
    frame (the runs of one profile each: :func:`best_runs`), each claim's interval at
    ``level`` (:func:`familywise` reads them stricter); ``depth_cost`` is the record of
    ``benchmarks/depth_cost.py``. Runs of the smoke profile get no verdict."""
    evidence = "no record"
    if depth_cost is not None:
        evidence = f"{depth_cost['device']}, commit {depth_cost['git_commit']}, "
        evidence += str(depth_cost["date"])[:10]
    grouped = {d: group_seeds(rows) for d, rows in frame.groupby("dataset", sort=False)}
    grouped = {dataset: groups for dataset, groups in grouped.items() if "cooperative" in groups}
    archs = [groups["cooperative"][0].config.get("arch", "?") for groups in grouped.values()]
    check = _depth_cost_check(depth_cost, archs)
    rows = [{"dataset": "benchmark", **check, "evidence": evidence}]
    comparable = {}
    for dataset, groups in grouped.items():
        profile = groups["cooperative"][0].config["profile"]
        evidence = _evidence(groups["cooperative"])
        for row in _claims(groups, margin, level):
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
            verdict = FEW if FEW in verdicts else OPEN
        row = _claim(
            "Stable across datasets with different feature-map sizes (32 and 64 px)",
            "; ".join(f"{d}: {v}" for d, v in comparable.items()),
            "the 'comparable accuracy' verdict on every dataset",
            verdict,
            "" if verdict in (HOLDS, FAILS) else "the rows above, decided",
        )
        rows.append({"dataset": " + ".join(comparable), **row, "evidence": "the rows above"})
    columns = ["claim", "dataset", "measured", "verdict", "decide", "rule", "evidence"]
    return pd.DataFrame(rows, columns=columns)


def replication_verdicts(
    recorded: Results, margin: float = 2.0, level: float = 0.95
) -> pd.DataFrame | None:
    """The verdict table from the best recorded profile of each dataset (:func:`best_runs`)
    and the depth-cost benchmark record, each claim's interval at ``level``; ``None`` if no
    dataset has a recorded cooperative run."""
    chosen = best_runs(recorded.frame)
    depth_cost = recorded.benchmarks.get("depth_cost")
    return None if chosen.empty else claim_table(chosen, margin, depth_cost, level)


@dataclass(frozen=True)
class Family:
    """The ``claims`` that runs decide (all but the benchmark check, their runs recorded or
    not) read as one family: Bonferroni, every interval at ``level`` (``1 - 0.05 / claims``),
    up to ``widening`` times as wide with 3 seeds. ``decided``: the claims that hold or do not
    hold at 95 %, each with its ``verdict`` and its verdict at ``level`` (``strict``)."""

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
    return Family(len(runs), level, widening, decided[["claim", "verdict"]].assign(strict=strict))


def tally(table: pd.DataFrame) -> str:
    """One line counting the verdicts of a claim table; the implementation check is counted
    apart, as it replicates no claim."""
    checks = table["claim"].astype(str).str.contains(IMPLEMENTATION_CHECK, regex=False)
    verdicts = table.loc[~checks, "verdict"].astype(str)
    judged = verdicts[~verdicts.str.startswith("withheld")]
    check = "".join(f" Implementation check: {v}." for v in table.loc[checks, "verdict"])
    return (
        f"Claims judged: {len(judged)} ({len(verdicts) - len(judged)} withheld). Holds: "
        f"{(judged == HOLDS).sum()}; does not hold: {(judged == FAILS).sum()}; inconclusive: "
        f"{judged.str.startswith(OPEN).sum()}, of which n < {MIN_RUNS}: {(judged == FEW).sum()}"
        f" and exploratory by design: {(judged == EXPLORATORY).sum()}.{check}"
    )


def component_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of a claim table about the parts of the method and the exit baselines."""
    parts = {claim for _, _, claim, _ in COMPONENTS}
    baselines = table["claim"].str.startswith(("Smoother", "More accurate"))
    return table[table["claim"].isin(parts) | baselines]


def likely_reason(claim: str, verdict: str, decide: str, measured: str) -> str:
    """Which likely reason a claim not shown to hold has, the first that applies: "Missing"
    (its runs are not recorded), "Regime" (not comparable), "Opposite" (the effect changes
    sign with depth), "Null" (too close to zero for any number of seeds), "Seeds" (n < 3),
    "Exploratory", "Exits" (against an exit baseline), "Depth", "Comparable", "At equal
    training compute" (the claims of those names), else "Component"."""
    if re.fullmatch(rf"{NO_RUN} \S+ run", measured):
        return "Missing"
    if decide == SAME_REGIME:
        return "Regime"
    if OPPOSITE in measured:
        return "Opposite"
    if decide.startswith(f"more than {MOST_RUNS} seeds"):
        return "Null"
    if verdict == FEW:
        return "Seeds"
    if verdict == EXPLORATORY:
        return "Exploratory"
    if claim.startswith(("Smoother", "More accurate")):
        return "Exits"
    for key in ("Depth", "Comparable", "At equal training compute"):
        if claim.startswith(key):
            return key
    return "Component"


#: the matched-cost table's column of our accuracy
OURS_WITHIN = "ours within its FLOPs (%)"


def matched_cost_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Every exit of the exit baselines beside the deployed Teammate within the exit's measured
    FLOPs (its deepest depth that costs no more), means over seeds; the exits not compared are
    listed with the reason."""
    groups, rows = group_seeds(frame), []
    cooperative = groups.get("cooperative")
    for method, name in EXIT_BASELINES.items():
        runs = groups.get(method)
        if not cooperative or not runs:
            continue
        inside = _matched_exits(cooperative, runs, method)
        exits = runs[0].metrics[method]
        full = runs[0].full_depth(method)["flops"]
        for key, row in sorted(exits.items(), key=lambda i: i[1]["flops"]):
            theirs = np.mean([run.metrics[method][key]["top1"] for run in runs])
            ours, compared = math.nan, "no: cheaper than our shallowest"
            if key in inside:
                ours = np.mean([_at_flops(run, [row["flops"]])[1] for run in cooperative])
                compared = "yes"
            elif row["flops"] >= full:
                compared = "no: full depth"
            rows.append((name, float(key), row["flops"] / 1e6, theirs, ours, compared))
    columns = ["method", "exit (share of blocks)", "MFLOPs", "exit top-1 (%)"]
    table = pd.DataFrame(rows, columns=[*columns, OURS_WITHIN, "compared"])
    table["gap (pts)"] = table[OURS_WITHIN] - table["exit top-1 (%)"]
    return table.round(2)
