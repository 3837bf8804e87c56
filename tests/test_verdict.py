"""The replication verdict: claims judged from result files, seeds pooled with their spread."""

import json

from coop_utils import book, verdict


def summary(profile, metrics, **config):
    config = {
        "profile": profile,
        "dataset": "cifar100",
        "data": "real",
        "arch": "resnet20",
    } | config
    return {"config": config, "metrics": metrics, "device": "test CPU", "date": "2026-01-02T00:00"}


def rows(factors, top1, latency=None, blocks=9):
    return {
        f"{s:.4g}": {
            "top1": top1(s),
            "top5": 99.0,
            "flops": int(1e8 * s),
            "val_top1": top1(s),
            "latency_ms": (latency or (lambda s: 10 * s))(s),
            "active_blocks": max(1, round(blocks * s)),
        }
        for s in factors
    }


GRID = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def summaries(profile="preview", coop=lambda s: 70.0, independent=lambda s: 70.0, exits=None):
    """A full set of result summaries for one dataset: the cooperative run, baselines, ablations."""
    teammate = rows(GRID, coop)
    exits = exits or (lambda s: 70.0 - 40 * (1 - s))
    return {
        "cooperative": summary(
            profile, {"teammate0": teammate, "teammate1": teammate, "teammate_mean": teammate}
        ),
        "independent": summary(profile, {"independent": rows((0.2, 0.5, 1.0), independent)}),
        "byot": summary(profile, {"byot": rows((1 / 3, 2 / 3, 1.0), exits)}),
        "branchynet": summary(profile, {"branchynet": rows(GRID, exits)}),
        "cooperative-no-leader": summary(profile, {"teammate_mean": rows(GRID, lambda s: 60.0)}),
        "cooperative-no-sfsl": summary(profile, {"teammate_mean": rows(GRID, lambda s: 70.0)}),
        "cooperative-no-mutual": summary(profile, {"teammate_mean": rows(GRID, lambda s: 80.0)}),
        "cooperative-one-teammate": summary(profile, {"teammate0": rows(GRID, lambda s: 66.0)}),
        "cooperative-bn-recalibration": summary(
            profile, {"teammate_mean": rows(GRID, lambda s: 75.0 if s < 1 else 70.0)}
        ),
    }


def verdicts(table):
    return dict(
        zip(table["claim"].str.split().str[:2].str.join(" "), table["verdict"], strict=True)
    )


def test_claims_that_hold_are_judged_so_from_the_numbers():
    table = verdict.claim_table({"cifar100": summaries()})
    got = verdicts(table)
    assert got["Depth chosen"] == "holds"  # latency at s = 0.2 is 20 % of full depth
    assert got["Comparable accuracy"] == "holds"  # equal accuracy to the independent networks
    assert got["Smoother accuracy"] == "holds"  # exits lose 32 points at 1/5 depth, we lose none
    assert got["The Leader"] == "holds"  # the Leader is worth 10 points
    assert got["SFSL improves"] == "inconclusive"  # no difference
    assert got["Mutual distillation"] == "does not hold"  # without it: 10 points better
    assert got["A second"] == "holds"  # one Teammate alone: 4 points worse
    assert got["Learned (Gumbel)"] == "inconclusive"  # no first-gating run
    assert got["Per-depth batch-norm"] == "holds"  # recalibrated: 5 points better below s = 1
    assert (
        table["evidence"].str.startswith("preview, resnet20, 1 seed, test CPU, 2026-01-02")
    ).all()


def test_claims_that_fail_are_judged_so_from_the_numbers():
    flat_latency = summaries(coop=lambda s: 50.0)
    for run in flat_latency["cooperative"]["metrics"].values():
        for row in run.values():
            row["latency_ms"] = 10.0
    got = verdicts(verdict.claim_table({"cifar100": flat_latency}))
    assert got["Depth chosen"] == "does not hold"
    assert got["Comparable accuracy"] == "does not hold"  # 20 points below the independent networks


def test_a_missing_run_makes_its_claim_inconclusive():
    partial = summaries()
    del partial["independent"], partial["cooperative-no-leader"]
    got = verdicts(verdict.claim_table({"cifar100": partial}))
    assert got["Comparable accuracy"] == "inconclusive" and got["The Leader"] == "inconclusive"


def test_smoke_summaries_get_no_verdict():
    table = verdict.claim_table({"cifar100": summaries("smoke")})
    assert table["verdict"].str.startswith("withheld (smoke").all()


def test_two_datasets_add_the_stability_claim():
    tiny = summaries()
    for item in tiny.values():
        item["config"]["dataset"] = "tiny-imagenet"
    table = verdict.claim_table({"cifar100": summaries(), "tiny-imagenet": tiny})
    assert table.iloc[-1]["claim"].startswith("Stable across datasets")
    assert table.iloc[-1]["verdict"] == "holds"


