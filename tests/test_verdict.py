"""The replication verdict: claims judged from result files by 95 % t-intervals, never by
construction (the synthetic-null test), and inconclusive where fewer than 3 seeds stand behind
them."""

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from coop_utils import book, replication, results, training_cost, verdict
from coop_utils.config import load_config
from coop_utils.models import SCALING_FACTORS, depth_plan
from coop_utils.runs import results_path

VARIANTS = tuple(
    name for arm in verdict.COMPONENTS for name in arm[:2] if name != "cooperative"
)  # cooperative-no-leader, ..., cooperative-shared-bn
BLOCKS = {f"{s:.4g}": sum(depth_plan((3, 3, 3), s)) for s in SCALING_FACTORS}  # resnet20: 3, 6, 9
BYOT = {"0.3333": 3, "0.6667": 6, "1": 9}
BRANCHYNET = {f"{b / 9:.4g}": b for b in range(2, 10)}  # its 2-block exit is below our range
HEAD_FLOPS = 2e6  # an exit head's cost, on top of its blocks


def flops(blocks, head=0.0):
    return 1e6 + 1e7 * blocks + (head if blocks < 9 else 0.0)


def base(cost):
    """The accuracy (%) every method reaches at this cost when nothing tells them apart."""
    return 30 + 40 * (cost - 1e6) / 9e7


def by_depth(blocks, shift=0.0, head=0.0, tilt=0.0):
    """Rows of one network: ``base`` at each depth's FLOPs, plus ``shift``, plus ``tilt``
    points per block left out."""
    rows = {}
    for key, count in blocks.items():
        top1 = base(flops(count, head)) + shift + tilt * (9 - count)
        rows[key] = {"top1": top1, "top5": 99.0, "val_top1": top1, "flops": int(flops(count, head))}
        rows[key] |= {"latency_ms": 10.0, "active_blocks": count}
    return rows


def summary(metrics, seed=0, profile="preview", digest=None):
    config = {"profile": profile, "dataset": "cifar100", "data": "real", "arch": "resnet20"}
    config |= {"epochs": 6}
    found = {"config": config | {"seed": seed}, "metrics": metrics, "device": "test CPU"}
    return found | {"date": "2026-01-02T00:00"} | ({"code_digest": digest} if digest else {})


def timed_campaign(runs):
    """Give ``runs`` campaign wall times (a cooperative seed 30 min, others 6) and mark the
    shared-bn runs as re-evaluations of their cooperative run, in place."""
    for name, found in runs.items():
        found["wall_time_s"] = 1800.0 if name.startswith("cooperative") else 360.0
        if name.startswith("cooperative-shared-bn"):  # re-evaluates the cooperative run
            found["config"] = found["config"] | {"bn_stats": "shared", "variant": "shared-bn"}
    for name in [n for n in runs if n.startswith("cooperative") and "shared-bn" not in n]:
        runs[name]["config"] = runs[name]["config"] | {"bn_stats": "per_depth", "variant": ""}


def summaries(seeds=3, shift=lambda name, seed: 0.0, tilt=None, profile="preview", digest=None):
    """Every arm of one dataset with ``seeds`` seeds; run ``(name, seed)`` is the base curve
    plus ``shift(name, seed)`` (and ``tilt[name]`` points per block left out)."""
    tilt = tilt or {}
    found = {}
    for seed in range(seeds):
        runs = {
            name: {
                network: by_depth(BLOCKS, shift(name, seed), tilt=tilt.get(name, 0.0))
                for network in ("teammate0",) + (() if "one-teammate" in name else ("teammate1",))
            }
            for name in ("cooperative", *VARIANTS)
        }
        runs["independent"] = {"independent": by_depth(BLOCKS, shift("independent", seed))}
        matched = by_depth(BLOCKS, shift(results.MATCHED_NAME, seed))
        runs[results.MATCHED_NAME] = {"independent": matched}  # 3x the epochs: below
        for name, exits in (("byot", BYOT), ("branchynet", BRANCHYNET)):
            runs[name] = {name: by_depth(exits, shift(name, seed), HEAD_FLOPS, tilt.get(name, 0))}
        for name, metrics in runs.items():
            found[name + (f"-seed{seed}" if seed else "")] = summary(metrics, seed, profile, digest)
        control = found[results.MATCHED_NAME + (f"-seed{seed}" if seed else "")]
        control["config"] = control["config"] | {"epochs": 18}
    return found


def jitter(name, seed):
    """A little spread between seeds, different for every arm."""
    return 0.3 * ((seed + len(name)) % 3 - 1)


def claims(found, **options):
    """The claim table of ``{file name: summary}``."""
    return verdict.claim_table(results.frame_of(found), **options)


def key(claim, regime):
    """A claim's first three words; ``"At equal training"`` (and ``"equal compute: "`` before
    an exit baseline's) for a claim judged at equal training compute."""
    words = " ".join(claim.split()[:3])
    if not regime.startswith(verdict.EQUAL_COMPUTE):
        return words
    return "At equal training" if claim == verdict.COMPARABLE else f"equal compute: {words}"


def verdicts(table):
    keys = [key(c, r) for c, r in zip(table["claim"], table["regime"], strict=True)]
    return dict(zip(keys, table["verdict"], strict=True))


def at_equal_epochs(table):
    """The rows of a claim table judged at equal epochs, by claim."""
    return table[~table["regime"].str.startswith(verdict.EQUAL_COMPUTE)].set_index("claim")


RECORD = {
    "device": "quiet CPU",
    "git_commit": "abc1234",
    "date": "2026-01-01T00:00",
    "results": {"depths": [{"arch": "resnet20", "s": 0.2, "flops_ratio": 0.33}]},
}


def record(latency_ratio):
    row = RECORD["results"]["depths"][0] | {"latency_ratio_b1": latency_ratio}
    return RECORD | {"results": {"depths": [row]}}


