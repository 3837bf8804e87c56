"""FLOPs, latency and depth choice under a budget."""

import time

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from coop_utils.evaluate import choose_scaling_factor, count_flops, depth_costs, measure_latency
from coop_utils.models import EarlyExitNetwork, build_model


@pytest.fixture(scope="module")
def resnet56():
    torch.manual_seed(0)
    return build_model("resnet56", num_classes=10, image_size=32)


def _flops(module, x):
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        out = module(x)
    return counter.get_total_flops(), out


def test_flops_ratio_matches_the_plans_share_of_block_flops(resnet56):
    """Counted FLOPs at s equal stem + the active blocks + head, block by block."""
    resnet56.eval()
    x = torch.zeros(1, 3, 32, 32)
    total, x = _flops(resnet56.stem, x)
    block_flops = []
    for block in resnet56.blocks:
        flops, x = _flops(lambda t, b=block: torch.relu(b.shortcut(t) + b.residual(t)), x)
        block_flops.append(flops)
    head, _ = _flops(resnet56.classify, x)
    fixed = total + head
    for s in (0.2, 0.5, 1.0):
        expected = fixed + sum(block_flops[i] for i in resnet56.active_blocks(s))
        assert count_flops(resnet56, s) == expected
    ratio = count_flops(resnet56, 0.2) / count_flops(resnet56, 1.0)
    assert ratio == pytest.approx(
        (fixed + sum(block_flops[i] for i in resnet56.active_blocks(0.2)))
        / (fixed + sum(block_flops))
    )
    assert ratio < 0.3


def test_count_flops_works_under_any_mode_and_restores_it(resnet56):
    resnet56.train()
    assert count_flops(resnet56, 1.0) > 0
    assert resnet56.training
    with torch.inference_mode():  # the counter runs under no_grad itself
        assert count_flops(resnet56, 1.0) > 0


def test_measure_latency_is_positive_and_restores_mode(resnet56):
    resnet56.train()
    assert measure_latency(resnet56, 0.5, batch_size=2, repeats=2, warmup=1) > 0
    assert resnet56.training


def test_measure_latency_times_one_pass_in_seconds_with_the_threads_in_use(resnet56, monkeypatch):
    """Each pass runs in eval and inference mode on the caller's thread count."""
    threads, calls = torch.get_num_threads(), []

    def pass_of_10_ms(images, s=None):
        calls.append(
            (torch.get_num_threads(), torch.is_inference_mode_enabled(), resnet56.training)
        )
        time.sleep(0.01)

    monkeypatch.setattr(resnet56, "forward", pass_of_10_ms)
    assert 0.01 <= measure_latency(resnet56, 0.5, warmup=2, repeats=5) < 0.05
    assert set(calls) == {(threads, True, False)}
    assert len(calls) >= 2 + 5


def test_choose_scaling_factor_respects_flops_budget(resnet56):
    costs = {row["s"]: row["flops"] for row in depth_costs(resnet56)}
    for s in (0.2, 0.5, 0.9):
        chosen = choose_scaling_factor(resnet56, budget_flops=costs[s])
        assert costs[chosen] <= costs[s]
        assert all(costs[other] > costs[s] for other in costs if other > chosen)
    assert choose_scaling_factor(resnet56, budget_flops=costs[1.0] * 2) == 1.0


def test_choose_scaling_factor_respects_latency_budget(resnet56):
    generous = 100 * measure_latency(resnet56, 1.0, repeats=2)
    assert choose_scaling_factor(resnet56, budget_latency=generous) == 1.0
    with pytest.raises(ValueError, match="smallest, s=0.2"):
        choose_scaling_factor(resnet56, budget_latency=1e-9)


def test_choose_scaling_factor_bad_budgets(resnet56):
    with pytest.raises(ValueError, match="smallest, s=0.2, costs"):
        choose_scaling_factor(resnet56, budget_flops=1000)
    with pytest.raises(ValueError, match="give a budget"):
        choose_scaling_factor(resnet56)
    with pytest.raises(ValueError, match="positive"):
        choose_scaling_factor(resnet56, budget_flops=-1)
    with pytest.raises(ValueError, match="scaling factor"):
        choose_scaling_factor(resnet56, budget_flops=1e9, scaling_factors=[0.0, 0.5])


