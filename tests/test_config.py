"""Run configuration: profiles, overrides, hashing and every validation error."""

import os
import platform

import pytest

from coop_utils.config import PROFILES, RunConfig, load_config, parse_override
from coop_utils.runs import append_log, hold_run, run_dir


def test_a_profile_file_is_read_and_overrides_win(tmp_path):
    (tmp_path / "preview.yaml").write_text(
        "arch: resnet32\nlr: 1\nepochs: 7\nprofile: full\n"
        "chapters:\n  07_cost_adaptive_inference: {dataset: cifar100}\n"
    )
    config = load_config("preview", params_dir=tmp_path, epochs=3, dataset="tiny-imagenet")
    assert (config.arch, config.lr) == ("resnet32", 1.0) and isinstance(config.lr, float)
    assert config.epochs == 3 and config.dataset == "tiny-imagenet"  # overrides beat the file
    assert config.profile == "preview"  # the profile asked for, whatever the file says
    assert config.batch_size == RunConfig().batch_size  # a key the file leaves out: the default
    with pytest.raises(ValueError, match="profile file .*smoke.yaml is missing"):
        load_config("smoke", params_dir=tmp_path)


@pytest.mark.parametrize("profile", PROFILES)
def test_every_shipped_profile_is_a_valid_config_for_every_method(profile):
    for method in ("cooperative", "independent", "byot", "branchynet"):
        assert load_config(profile, method=method).method == method


def test_lists_become_tuples_and_whole_numbers_floats():
    config = load_config("smoke", scaling_factors=[0.5, 1], lr=1)
    assert config.scaling_factors == (0.5, 1.0) and isinstance(config.lr, float)