def test_t_critical_values_match_the_tables():
    assert verdict.t_critical(4) == pytest.approx(2.7764451, abs=1e-7)
    assert verdict.t_critical(30) == pytest.approx(2.0422725, abs=1e-7)
    assert verdict.t_critical(10_000) == pytest.approx(1.9602012, abs=1e-7)
    assert verdict.t_critical(2.5) == pytest.approx(3.5746548, abs=1e-7)  # Welch's are fractional
    assert verdict.t_critical(2, 0.99) == pytest.approx(9.9248432, abs=1e-7)
    with pytest.raises(ValueError, match="a number >= 1, got 0"):
        verdict.t_critical(0)
    with pytest.raises(ValueError, match=r"level must be in \(0, 1\), got 1"):
        verdict.t_critical(3, 1)


@pytest.mark.parametrize("level", [0.9, 0.95, 0.99, 1 - 0.05 / 13])
def test_t_critical_matches_the_closed_forms_at_one_and_two_degrees_of_freedom(level):
    # Student's t with 1 degree of freedom is Cauchy's; with 2, P(|T| <= t) = t / sqrt(2 + t^2)
    cauchy, two = math.tan(math.pi * level / 2), level * math.sqrt(2 / (1 - level**2))
    assert verdict.t_critical(1, level) == pytest.approx(cauchy, rel=1e-12)
    assert verdict.t_critical(2, level) == pytest.approx(two, rel=1e-12)


def test_intervals_take_their_degrees_of_freedom_from_the_seeds():
    # unpaired, spreads 1 and 0: Welch gives 2 degrees of freedom, t = 4.303, SE = sqrt(1/3)
    unpaired = verdict.compare([1, 2, 3], [0, 0, 0], floor=0.0)
    assert unpaired.value == 2.0
    assert unpaired.half_width == pytest.approx(4.303 * 3**-0.5, rel=1e-3)
    # paired: differences 1, 2, 3, so 2 degrees of freedom and the same interval
    paired = verdict.compare([1, 2, 3], [0, 0, 0], floor=0.0, paired=True)
    assert paired.half_width == pytest.approx(unpaired.half_width)
    # no spread at all: the floor stands in for each run's, 4 degrees of freedom
    floored = verdict.compare([1, 1, 1], [0, 0, 0], floor=0.25)
    assert floored.half_width == pytest.approx(2.776 * (2 * 0.25**2 / 3) ** 0.5, rel=1e-3)
    assert floored.verdict() == "holds" and floored.verdict(above=2.0) == "does not hold"
    # the table marks an interval the floor set, not the runs' own spread
    assert str(floored) == f"+1.0 ± {floored.half_width:.1f} (floor)"
    assert str(unpaired) == f"+2.0 ± {unpaired.half_width:.1f}"
    # two seeds a side: whatever the mean, no verdict
    assert verdict.compare([90, 91], [10, 11], floor=0.5).verdict() == "inconclusive (n < 3)"
    with pytest.raises(ValueError, match="as many runs each"):
        verdict.compare([1, 2], [1], floor=0.0, paired=True)


def test_claims_that_hold_and_fail_are_judged_so_from_the_numbers():
    def shift(name, seed):
        points = {"cooperative": 5.0, "cooperative-no-mutual": 10.0}
        points["cooperative-sfsl-normalised"] = 2.5
        return points.get(name, 0.0) + jitter(name, seed)

    table = claims(summaries(shift=shift), depth_cost=record(0.27))
    got = verdicts(table)
    assert got["Depth chosen at"] == "holds"  # the benchmark: 27 % of the time at s = 0.2
    assert got["Comparable accuracy to"] == "holds"  # 5 points above the independent networks
    accurate = table.set_index("claim")["verdict"].filter(like="More accurate than")
    # BYOT's exits sit at our depths (3 and 6 blocks): 5 points ahead at no greater cost.
    # BranchyNet has an exit at every block; between two of our three depths we must run the
    # shallower one, 5 points ahead at its own cost but behind a deeper exit: no verdict
    assert accurate.tolist() == ["holds", "inconclusive"]
    smoother = table.set_index("claim")["verdict"].filter(like="Smoother accuracy")
    # BYOT: the same drop as ours at its exits; BranchyNet: at its exits between our depths we
    # run the shallower depth and so drop further within the same cost
    assert smoother.tolist() == ["inconclusive", "does not hold"]
    assert got["The Leader improves"] == "holds"
    assert got["Mutual distillation between"] == "does not hold"  # without it: 5 points better
    assert got["SFSL improves the"] == "holds"
    assert got["Weighting shallow sub-networks"] == "holds"  # normalised 2.5 above no SFSL
    assert got["A larger total"] == "holds"  # and the full weights 2.5 above normalised
    assert got["A second Teammate"] == "holds"
    assert got["Learned (Gumbel) gating"] == "holds"
    assert got["Batch-norm statistics re-estimated"] == "holds"
    evidence = table.set_index("dataset")["evidence"]["cifar100"].iloc[0]
    assert evidence.startswith("preview, resnet20, 3 seeds of the method, 10,000 test images")
    assert "code digest unknown" in evidence
    # seeds trained by code of two digests that trains alike (one behaviour digest) say so
    mixed = summaries()
    for name, run in mixed.items():
        run |= {"code_digest": "a1" if name.endswith("seed1") else "b2", "behaviour_digest": "c3"}
    evidence = claims(mixed).set_index("dataset")["evidence"]["cifar100"].iloc[0]
    assert "code digests a1, b2 (one behaviour digest, c3: they train alike)" in evidence
    mixed["cooperative-seed2"]["behaviour_digest"] = "d4"
    evidence = claims(mixed).set_index("dataset")["evidence"]["cifar100"].iloc[0]
    assert "code digests a1, b2 (behaviour digests c3, d4)" in evidence

    worse = summaries(shift=lambda name, seed: -5.0 * (name == "cooperative") + jitter(name, seed))
    got = verdicts(claims(worse))
    assert got["Comparable accuracy to"] == "does not hold"  # 5 points below: beyond 2
    assert got["More accurate than"] == "does not hold"
    assert got["The Leader improves"] == "does not hold"