def test_exit_flops_include_the_exit_head_and_grow_with_depth():
    backbone = build_model("resnet20", num_classes=10, image_size=32)
    net = EarlyExitNetwork(backbone, exit_blocks=[2, 5])
    flops = [count_flops(net, depth) for depth in net.exit_depths]
    assert flops == sorted(flops) and flops[-1] == count_flops(backbone, 1.0)
    head = net.heads[0]
    head_flops = 2 * head.project[0].in_channels * head.project[0].out_channels * 32 * 32
    head_flops += 2 * head.fc.in_features * head.fc.out_features
    stem_and_stage1, _ = _flops(
        lambda x: backbone.forward_features(x, taps=[2])[0], torch.zeros(1, 3, 32, 32)
    )
    assert flops[0] == stem_and_stage1 + head_flops


def test_precise_batchnorm_averages_the_batches_and_restores_the_module():
    from torch import nn

    from coop_utils.models import precise_batchnorm

    net = nn.Sequential(nn.Conv2d(3, 4, 1, bias=False), nn.BatchNorm2d(4)).eval()
    batches = [torch.randn(8, 3, 5, 5) + shift for shift in (0.0, 4.0)]
    precise_batchnorm(net, batches, net)
    with torch.no_grad():
        means = [net[0](images).mean(dim=(0, 2, 3)) for images in batches]
    torch.testing.assert_close(net[1].running_mean, (means[0] + means[1]) / 2)
    assert not net.training and net[1].momentum == 0.1  # mode and momentum as they were


@pytest.mark.parametrize("method", ["cooperative", "independent", "byot", "branchynet"])
def test_every_method_re_estimates_every_batch_norm_after_training(method):
    from torch import nn

    from coop_utils.config import load_config
    from coop_utils.systems import build_system

    config = load_config("smoke", method=method, arch="resnet20", dataset="cifar100")
    torch.manual_seed(0)
    system = build_system(config, num_classes=10, image_size=16)
    batches = [torch.randn(16, 3, 16, 16) * 2 + 1 for _ in range(2)]
    system.calibrate(batches)
    norms = [m for m in system.modules() if isinstance(m, nn.BatchNorm2d)]
    untouched = [m for m in norms if torch.equal(m.running_mean, torch.zeros_like(m.running_mean))]
    if method == "cooperative":  # the Teammates' statistics go to their per-plan buffers
        assert all(net.has_plan_stats for net in system.teammates)
        leader = set(system.leader.modules())
        assert not [m for m in untouched if m in leader]
    elif method == "independent":  # each network at its own plan: the others never run
        for factors, net in zip(system.factors, system.nets, strict=True):
            active = set(net.active_blocks(factors[0]))
            idle = {m for i, b in enumerate(net.blocks) if i not in active for m in b.modules()}
            assert [m for m in untouched if m in set(net.modules())] == [
                m for m in net.modules() if m in idle and isinstance(m, nn.BatchNorm2d)
            ]
    else:
        assert not untouched, f"{len(untouched)} of {len(norms)} batch norms not re-estimated"


@pytest.mark.parametrize("sampling", ["per_epoch", "per_batch"])
def test_training_flops_count_the_factors_a_cooperative_run_actually_drew(
    tmp_path, monkeypatch, sampling
):
    """The summary's training compute replays the run's draws: it equals the forward FLOPs of
    every pass that training ran, times 3, times the batch, counted while it trained."""
    import json

    from coop_utils import systems
    from coop_utils.config import load_config
    from coop_utils.training import train

    config = load_config(
        "smoke",
        dataset="tiny-imagenet",
        epochs=2,
        max_steps=21,  # stops inside the second epoch
        sampling=sampling,
        run_root=str(tmp_path / "runs"),
        results_root=str(tmp_path / "results"),
    )
    drawn = []
    original = systems.CooperativeSystem._step_factors

    def recorded(self, randomness):
        factors = original(self, randomness)
        drawn.append([list(f) for f in factors])
        return factors

    monkeypatch.setattr(systems.CooperativeSystem, "_step_factors", recorded)
    run = train(config, progress=False)
    # 21 training steps, then the count's replay of the same 21 draws
    assert len(drawn) == 42 and drawn[:21] == drawn[21:]
    drawn = drawn[:21]
    assert len({str(d) for d in drawn}) > 1  # the draws change
    net = build_model("resnet20", 10, 32)
    full = count_flops(net)
    forward = sum(3 * full + sum(count_flops(net, s) for f in step for s in f) for step in drawn)
    summary = json.loads(run.summary_path.read_text())
    assert summary["training_flops"] == 3 * forward * config.batch_size
    assert summary["step_forward_flops_per_image"] == round(forward / 21)