def test_hash_ignores_where_and_how_fast_but_not_what():
    base = load_config("smoke", precision="fp32")
    assert base.hash() == base.replace(device="cuda", run_root="elsewhere", compile=True).hash()
    assert base.hash() != base.replace(seed=1).hash()
    # the precision is what a run computes: a CUDA run (bf16 autocast) never reuses a CPU run
    auto = base.replace(precision="auto")
    assert auto.replace(device="cpu").hash() == base.hash()
    assert auto.replace(device="cuda").hash() != base.hash()
    assert base.hash() != base.replace(sfsl=False).hash()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"arch": "resnet7"}, "'arch' must be one of resnet20"),
        ({"method": "slimmable"}, "'method' must be one of 'cooperative'"),
        ({"dataset": "mnist"}, "'dataset' must be one of 'cifar100', 'tiny-imagenet'"),
        ({"epochs": 0}, "'epochs' must be an integer >= 1"),
        ({"epochs": 2.5}, "'epochs' must be an integer"),
        ({"lr": "fast"}, "'lr' must be a number"),
        ({"lr": -0.1}, "'lr' must be a number > 0"),
        ({"use_leader": "yes"}, "'use_leader' must be true or false"),
        ({"teammates": 5}, "'teammates' must be an integer from 1 to 4"),
        ({"teammates": 1}, "'mutual' must be false with teammates: 1"),
        ({"sampled_factors": [0.2, 1.0]}, "'sampled_factors' must be numbers in \\(0, 1\\)"),
        ({"scaling_factors": [0.2, 0.5]}, "including 1.0"),
        ({"factors_per_teammate": 9}, "exceeds the 8 sampled_factors"),
        ({"gating": "random"}, "'gating' must be one of 'gumbel', 'first'"),
        ({"sampling": "per_step"}, "'sampling' must be one of 'per_epoch', 'per_batch'"),
        ({"device": "tpu"}, "'device' must be 'auto', 'cpu', 'cuda'"),
        ({"lr_milestones": [5, 3]}, "'lr_milestones' must be increasing"),
        ({"train_fraction": 0}, "'train_fraction' must be a number in \\(0, 1\\]"),
        ({"branchynet_weights": [1.0, 0.0]}, "'branchynet_weights' must be numbers > 0"),
        ({"independent_factors": [0.5]}, "unknown config key\\(s\\) 'independent_factors'"),
        ({"colour": "blue"}, "unknown config key\\(s\\) 'colour'; known: arch"),
    ],
)
def test_bad_values_name_the_key_and_what_is_allowed(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_config("smoke", **overrides)


def test_unknown_profile_and_bad_override():
    with pytest.raises(ValueError, match="unknown profile 'huge'; known: smoke, preview, full"):
        load_config("huge")
    with pytest.raises(ValueError, match="key=value"):
        parse_override("lr0.1")
    assert parse_override("scaling_factors=[0.2, 1.0]") == ("scaling_factors", [0.2, 1.0])
    assert parse_override("use_leader=false") == ("use_leader", False)


def test_direct_construction_validates_too():
    with pytest.raises(ValueError, match="'batch_size' must be an integer >= 2"):
        RunConfig(batch_size=1)


def test_the_preview_campaign_has_three_seeds_per_claim_arm_and_valid_runs():
    from coop_utils.config import campaign

    runs = campaign("preview")
    names = [(run["method"], run.get("variant", ""), run["seed"]) for run in runs]
    assert len(names) == len(set(names)), "a run is listed twice"
    arms = {(method, variant) for method, variant, _ in names}
    exploratory = {"first-gating", "sfsl-normalised", "gate-all"}
    for method, variant in arms - {("cooperative", v) for v in exploratory}:
        seeds = {seed for m, v, seed in names if (m, v) == (method, variant)}
        assert seeds == {0, 1, 2}, (method, variant, seeds)
    for overrides in runs:  # every run is a valid config, its ablation's switches flipped
        config = load_config("preview", **overrides)
        if overrides.get("variant") == "no-sfsl":
            assert config.sfsl is False
    # shared-bn only re-evaluates a trained run: it comes after the cooperative run of its seed
    for index, (_, variant, seed) in enumerate(names):
        if variant == "shared-bn":
            assert ("cooperative", "", seed) in names[:index]


def test_a_campaign_with_an_unknown_variant_is_refused(tmp_path):
    from coop_utils.config import campaign

    (tmp_path / "preview.yaml").write_text(
        "arch: resnet20\ncampaign:\n  - {method: cooperative, variant: no-sfls, seeds: [0]}\n"
    )
    with pytest.raises(ValueError, match="no-sfls"):
        campaign("preview", params_dir=tmp_path)
    # the campaign list is not a run's config key
    assert load_config("preview", params_dir=tmp_path).arch == "resnet20"


def test_results_list_names_every_campaign_run_and_its_state(tmp_path, monkeypatch, capsys):
    from coop_utils.__main__ import main
    from coop_utils.config import campaign

    monkeypatch.chdir(tmp_path)  # no results recorded here
    assert main(["results", "--profile", "preview", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(campaign("preview"))
    assert lines[0].split()[1:] == ["cooperative", "to", "run"]
    assert "cooperative-no-sfsl-seed2" in "\n".join(lines)
    assert main(["results", "--profile", "smoke", "--list"]) == 2  # smoke has no campaign
    capsys.readouterr()
    # the first run, interrupted after two epochs, then trained by a process that holds it
    first = load_config("preview", **campaign("preview")[0])
    directory = run_dir(first)
    directory.mkdir(parents=True)
    (directory / "checkpoint.pt").write_bytes(b"the state")
    for epoch in (1, 2):
        append_log(directory / "log.csv", {"epoch": epoch, "train_loss": 1.0})
    main(["results", "--profile", "preview", "--list"])
    line = capsys.readouterr().out.splitlines()[0]
    assert line.endswith(f"to run: interrupted, 2 of {first.epochs} epochs done: resumes from "
                         "its checkpoint"), line  # fmt: skip
    with hold_run(directory):
        main(["results", "--profile", "preview", "--list"])
    line = capsys.readouterr().out.splitlines()[0]
    owner = f"pid {os.getpid()} on {platform.node()}"
    assert line.endswith(f"to run: training ({owner}), 2 of {first.epochs} epochs done"), line
    (directory / "metrics.json").write_text("{}")
    main(["results", "--profile", "preview", "--list"])
    assert (
        capsys.readouterr()
        .out.splitlines()[0]
        .endswith(f"to run: finished in {directory}, not yet recorded")
    )


def test_results_keeps_recorded_summaries_and_trains_only_the_rest(tmp_path, monkeypatch, capsys):
    """A committed summary of this config whose behaviour digest is today's stands even when
    runs/ is gone."""
    import json

    import coop_utils.export
    import coop_utils.training
    from coop_utils import results
    from coop_utils.__main__ import main
    from coop_utils.config import campaign
    from coop_utils.runs import digest_key, results_path

    monkeypatch.chdir(tmp_path)
    planned = [load_config("preview", **overrides) for overrides in campaign("preview")]
    today = {digest_key(config): "today" for config in planned}
    monkeypatch.setattr(results, "behaviour_digests", lambda configs: today)
    recorded, stale = planned[0], planned[1]
    for config, digest in ((recorded, "today"), (stale, "0" * 16)):
        path = results_path(config)
        path.parent.mkdir(parents=True, exist_ok=True)
        summary = {"config": config.to_dict(), "metrics": {"teammate0": {"1": {"top1": 1.0}}}}
        summary |= {"config_hash": config.hash(), "behaviour_digest": digest}
        path.write_text(json.dumps(summary))
    trained = []

    class Stop(Exception):
        pass

    def fake_train(config, **kwargs):
        trained.append(config)
        if len(trained) == 2:
            raise Stop
        return type("Run", (), {"reused": False, "summary_path": results_path(config)})()

    monkeypatch.setattr(coop_utils.training, "train", fake_train)
    monkeypatch.setattr(coop_utils.export, "record_run_files", lambda run: [])
    with pytest.raises(Stop):
        main(["results", "--profile", "preview", "--quiet"])
    out = capsys.readouterr().out
    assert f"{results_path(recorded).stem}: recorded, kept" in out
    # the summary by code that trains it otherwise is trained again, then the next run
    assert trained == planned[1:3]


def test_other_campaigns_of_a_profile_carry_their_folder_and_overrides(tmp_path):
    from coop_utils.config import campaign

    pilot = campaign("preview", name="budget-pilot")
    assert [run["epochs"] for run in pilot] == [6, 12, 24, 48]
    assert {run["results_root"] for run in pilot} == {"results/pilot"}
    first = load_config("preview", **pilot[0])
    assert first.scaling_factors == (1.0,) and first.variant == "budget-e6"
    assert "results_root" not in campaign("preview")[0]  # the main campaign: the default folder
    (tmp_path / "preview.yaml").write_text(
        "campaigns:\n  odd:\n    runs:\n      - {method: cooperative, variant: typo-leader}\n"
    )
    with pytest.raises(ValueError, match="'typo-leader' is not an ablation"):
        campaign("preview", tmp_path, name="odd")
    with pytest.raises(ValueError, match="no campaign 'missing'; known: campaign, odd"):
        campaign("preview", tmp_path, name="missing")


def test_a_campaign_section_sets_keys_for_every_run_and_matches_controls_by_training_flops(
    tmp_path, monkeypatch
):
    from coop_utils.config import PARAMS_DIR, campaign
    from coop_utils.evaluate import matched_epochs
    from coop_utils.results import planned_configs

    (tmp_path / "smoke.yaml").write_text(
        (PARAMS_DIR / "smoke.yaml").read_text()
        + "campaigns:\n  long:\n    results_root: results/long\n    set: {epochs: 3}\n"
        "    runs:\n      - {method: cooperative, seeds: [0, 1]}\n"
        "      - {method: byot, variant: flops-matched, seeds: [1, 0], "
        "match_training_flops: cooperative}\n"
        "      - {method: byot, seeds: [0], set: {epochs: 5}}\n"
    )
    runs = campaign("smoke", tmp_path, name="long")
    assert [run.get("epochs") for run in runs] == [3, 3, 3, 3, 5]  # an entry's set wins
    assert runs[2]["match_training_flops"] == "cooperative"
    monkeypatch.setattr("coop_utils.config.PARAMS_DIR", tmp_path)
    planned = planned_configs("smoke", "long")
    cooperative = {c.seed: c for c in planned[:2]}
    for control in planned[2:4]:
        assert control.variant == "flops-matched" and control.results_root == "results/long"
        assert control.epochs == matched_epochs(control, cooperative[control.seed])
    assert planned[4].epochs == 5

    (tmp_path / "smoke.yaml").write_text(
        "campaigns:\n  bad:\n    runs:\n      - {method: byot, variant: m, seeds: [0], "
        "match_training_flops: cooperative}\n"
        "  odd:\n    runs:\n      - {method: byot, seed: [0]}\n"
        "  plain:\n    runs:\n      - {method: byot, match_training_flops: cooperative}\n"
    )
    with pytest.raises(ValueError, match="unknown key\\(s\\) seed; known"):
        campaign("smoke", tmp_path, name="odd")
    with pytest.raises(ValueError, match="needs a variant"):
        campaign("smoke", tmp_path, name="plain")
    with pytest.raises(ValueError, match="which no earlier run of the campaign trains"):
        planned_configs("smoke", "bad")


def test_results_skips_a_run_another_process_trains_and_takes_the_next(
    tmp_path, monkeypatch, capsys
):
    """Several processes of the command can share a campaign: a run whose lock another holds
    is skipped, named at the end, and the next run trains."""
    import coop_utils.export
    import coop_utils.training
    from coop_utils import results
    from coop_utils.__main__ import main
    from coop_utils.config import campaign
    from coop_utils.runs import digest_key, hold_run, results_path, run_dir

    monkeypatch.chdir(tmp_path)
    planned = [load_config("preview", **overrides) for overrides in campaign("preview")][:3]
    monkeypatch.setattr(results, "campaign", lambda profile, name="campaign": campaign(profile)[:3])
    monkeypatch.setattr(
        results, "behaviour_digests", lambda configs: {digest_key(c): "today" for c in configs}
    )
    trained = []

    def fake_train(config, **kwargs):
        with hold_run(run_dir(config)):  # the lock a real run takes
            trained.append(config)
        return type("Run", (), {"reused": False, "summary_path": results_path(config)})()

    monkeypatch.setattr(coop_utils.training, "train", fake_train)
    monkeypatch.setattr(coop_utils.export, "record_run_files", lambda run: [])
    with hold_run(run_dir(planned[0])):  # "another process" holds the first run
        assert main(["results", "--profile", "preview", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert trained == planned[1:3]
    assert "training in another process: skipped" in out
    assert f"1 run(s) were training in other processes ({results_path(planned[0]).stem})" in out