def test_smoother_degradation_is_the_drop_within_the_exits_measured_flops():
    steeper = {"byot": -2.0, "branchynet": -2.0}  # exits lose 2 points per block left out
    table = claims(summaries(shift=jitter, tilt=steeper))
    rows = table.set_index("claim")
    smoother = rows.loc["Smoother accuracy degradation than BYOT as depth shrinks"]
    assert smoother["verdict"] == "holds"
    # both BYOT exits below full depth are compared, at their own measured FLOPs (with heads)
    assert "2 exit(s) at 33.0, 63.0 MFLOPs" in smoother["measured"]
    # absolute accuracy stands beside it: our 3- and 6-block depths (31 and 61 MFLOPs, the
    # deepest within the exits' 33 and 63) at 43.3 and 56.7 %, against BYOT's 32.2 and 51.6 %
    accurate = rows.loc[rows.index.str.startswith("More accurate than BYOT")].iloc[0]
    assert accurate["measured"].startswith("deployed Teammate 50.0 vs BYOT exits 41.9 %: +8.1")


def test_exits_meet_our_deepest_depth_within_their_flops_never_an_interpolation():
    found = summaries(shift=jitter)
    reference = claims(found).set_index("claim")["measured"]
    for run in (r for name, r in found.items() if name.startswith("branchynet")):
        run["metrics"]["branchynet"]["0.2222"]["top1"] = 0.0  # 2 blocks: cheaper than ours
    table = claims(found).set_index("claim")["measured"]
    assert table.equals(reference)  # the exit cheaper than our shallowest depth changed nothing
    matched = verdict.matched_cost_table(results.frame_of(found))
    matched = matched.set_index(["method", "exit (share of blocks)"])
    assert matched.loc[("BranchyNet", 0.22), "compared"] == "no: cheaper than our shallowest"
    assert matched.loc[("BranchyNet", 1.0), "compared"] == "no: full depth"
    # BYOT's 3-block exit costs 33 MFLOPs with its head: ours is our deepest depth within that,
    # 3 blocks at 31 MFLOPs (base(31e6) = 43.3 %), not a point interpolated towards 6 blocks
    # (base(33e6) = 44.2 %), which no depth of ours runs at
    ours = matched.loc[("BYOT", 0.33), verdict.OURS_WITHIN]
    assert ours == pytest.approx(43.3, abs=0.05)
    # BranchyNet's 8-block exit (81 + 2 MFLOPs) meets our 6-block depth, not our full one
    assert matched.loc[("BranchyNet", 0.89), verdict.OURS_WITHIN] == pytest.approx(56.7, abs=0.05)


def test_runs_of_different_regimes_or_data_are_not_compared():
    found = summaries(shift=jitter)
    for name, run in found.items():
        if name.startswith("independent"):
            run["config"] = run["config"] | {"epochs": 12}
        if name.startswith("cooperative-no-leader"):
            run["data_fingerprint"] = "other"
    rows = at_equal_epochs(claims(found))
    comparable = rows.loc[verdict.COMPARABLE]
    assert comparable["verdict"] == "inconclusive"
    assert comparable["measured"] == "not comparable: the runs' regimes differ"
    leader = rows.loc["The Leader improves the Teammates"]
    assert leader["measured"] == "not comparable: the runs' data fingerprints differ"
    assert rows.loc["Mutual distillation between the Teammates improves them", "verdict"] != (
        "inconclusive (n < 3)"
    )  # the other claims still judged


def test_comparable_is_judged_per_plan_and_fails_only_beyond_bonferroni():
    # resnet20: nine factors, three plans; the gap is judged once per plan
    table = claims(summaries(shift=jitter)).set_index("claim")
    measured = table.loc[table.index.str.startswith("Comparable"), "measured"].iloc[0]
    assert measured.count(" blocks (s=") == 3
    assert measured.startswith("deployed Teammate minus independent network: 3 blocks (s=0.2–0.4)")
    # a gap whose 95 % interval lies below -2 but whose 1 - 0.05/3 interval does not
    gap = verdict.compare([37.0, 38.0, 39.0], [43.0, 43.0, 43.0], floor=0.0)
    assert gap.verdict(-2.0) == "does not hold"
    assert gap.verdict(-2.0, level=1 - 0.05 / 3) == "inconclusive"
    assert gap.half(1 - 0.05 / 3) > gap.half_width == pytest.approx(gap.half(), rel=1e-9)


def test_per_depth_batch_norm_is_judged_on_sub_networks_only():
    row = (
        claims(summaries(shift=jitter))
        .set_index("claim")
        .loc[lambda frame: frame.index.str.startswith("Batch-norm statistics re-estimated")]
        .iloc[0]
    )
    assert "{0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8}" in row["rule"]  # s = 0.9 keeps all 9 blocks


def test_fewer_than_three_seeds_are_inconclusive_whatever_the_mean():
    def shift(name, seed):
        return 30.0 * (name == "cooperative") + jitter(name, seed)

    table = claims(summaries(seeds=2, shift=shift))
    judged = table[table["dataset"] == "cifar100"]
    # the preview campaign runs first-gating and sfsl-normalised once: exploratory by design
    exploratory = judged["claim"].str.contains("gating|normalised")
    assert exploratory.sum() == 3
    assert (judged[exploratory]["verdict"] == verdict.EXPLORATORY).all()
    # it plans 3 seeds of the others: 2 recorded, the claim is not yet decided
    assert (judged[~exploratory]["verdict"] == verdict.PENDING).all()
    assert judged[~exploratory]["decide"].str.contains(": 2 of 3 seeds recorded").all()
    assert not table["rule"].str.contains("n < 3").any()  # only a verdict says it
    # at a profile without a campaign, whatever the mean: n < 3
    full = summaries(seeds=2, shift=shift, profile="full")
    judged = claims(full).iloc[1:]
    assert (judged["verdict"] == "inconclusive (n < 3)").all()