def test_verdicts_read_the_best_recorded_profile_and_never_smoke(tmp_path):
    assert verdict.replication_verdicts(tmp_path) is None
    for profile, items in (("smoke", summaries("smoke")), ("preview", summaries("preview"))):
        for name, item in items.items():
            path = tmp_path / profile / "cifar100" / f"{name}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(item))
    table = verdict.replication_verdicts(tmp_path)
    assert (table["evidence"].str.startswith("preview")).all()
    assert book.best_recorded(tmp_path, "cifar100").profile == "preview"
    assert book.best_recorded(tmp_path, "tiny-imagenet") is None
    profile, found = book.best_recorded_profile(tmp_path, "cifar100")
    assert profile == "preview" and "byot" in found


def test_the_deployed_teammate_is_chosen_on_validation_accuracy():
    metrics = {
        "teammate0": {"1": {"top1": 90.0, "val_top1": 50.0}},
        "teammate1": {"1": {"top1": 10.0, "val_top1": 60.0}},
        "teammate_mean": {"1": {"top1": 50.0, "val_top1": 55.0}},
    }
    assert book.deployed_teammate(metrics) == "teammate1"


def test_seed_files_are_pooled_under_their_name():
    found = summaries()
    found["cooperative-seed1"] = found["cooperative"] | {
        "config": found["cooperative"]["config"] | {"seed": 1}
    }
    grouped = verdict.group_seeds(found)
    assert len(grouped["cooperative"]) == 2 and "cooperative-seed1" not in grouped
    assert [run["config"].get("seed", 0) for run in grouped["cooperative"]] == [0, 1]


def with_seed(item, seed, top1):
    """A copy of ``item`` as seed ``seed``, every accuracy replaced by ``top1``."""
    metrics = {
        network: {key: row | {"top1": top1, "val_top1": top1} for key, row in by_depth.items()}
        for network, by_depth in item["metrics"].items()
    }
    return item | {"config": item["config"] | {"seed": seed}, "metrics": metrics}


def test_the_spread_between_seeds_widens_the_uncertainty():
    one = summaries()
    assert verdicts(verdict.claim_table({"cifar100": one}))["The Leader"] == "holds"
    spread = summaries()
    spread["cooperative"] = with_seed(spread["cooperative"], 0, 76.0)
    spread["cooperative-seed1"] = with_seed(spread["cooperative"], 1, 56.0)
    table = verdict.claim_table({"cifar100": spread})
    leader = table.set_index("claim").loc["The Leader improves the Teammates"]
    # seed 0 is 16 points above its ablation, but the seeds of the full method are 20 apart
    assert leader["verdict"] == "inconclusive"
    assert (
        "76.0 vs 60.0" in leader["measured"] and "SD between 2 seed(s) 14.1" in leader["measured"]
    )
    assert leader["evidence"].startswith("preview, resnet20, 2 seeds")


def test_agreeing_seeds_keep_a_clear_verdict():
    agree = summaries()
    agree["cooperative-seed1"] = with_seed(agree["cooperative"], 1, 70.2)
    assert verdicts(verdict.claim_table({"cifar100": agree}))["The Leader"] == "holds"


def test_recalibration_is_compared_with_its_own_seed():
    paired = summaries()
    paired["cooperative-seed1"] = with_seed(paired["cooperative"], 1, 50.0)
    # seed 1 is 20 points worse, but recalibration is judged against seed 0 only
    assert verdicts(verdict.claim_table({"cifar100": paired}))["Per-depth batch-norm"] == "holds"
    del paired["cooperative"]
    paired["cooperative"] = paired.pop("cooperative-seed1")
    got = verdicts(verdict.claim_table({"cifar100": paired}))
    assert got["Per-depth batch-norm"] == "inconclusive"  # no base run of seed 0


def test_the_discussion_names_contradicted_and_open_claims_with_reasons():
    found = summaries(coop=lambda s: 50.0)  # 20 points below the independent networks
    table = verdict.claim_table({"cifar100": found})
    text = verdict.discussion(table, {"cifar100": found})
    contradicted = text.split("\n\n")[0]
    assert contradicted.startswith("**Contradicted by our runs:**")
    assert "Comparable accuracy to a network trained for that depth alone" in contradicted
    assert "**Not confirmed:**" in text and "Learned (Gumbel) gating" in text
    assert "**Most likely reasons:**" in text and "far from convergence" in text
    # resnet20 has three blocks a stage: the nine factors give three plans
    assert "only 3 distinct plans" in text


def test_the_discussion_of_withheld_or_agreeing_verdicts():
    smoke = verdict.claim_table({"cifar100": summaries("smoke")})
    assert verdict.discussion(smoke) == "No verdict: every row is withheld."
    table = verdict.claim_table({"cifar100": summaries()})
    held = table[table["verdict"] == "holds"]
    assert verdict.discussion(held) == "Every claim judged holds on the recorded runs."