def test_training_flops_of_the_baselines_are_their_networks_forward_costs():
    from coop_utils.config import load_config
    from coop_utils.evaluate import training_flops

    independent = load_config("smoke", method="independent", epochs=2)
    nets = [build_model("resnet20", 10, 32) for _ in range(3)]
    per_step = sum(count_flops(net, s) for net, s in zip(nets, (0.2, 0.5, 1.0), strict=True))
    assert training_flops(independent, 10, 32, 7) == (3 * per_step * 14 * 16, per_step)
    byot = load_config("smoke", method="byot", epochs=1)
    total, per_image = training_flops(byot, 10, 32, 5)
    assert per_image > count_flops(nets[0])  # the backbone and its exits' heads
    assert total == 3 * per_image * 5 * 16


@pytest.mark.parametrize("method", ["independent", "byot", "branchynet"])
def test_matched_epochs_give_a_control_the_cooperative_runs_training_flops(method):
    """The epochs chosen for a compute-matched control make its counted training FLOPs agree
    with the cooperative run's within 5 %, at any number of steps per epoch (the data's)."""
    from coop_utils.config import load_config
    from coop_utils.evaluate import matched_epochs, training_flops

    reference = load_config("smoke", epochs=5, seed=3)
    control = load_config("smoke", method=method, seed=3)
    epochs = matched_epochs(control, reference)
    assert epochs > reference.epochs  # each of its steps costs less than a cooperative one
    for steps_per_epoch in (1, 7):
        target, _ = training_flops(reference, 10, 32, steps_per_epoch)
        got, _ = training_flops(control.replace(epochs=epochs), 10, 32, steps_per_epoch)
        assert abs(got / target - 1) <= 0.05
        fewer, _ = training_flops(control.replace(epochs=epochs - 1), 10, 32, steps_per_epoch)
        assert abs(fewer / target - 1) > abs(got / target - 1)  # the closest whole number


def test_matched_epochs_refuse_what_they_cannot_match():
    from coop_utils.config import load_config
    from coop_utils.evaluate import matched_epochs

    reference = load_config("smoke", epochs=4)
    with pytest.raises(ValueError, match="non-cooperative control"):
        matched_epochs(reference, reference)
    with pytest.raises(ValueError, match="samples per epoch"):
        matched_epochs(load_config("smoke", method="byot"), reference.replace(sampling="per_batch"))
    with pytest.raises(ValueError, match="unset max_steps"):
        matched_epochs(load_config("smoke", method="byot", max_steps=3), reference)
    with pytest.raises(ValueError, match="reference's data and batch"):
        matched_epochs(load_config("smoke", method="byot", batch_size=8), reference)
    # one epoch of the control costs more than the whole reference: no whole number is close
    cheap = load_config("smoke", epochs=1, sampled_factors=[0.2], factors_per_teammate=1)
    with pytest.raises(ValueError, match="no whole number of epochs"):
        matched_epochs(load_config("smoke", method="independent", arch="resnet56"), cheap)


def test_calibration_and_latency_run_in_the_precision_that_accuracy_is_measured_in():
    from coop_utils.config import load_config
    from coop_utils.systems import build_system

    system = build_system(load_config("smoke", precision="bf16"), num_classes=10, image_size=32)
    types = set()
    for module in system.modules():
        if isinstance(module, torch.nn.Conv2d):
            module.register_forward_hook(lambda m, args, out: types.add(out.dtype))
    system.calibrate([torch.randn(4, 3, 32, 32)])
    assert types == {torch.bfloat16}
    types.clear()
    measure_latency(system.teammates[0], 0.5, warmup=0, repeats=1, precision="bf16")
    assert types == {torch.bfloat16}