def test_a_claim_on_an_arm_the_campaign_runs_once_is_labelled_exploratory():
    planned = results.planned_seeds("preview")
    assert planned["cooperative"] == 3 and planned["cooperative-no-sfsl"] == 3
    assert planned["cooperative-first-gating"] == 1
    assert results.planned_seeds("smoke") == {} == results.planned_seeds("no-such-profile")
    runs = {
        name: run
        for name, run in summaries(seeds=3).items()
        if not (name.startswith("cooperative-first-gating-seed"))
    }
    row = verdicts_rows(claims(runs))["Learned (Gumbel) gating"]
    assert row["verdict"] == verdict.EXPLORATORY
    assert "runs 1 seed(s) of cooperative-first-gating" in row["decide"]
    assert verdict.tally(claims(runs)).loc["short", "exploratory"] == 1
    # at a profile without a campaign, a missing seed is only "n < 3"
    full = {
        name: run | {"config": run["config"] | {"profile": "full"}} for name, run in runs.items()
    }
    row = verdicts_rows(claims(full))["Learned (Gumbel) gating"]
    assert row["verdict"] == verdict.FEW


def verdicts_rows(table):
    return {key(row["claim"], row["regime"]): row for row in table.to_dict("records")}


def test_an_open_claim_says_how_many_seeds_would_decide_it():
    # differences 1, 2, 3: mean 2, sd 1; t(2) / sqrt(3) = 2.48 > 2 but t(3) / 2 = 1.59 < 2
    open_ = verdict.compare([1, 2, 3], [0, 0, 0], floor=0.0, paired=True)
    assert open_.verdict() == "inconclusive" and open_.runs_to_decide() == 4
    assert open_.to_decide().startswith(
        "at least 4 seeds per arm: there the 95 % interval would just clear 0 if the difference "
        "stayed +2.0 pts and the runs varied as measured"
    )
    assert open_.to_decide(above=1.9).startswith("more than 30 seeds per arm")
    assert verdict.compare([5, 6, 7], [0, 0, 0], floor=0.0, paired=True).to_decide() == ""
    # one run a side: only the test set's noise is known (sqrt(2) * 1 for a paired difference)
    single = verdict.compare([3.0], [0.0], floor=1.0, paired=True)
    assert single.spread == pytest.approx(2**0.5) and single.runs_to_decide() == 4
    assert "the test set's binomial noise (the floor)" in single.to_decide()
    # unpaired: the two arms' spreads add
    assert verdict.compare([1, 2, 3], [5, 5, 5], floor=0.5).spread == pytest.approx(1.25**0.5)

    table = claims(summaries(seeds=2, shift=jitter, profile="full"))
    judged = table[table["dataset"] == "cifar100"].set_index("claim")
    assert judged["decide"].str.contains("seeds per arm").all()
    missing = {k: v for k, v in summaries().items() if not k.startswith("byot")}
    table = claims(missing).set_index("claim")
    smoother = table.loc["Smoother accuracy degradation than BYOT as depth shrinks"]
    assert smoother["verdict"] == verdict.PENDING and smoother["measured"] == "no byot run"
    assert smoother["decide"] == "the runs to come (byot: 0 of 3 seeds recorded): `make results`"
    decided = table[table["verdict"].isin(["holds", "does not hold"])]
    assert not decided.empty and (decided["decide"] == "").all()


def test_the_committed_results_decide_a_claim_only_with_three_runs_per_arm():
    import re

    committed = book.REPO_ROOT / "results"
    table = verdict.replication_verdicts(results.load(committed))
    if not list(committed.glob("*/*/cooperative*.json")):  # the campaign has not recorded a run
        assert table is None
        return
    assert table.iloc[0]["dataset"] == "benchmark"  # read from results/benchmarks/depth_cost.json
    judged = table[table["dataset"] != "benchmark"]
    assert len(judged) >= 8
    for measured, verdict_ in zip(judged["measured"], judged["verdict"], strict=True):
        # the sample in parentheses, "(3 pairs" or "(3 vs 3 runs", not "7.2 vs deployed"
        samples = re.findall(r"\((\d+) pairs?\b|\((\d+) vs (\d+) runs", measured)
        counts = [int(n) for sample in samples for n in sample if n]
        if verdict_ in (verdict.HOLDS, verdict.FAILS):
            assert counts and min(counts) >= 3, measured
        if counts and min(counts) < 3:
            assert verdict_ != verdict.HOLDS and verdict_ != verdict.FAILS


def test_pairing_needs_a_shared_seed_only():
    """Runs of one seed pair up whatever their code bytes: each run's validity is decided by its
    behaviour digest (tests/test_behaviour.py), not by comparing two arms' code."""

    def shift(name, seed):  # seeds far apart, but each variant 2 points below its own seed
        return 10.0 * seed - 2.0 * (name == "cooperative-no-leader")

    found = summaries(shift=shift, digest="abc")
    for name, run in found.items():
        if name.startswith("cooperative-no-leader"):
            run["code_digest"] = "def"  # other bytes, and still a pair
    leader = claims(found).set_index("claim")
    leader = leader.loc["The Leader improves the Teammates"]
    assert leader["verdict"] == "holds" and "(3 pairs, paired by seed)" in leader["measured"]
    for name, run in found.items():
        if name.startswith("cooperative-no-leader"):
            run["config"]["seed"] += 10  # no seed in common: the arms cannot pair
    leader = claims(found).set_index("claim")
    leader = leader.loc["The Leader improves the Teammates"]
    assert leader["verdict"] == "inconclusive"  # the 10-point spread between seeds swamps it
    assert "3 vs 3 runs, unpaired: no common seed" in leader["measured"]


def test_the_second_teammate_claim_compares_teammate0_with_teammate0():
    found = summaries(shift=jitter)
    for name, run in found.items():
        if name.startswith("cooperative") and not name.startswith("cooperative-"):
            for row in run["metrics"]["teammate1"].values():
                row["top1"] -= 20  # a weak second Teammate drags the mean down
        if name.startswith("cooperative-one-teammate"):
            for row in run["metrics"]["teammate0"].values():
                row["top1"] -= 3
    row = (
        claims(found)
        .set_index("claim")
        .loc["A second Teammate improves the first (teammate0 against teammate0)"]
    )
    assert row["verdict"] == "holds" and row["measured"].startswith("teammate0: ")


