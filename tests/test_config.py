"""Run configuration: profiles, overrides, hashing and every validation error."""

import pytest

from coop_utils.config import RunConfig, load_config, parse_override


def test_profiles_load_and_overrides_apply():
    smoke = load_config("smoke", dataset="tiny-imagenet", method="byot", lr=0.01)
    assert smoke.profile == "smoke" and smoke.dataset == "tiny-imagenet"
    assert smoke.method == "byot" and smoke.lr == 0.01
    full = load_config("full")
    assert full.arch == "resnet152" and full.epochs == 200
    assert full.lr_milestones == (60, 120, 160) and full.batch_size == 128
    assert load_config("preview").data == "real"


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