def test_learned_gating_is_judged_only_where_the_plans_can_choose():
    found = summaries(shift=jitter)
    for name, run in found.items():
        if name.startswith("cooperative-first-gating"):
            for network in run["metrics"].values():
                for key in ("0.2", "0.3", "0.4", "0.9", "1"):  # 1 or 3 blocks a stage: no choice
                    network[key]["top1"] -= 20
    row = (
        claims(found)
        .set_index("claim")
        .loc["Learned (Gumbel) gating beats keeping the first blocks"]
    )
    assert "{0.5, 0.6, 0.7, 0.8}" in row["rule"]
    assert row["verdict"] == "inconclusive"


def test_depth_cost_is_an_implementation_check_on_the_benchmark_record():
    found = summaries()  # every run measured the same latency at every depth: ignored
    for latency, expected in ((0.27, "holds"), (0.95, "does not hold"), (0.75, "inconclusive")):
        table = claims(found, depth_cost=record(latency))
        check = table.iloc[0]
        assert check["verdict"] == expected and "not a replicated claim" in check["claim"]
        assert check["evidence"] == "quiet CPU, commit abc1234, 2026-01-01"
    assert claims(found).iloc[0]["verdict"] == "inconclusive"
    # a record without the runs' backbone decides nothing, however fast its rows
    other = record(0.27)
    other["results"]["depths"][0]["arch"] = "resnet56"
    check = claims(found, depth_cost=other).iloc[0]
    assert check["verdict"] == "inconclusive" and "no resnet20 row" in check["measured"]
    assert "benchmarks/depth_cost.py --record" in check["decide"]


def synthetic_rates(effect, draws, sigma=2.0, seed=0):
    """How often each claim says "holds" over ``draws`` generated sets of summaries: every run's
    accuracy is the base curve plus seed noise of SD ``sigma`` (half of its variance shared by
    the runs of one seed across the cooperative variants, which share initialisation and data
    order), plus ``effect`` SDs for the full cooperative method."""
    rng = np.random.default_rng(seed)
    holds = {}
    for _ in range(draws):
        shared = rng.normal(0.0, sigma / 2**0.5, size=3)
        noise = {}

        def shift(name, seed, shared=shared, noise=noise):
            if (name, seed) not in noise:
                own = name.startswith("cooperative")
                scale = sigma / 2**0.5 if own else sigma
                noise[name, seed] = rng.normal(0.0, scale) + (shared[seed] if own else 0.0)
            return noise[name, seed] + effect * sigma * (name == "cooperative")

        table = claims(summaries(shift=shift))
        for claim, result in zip(table["claim"], table["verdict"], strict=True):
            holds[claim] = holds.get(claim, 0) + (result == "holds") / draws
    return holds


def test_the_rule_holds_rarely_on_a_null_and_mostly_on_a_three_sd_effect():
    """Summaries in which cooperative learning equals the baselines plus seed noise: no
    difference claim may say "holds" in more than 5 % of the draws. With a true effect of 3 SDs
    and 3 seeds per arm, the claims that the effect makes true hold in at least half of them."""
    draws = 400
    null, effect = synthetic_rates(0.0, draws), synthetic_rates(3.0, draws, seed=1)
    comparable = ("Comparable", "At equal training", "Depth", "Stable")  # within a margin
    differences = [c for c in null if not c.startswith(comparable)]
    print(f"\nfalse 'holds' under the null ({draws} draws):")
    for claim in differences:
        print(f"  {null[claim]:6.1%}  {claim}")
    print(f"'holds' at a 3-SD effect, 3 seeds per arm ({draws} draws):")
    for claim in differences:
        print(f"  {effect[claim]:6.1%}  {claim}")
    assert all(null[claim] <= 0.05 for claim in differences)
    # BYOT's exits sit at our depths; BranchyNet's sit at every block, and between our three
    # depths we run the shallower one, so a uniform 3-SD gain leaves it under a point on
    # average there: not a claim the effect makes true
    made_true = [c for c in differences if c.startswith("More accurate than BYOT")]
    made_true += [claim for better, _, claim, _ in verdict.COMPONENTS if better == "cooperative"]
    assert len(made_true) == 8
    assert all(effect[claim] >= 0.5 for claim in made_true)
    # the control compares two variants the effect leaves equal: still a null
    assert effect[next(c for c in differences if c.startswith("Weighting"))] <= 0.05


def test_smoke_summaries_get_no_verdict():
    table = claims(summaries(profile="smoke"))
    rows = table[table["dataset"] == "cifar100"]
    assert rows["verdict"].str.startswith("withheld (smoke").all()
    # the depth-cost row checks the code, replicates nothing: counted apart from the claims
    counts = verdict.tally(table)  # the depth-cost row checks the code: counted apart
    assert counts.loc["short", "claims"] == counts.loc["short", "withheld"] == 14
    assert list(counts.index) == ["short"]


def test_two_datasets_add_the_stability_claim():
    def shift(name, seed):
        return 5.0 * (name == "cooperative") + jitter(name, seed)

    tiny = summaries(shift=shift)
    for item in tiny.values():
        item["config"]["dataset"] = "tiny-imagenet"
    tiny = results.frame_of(tiny)
    table = verdict.claim_table(pd.concat([results.frame_of(summaries(shift=shift)), tiny]))
    assert table.iloc[-1]["claim"].startswith("Stable across datasets")
    assert table.iloc[-1]["verdict"] == "holds"
    few = verdict.claim_table(pd.concat([results.frame_of(summaries(seeds=2)), tiny]))
    assert few.iloc[-1]["verdict"] == verdict.PENDING  # the campaign plans a third seed


def write_campaign(root, found, name="campaign", profile="preview"):
    """Record ``{file name: summary}`` where the profile's campaign ``name`` records it (its
    planned run of that file name), with the planned config and its hash; a file the campaign
    does not plan is written beside them with the summary's own config."""
    planned = {results_path(c).stem: c for c in results.planned_configs(profile, name)}
    for file, summary in found.items():
        config = planned.get(file)
        if config is not None:
            path = root / results_path(config).relative_to(load_config(profile).results_root)
            summary = summary | {"config": config.to_dict(), "config_hash": config.hash()}
        else:
            path = root / profile / summary["config"]["dataset"] / f"{file}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(summary))


def test_verdicts_read_the_best_recorded_profile_and_never_smoke(tmp_path):
    assert verdict.replication_verdicts(results.load(tmp_path)) is None
    for name, item in summaries(seeds=1, profile="smoke").items():
        path = tmp_path / "smoke" / "cifar100" / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(item))
    write_campaign(tmp_path, summaries(seeds=1))
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "depth_cost.json").write_text(json.dumps(record(0.3)))
    recorded = results.load(tmp_path)
    table = verdict.replication_verdicts(recorded)
    short = table[table["regime_key"] == "short"]
    assert short["evidence"].str.startswith("preview, resnet20, 1 seed of the method, 2,500").all()
    assert set(table["dataset"].iloc[1:]) == {"tiny-imagenet"}  # the campaign's: never smoke's
    assert table.iloc[0]["verdict"] == "holds"  # the benchmark record was read
    # the converged regime leads, not yet recorded: each of its claims says what is missing
    converged = table[table["regime_key"] == "converged"]
    assert table.iloc[1 : len(converged) + 1].equals(converged)
    assert (converged["verdict"] == verdict.PENDING).all()
    assert converged["decide"].str.endswith("`make results CAMPAIGN=converged`").all()
    # a file the campaign does not plan lies in its folder, and is not judged
    profile, found = recorded.campaign("cifar100")
    assert profile == "preview" and set(found["file"]) == {results.MATCHED_NAME}
    assert set(results.best_runs(recorded.frame)["dataset"]) == {"tiny-imagenet"}
    profile, found = recorded.campaign("tiny-imagenet")
    assert profile == "preview" and "byot" in set(found["run"])
    assert set(found["profile"]) == {"preview"}  # never the smoke runs
    profile, found = recorded.campaign("tiny-imagenet", ["cooperative"])
    assert profile == "preview" and set(found["file"]) == {"cooperative"}


def test_the_deployed_teammate_is_chosen_on_validation_accuracy():
    metrics = {
        "teammate0": {"1": {"top1": 90.0, "val_top1": 50.0}},
        "teammate1": {"1": {"top1": 10.0, "val_top1": 60.0}},
        "teammate_mean": {"1": {"top1": 50.0, "val_top1": 55.0}},
    }
    assert verdict.deployed_teammate(metrics) == "teammate1"
    rows = results.frame_of({"cooperative": {"config": {}, "metrics": metrics}})
    assert results.deployed(rows) == "teammate1"
    assert results.shown_rows(rows)["network"].unique().tolist() == ["teammate1"]


def reasons(table):
    """``{claim: its likely reason}`` of the claims of a table not shown to hold (a claim at
    equal training compute under its :func:`key`)."""
    rows = table[table["verdict"] != "holds"]
    return {
        (row.claim if not row.regime.startswith(verdict.EQUAL_COMPUTE) else key(*row[1:3])): (
            replication.likely_reason(row.claim, row.verdict, row.decide, row.measured, row.regime)
        )
        for row in rows[["claim", "regime", "verdict", "decide", "measured"]].itertuples()
    }


def test_each_claim_not_shown_to_hold_is_given_its_likely_reason():
    worse = summaries(shift=lambda name, seed: -5.0 * (name == "cooperative") + jitter(name, seed))
    got = reasons(claims(worse))
    comparable = "Comparable accuracy to a network trained for that depth alone, at every depth"
    assert got[comparable] == "Comparable"
    assert got["Smoother accuracy degradation than BYOT as depth shrinks"] == "Exits"
    # the compute-matched control gets its own reason, not the components' weak teachers
    assert got["At equal training"] == "At equal training compute"
    # the Leader's reason says what the Leader is; the Teammates' parts share theirs
    assert got["The Leader improves the Teammates"] == "Leader"
    assert got["Mutual distillation between the Teammates improves them"] == "Component"
    few = reasons(claims(summaries(seeds=2, profile="full")))
    assert few[comparable] == "Seeds"
    assert reasons(claims(summaries(seeds=2)))[comparable] == "Missing"  # 2 of 3 planned seeds
    assert "Exploratory" in reasons(claims(summaries(seeds=2))).values()
    # a claim without its runs is given that as its reason, not a guess about the method
    partial = {n: r for n, r in worse.items() if not n.startswith("cooperative-no-leader")}
    assert reasons(claims(partial))["The Leader improves the Teammates"] == "Missing"
    # a component with no effect: its reason says so, not that teachers are weak
    table = claims(summaries(shift=jitter))
    leader = table[table["claim"] == "The Leader improves the Teammates"].iloc[0]
    assert leader["decide"].startswith("more than 30 seeds")
    assert reasons(table)["The Leader improves the Teammates"] == "Null"
    # arms of different regimes
    for name, run in worse.items():
        if name.startswith("independent"):
            run["config"] = run["config"] | {"epochs": 12}
    assert reasons(claims(worse))[comparable] == "Regime"


#: what the chapters call besides :mod:`coop_utils.chapters`
PAGE_MODULES = ("engineering", "listings", "replication", "training_cost")


def test_the_verdict_imports_neither_the_book_nor_its_figures():
    code = "import sys, coop_utils.verdict; print(sorted(m for m in sys.modules if 'coop' in m))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "coop_utils.verdict" in loaded.stdout, loaded.stderr
    book = {"coop_utils.book", "coop_utils.chapters", "coop_utils.plots", "coop_utils.result_plots"}
    book |= {f"coop_utils.{name}" for name in PAGE_MODULES}
    assert not book & set(eval(loaded.stdout))


def test_the_book_runner_knows_nothing_of_what_the_chapters_show():
    """The runner executes chapters; the verdict, the figures and training are theirs."""
    code = "import sys, coop_utils.book; print(sorted(m for m in sys.modules if 'coop' in m))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "coop_utils.book" in loaded.stdout, loaded.stderr
    shown = {"coop_utils.chapters", "coop_utils.verdict", "coop_utils.training"}
    shown |= {"coop_utils.plots", "coop_utils.result_plots"}
    shown |= {f"coop_utils.{name}" for name in PAGE_MODULES}
    assert not shown & set(eval(loaded.stdout))


def test_the_compute_matched_control_is_read_from_its_own_folder_and_judged(tmp_path):
    """Independent networks trained for a cooperative run's compute, recorded by the campaign
    compute-matched under results/compute-matched/, are judged like the independent arm at
    equal training compute, with the recorded FLOPs ratio in the regime; a summary of another
    config than the planned one is not judged."""
    runs = summaries(shift=lambda name, seed: 4.0 * (name == "cooperative") + jitter(name, seed))
    for name, run in runs.items():
        run["training_flops"] = 1.5e14 if name.startswith("cooperative") else 5.5e13
    write_campaign(tmp_path, {n: r for n, r in runs.items() if results.MATCHED_NAME not in n})
    row = verdicts_rows(verdict.replication_verdicts(results.load(tmp_path)))["At equal training"]
    assert (
        row["verdict"] == verdict.PENDING
        and row["measured"] == "no independent-compute-matched run"
    )
    assert row["decide"] == (
        "the runs to come (independent-compute-matched: 0 of 3 seeds recorded): "
        "`make results CAMPAIGN=compute-matched`"
    )
    assert row["regime"] == "equal compute: 6 vs 18 epochs (planned)"
    control = {
        name.replace(f"{results.MATCHED_NAME}", "independent"): run | {"training_flops": 1.64e14}
        for name, run in runs.items()
        if name.startswith(results.MATCHED_NAME)
    }
    write_campaign(tmp_path, control, "compute-matched")
    table = verdict.replication_verdicts(results.load(tmp_path))
    row = verdicts_rows(table)["At equal training"]
    assert row["verdict"] == "holds", row["measured"]  # +4 points at every plan
    assert "(3 vs 3 runs)" in row["measured"]
    # 1.64e14 / 1.5e14 = 1.09: not called matched, the ratio stated
    assert (
        row["regime"]
        == "equal compute: 6 vs 18 epochs (control's FLOPs 1.09× the cooperative run's, not "
        "within 5 %)"
    )
    # the campaign's own comparable claim still reads only the campaign's independent runs
    assert verdicts_rows(table)["Comparable accuracy to"]["verdict"] == "holds"
    assert verdicts_rows(table)["Comparable accuracy to"]["regime"] == "short, 6 epochs"
    # the pages read the control with the campaign: its own row of costs
    recorded = results.best_runs(results.load(tmp_path).frame)
    control_rows = recorded[recorded["run"] == results.MATCHED_NAME]
    assert set(control_rows["root"]) == {"compute-matched"}
    assert set(control_rows["seed"]) == {0, 1, 2} and set(control_rows["regime"]) == {"short"}
    matched = recorded["run"] == results.MATCHED_NAME
    recorded["wall_time_s"] = np.where(matched, 3 * 360.0, 360.0)
    assert results.campaign_table(recorded).loc[results.MATCHED_NAME, "per seed (h)"] == 0.3
    note = training_cost.training_compute_note(recorded)
    assert "for the same 6 epochs," in note
    assert "for 18 epochs (training FLOPs 1.09× the cooperative run's): at full depth" in note
    # beside the deployed Teammate, the network the verdicts judge, not the Teammates' mean
    full = results.campaign_table(results.shown_rows(recorded))["top-1 at full depth (%)"]
    deployed = f"{full['cooperative']:.1f} % for the deployed Teammate"
    assert f"{full[results.MATCHED_NAME]:.1f} %, against {deployed}" in note
    # a control of another config than the campaign's (12 epochs, not 18) is not judged
    other = {n: r | {"config": r["config"] | {"epochs": 12}} for n, r in control.items()}
    for run in other.values():
        planned = results.planned_configs("preview", "compute-matched")[run["config"]["seed"]]
        path = tmp_path / results_path(planned).relative_to("results")
        path.write_text(json.dumps(run | {"config_hash": "another"}))
    row = verdicts_rows(verdict.replication_verdicts(results.load(tmp_path)))["At equal training"]
    assert row["verdict"] == verdict.PENDING and row["regime"].endswith("(planned)")


def test_the_familywise_reading_keeps_only_claims_that_clear_the_stricter_intervals(tmp_path):
    """Each claim is judged at 95 % on its own; read as one family (Bonferroni over every claim
    the campaigns judge from runs, recorded or not), a 5-point lead with seeds 1.5 points apart
    no longer holds, and a 45-point one still does; a 35-point deficit still does not hold."""
    spread = (-1.5, 0.0, 1.5)

    def shift(name, seed):
        if name == "cooperative":
            return 5.0 + spread[seed]
        return {"cooperative-no-mutual": -40.0, "cooperative-no-sfsl": 40.0}.get(name, 0.0)

    write_campaign(tmp_path, summaries(shift=shift))
    recorded = results.load(tmp_path)
    table = verdict.replication_verdicts(recorded)
    k = len(table) - 1  # every claim but the benchmark check: 13 short, 1 at equal compute
    assert k == 14 + (table["regime_key"] == "converged").sum()  # and the converged ones
    lenient = verdicts(table)
    strict = verdicts(verdict.replication_verdicts(recorded, level=1 - 0.05 / k))
    assert lenient["The Leader improves"] == lenient["Mutual distillation between"] == "holds"
    assert strict["The Leader improves"] == "inconclusive"
    assert strict["Mutual distillation between"] == "holds"
    family = verdict.familywise(recorded)
    assert family.claims == k and family.level == pytest.approx(1 - 0.05 / k)
    assert family.widening == pytest.approx(
        verdict.t_critical(2, 1 - 0.05 / k) / verdict.t_critical(2)
    )
    again = verdict.familywise(recorded, table=table)
    assert again.decided.equals(family.decided)
    read = family.decided.set_index(family.decided["claim"].str.split().str[:3].str.join(" "))
    assert read.loc["Mutual distillation between", ["verdict", "strict"]].tolist() == ["holds"] * 2
    assert read.loc["The Leader improves", ["verdict", "strict"]].tolist() == [
        "holds",
        "inconclusive",
    ]
    assert lenient["SFSL improves the"] == strict["SFSL improves the"] == "does not hold"
    assert read.loc["SFSL improves the", "strict"] == "does not hold"
    assert set(read["verdict"]) == {"holds", "does not hold"}  # only the decided claims
    assert verdict.familywise(results.load(tmp_path / "nothing")) is None


def test_a_part_that_helps_at_one_depth_and_hurts_at_another_is_shown_by_plan():
    """Averaged over depths, a gain at 3 blocks and a loss at 6 look like no effect: the claim
    shows the per-plan means, and its likely reason is that, not "no difference"."""

    def shift(name, seed):  # shared-bn: +1.5 everywhere, -0.4 per block left out
        return (1.5 if name == "cooperative-shared-bn" else 0.0) + jitter(name, seed)

    runs = summaries(shift=shift, tilt={"cooperative-shared-bn": -0.4})
    table = claims(runs)
    rows = dict(zip(table["claim"], table["measured"], strict=True))
    shared = next(
        m for claim, m in rows.items() if claim.startswith("Batch-norm statistics re-estimated")
    )
    assert shared.endswith("; opposite by plan: 3 blocks +0.9, 6 blocks -0.3")
    others = [
        m for claim, m in rows.items() if not claim.startswith("Batch-norm statistics re-estimated")
    ]
    assert not any(verdict.OPPOSITE in m for m in others)
    shared_claim = next(c for c in table["claim"] if c.startswith("Batch-norm statistics"))
    assert reasons(table)[shared_claim] == "Opposite"


def converged_campaign(shift, flops):
    """Every run of the converged campaign (``summaries`` renamed: the flops-matched controls
    are the base curve of their method plus ``shift``), each with ``flops[run]`` training
    FLOPs (none where not given)."""
    found = summaries(shift=shift)
    for method in ("independent", "byot", "branchynet"):
        for seed in range(3):
            suffix = f"-seed{seed}" if seed else ""
            copy = json.loads(json.dumps(found[method + suffix]))
            found[f"{method}-flops-matched{suffix}"] = copy
    for name, run in found.items():
        run["training_flops"] = flops.get(name.split("-seed")[0], math.nan)
    return found


def test_each_regime_is_judged_and_where_two_disagree_the_page_says_so(tmp_path):
    """The converged campaign judged beside the short one: its own epochs in the regime
    column, the flops-matched controls at equal compute with their recorded FLOPs ratio
    (within 5 %: matched; 1.20: not), a summary of another config left out, and a claim that
    holds in one regime and does not in another named in one sentence."""
    short = summaries(shift=lambda name, seed: -5.0 * (name == "cooperative") + jitter(name, seed))
    write_campaign(tmp_path, {n: r for n, r in short.items() if results.MATCHED_NAME not in n})
    flops = {"cooperative": 6e14, "independent-flops-matched": 6.06e14}
    flops |= {"byot-flops-matched": 7.2e14, "branchynet-flops-matched": 5.9e14}
    converged = converged_campaign(lambda name, seed: 5.0 * (name == "cooperative"), flops)
    write_campaign(tmp_path, converged, "converged")
    stray = tmp_path / "converged" / "preview" / "tiny-imagenet" / "cooperative-no-leader.json"
    stray.write_text(json.dumps(json.loads(stray.read_text()) | {"config_hash": "another"}))
    table = verdict.replication_verdicts(results.load(tmp_path))
    rows = table[["claim", "regime", "verdict"]].values
    rows = {(key(c, r), r.split(",")[0]): v for c, r, v in rows}
    assert table.iloc[1]["regime"] == "converged, 24 epochs"  # the converged regime leads
    assert rows["Comparable accuracy to", "converged"] == "holds"
    assert rows["Comparable accuracy to", "short"] == "does not hold"
    regimes = set(table["regime"])
    assert (
        "equal compute: 24 vs 63–65 epochs (control's FLOPs 1.01× the cooperative run's, matched)"
        in regimes
    )
    assert (
        "equal compute: 24 vs 120–125 epochs (control's FLOPs 1.20× the cooperative run's, not "
        "within 5 %)" in regimes
    )
    assert (
        "equal compute: 24 vs 111–115 epochs (control's FLOPs 0.98× the cooperative run's, matched)"
        in regimes
    )
    # the Leader's claim lacks seed 0 of no-leader: its summary is of another config
    leader = table[(table["claim"] == "The Leader improves the Teammates")]
    leader = leader[leader["regime_key"] == "converged"].iloc[0]
    assert leader["verdict"] == verdict.PENDING and "no-leader: 2 of 3 seeds" in leader["decide"]
    disagree = verdict.disagreements(table).set_index("claim")
    assert verdict.COMPARABLE in disagree.index
    assert disagree.loc[verdict.COMPARABLE, "verdicts"][:2] == ["holds", "holds"]
    note = replication.disagreement_note(table)
    assert note.count("\n- ") == len(disagree)
    assert (
        "- *Comparable accuracy to a network trained for that depth alone, at every depth*: "
        "holds (converged, 24 epochs; equal compute: 24 vs 63–65 epochs, control's FLOPs 1.01× "
        "the cooperative run's, matched); does not hold (short, 6 epochs)."
    ) in note
    counts = verdict.tally(table)
    assert list(counts.index) == ["converged", "short"]
    assert counts.loc["converged", "claims"] == 12 and counts.loc["converged", verdict.PENDING] == 1
