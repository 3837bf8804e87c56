"""The training engine: every method learns, the objective is METHOD.md's, runs resume and reuse."""

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from coop_utils import training
from coop_utils.config import load_config
from coop_utils.runs import RunBusyError, hold_run, load_checkpoint, run_dir
from coop_utils.training import StepRandomness, build_system, train

REPO = Path(__file__).resolve().parent.parent
ACCURACY_KEYS = ("top1", "top5", "val_top1", "flops", "active_blocks")


def smoke(tmp_path, **overrides):
    paths = {"run_root": str(tmp_path / "runs"), "results_root": str(tmp_path / "results")}
    return load_config("smoke", **(paths | overrides))


def accuracies(metrics):
    """The metrics that a rerun must reproduce exactly (latency is a timing, so it is left out)."""
    return {
        (network, s, key): row[key]
        for network, rows in metrics.items()
        for s, row in rows.items()
        for key in ACCURACY_KEYS
    }


@pytest.mark.parametrize("method", ["cooperative", "independent", "byot", "branchynet"])
def test_each_method_trains_and_its_loss_falls(tmp_path, method):
    run = train(smoke(tmp_path, method=method), progress=False)
    losses = [float(row["train_loss"]) for row in run.log]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert (run.directory / "metrics.json").exists() and run.summary_path.exists()
    rows = next(iter(run.metrics.values()))
    assert all(0 <= row["top1"] <= row["top5"] <= 100 for row in rows.values())
    if method == "cooperative":
        assert set(run.metrics) == {"teammate0", "teammate1", "teammate_mean", "leader"}
        assert list(run.metrics["teammate0"]) == [f"{s:.4g}" for s in run.config.scaling_factors]
        flops = [row["flops"] for row in run.metrics["teammate0"].values()]
        assert flops == sorted(flops) and flops[0] < flops[-1]


def _kl(teacher, student, temperature):
    p = F.softmax(teacher / temperature, 1)
    return temperature**2 * (p * (p.log() - F.log_softmax(student / temperature, 1))).sum(1).mean()


@pytest.mark.parametrize("use_leader", [True, False])
@pytest.mark.parametrize("mutual", [True, False])
@pytest.mark.parametrize("sfsl", [True, False])
def test_cooperative_loss_equals_hand_assembly(tmp_path, use_leader, mutual, sfsl):
    config = smoke(tmp_path, use_leader=use_leader, mutual=mutual, sfsl=sfsl, temperature=3.0)
    torch.manual_seed(0)
    system = build_system(config, num_classes=10, image_size=32)
    for net in system.modules():  # non-zero residual branches, so sub-networks differ
        if isinstance(net, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(net.weight, 0.5, 1.5)
    images, labels = torch.randn(8, 3, 32, 32), torch.arange(8) % 10
    randomness = StepRandomness(torch.Generator().manual_seed(1), torch.Generator().manual_seed(2))
    system.start_epoch(randomness)
    gumbel_state = randomness.gumbel.get_state()
    loss, _ = system(images, labels, randomness)

    # By hand: the same masks (same Gumbel stream), then METHOD.md's terms written out.
    gumbel = torch.Generator().set_state(gumbel_state)
    temperature, (net_a, net_b) = 3.0, system.teammates
    z_a, z_b = net_a(images), net_b(images)
    expected = F.cross_entropy(z_a, labels) + F.cross_entropy(z_b, labels)
    if use_leader:
        z_leader = system.leader(images)
        expected += F.cross_entropy(z_leader, labels)
        expected += _kl(z_leader, z_a, temperature) + _kl(z_leader, z_b, temperature)
    if mutual:
        expected += _kl(z_b, z_a, temperature) + _kl(z_a, z_b, temperature)
    pairs = zip((net_a, net_b), (z_a, z_b), randomness.epoch_factors, strict=True)
    for net, z_full, factors in pairs:
        for s in factors:
            z_sub = net(images, mask=net.gate.sample(s, config.tau, generator=gumbel))
            weight = 1 / s if sfsl else 1.0
            expected += weight * (F.cross_entropy(z_sub, labels) + _kl(z_full, z_sub, temperature))
    assert len(randomness.epoch_factors[0]) == config.factors_per_teammate
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_finished_run_is_reused_without_training(tmp_path, monkeypatch):
    config = smoke(tmp_path, method="byot")
    first = train(config, progress=False)

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run must not train again")

    monkeypatch.setattr(training._Trainer, "run", no_training)
    again = train(config.replace(run_root=config.run_root, device="cpu"), progress=False)
    assert again.reused and again.metrics == first.metrics and again.log == first.log


def test_second_concurrent_writer_is_refused(tmp_path):
    config = smoke(tmp_path, method="independent")
    with hold_run(run_dir(config)), pytest.raises(RunBusyError, match="another process"):
        train(config, progress=False)


def test_non_finite_loss_stops_naming_epoch_and_step(tmp_path, monkeypatch):
    config = smoke(tmp_path, method="independent")
    forward, calls = training.IndependentSystem.forward, []

    def poisoned(self, images, labels, randomness):
        loss, terms = forward(self, images, labels, randomness)
        calls.append(1)
        return (loss * math.nan if len(calls) == 16 else loss), terms  # epoch 2 has 13 + 3

    monkeypatch.setattr(training.IndependentSystem, "forward", poisoned)
    with pytest.raises(training.NonFiniteLossError, match="epoch 2, step 3 \\(global step 16\\)"):
        train(config, progress=False)
    directory = run_dir(config)
    assert load_checkpoint(directory / "checkpoint.pt")["epoch"] == 1  # the last good one
    assert not (directory / "metrics.json").exists()


def _start_cli(config, method="cooperative"):
    command = [sys.executable, "-m", "coop_utils", "train", "--profile", "smoke", "--quiet"]
    command += ["--method", method, "--set", f"run_root={config.run_root}"]
    command += ["--set", f"results_root={config.results_root}"]
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _wait_for(path, process, timeout=300):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.stdout.read().decode()
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """Metrics of the cooperative smoke run, trained without interruption."""
    return train(smoke(tmp_path_factory.mktemp("whole")), progress=False).metrics


def test_run_killed_mid_training_resumes_to_identical_metrics(tmp_path, uninterrupted):
    config = smoke(tmp_path)
    process = _start_cli(config)
    _wait_for(run_dir(config) / "checkpoint.pt", process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (run_dir(config) / "metrics.json").exists()
    resumed = train(config, progress=False)
    assert accuracies(resumed.metrics) == accuracies(uninterrupted)
    assert [row["epoch"] for row in resumed.log] == ["1", "2", "3"]


def test_ctrl_c_saves_a_checkpoint_mid_epoch_and_resumes_exactly(tmp_path, uninterrupted):
    config = smoke(tmp_path)
    process = _start_cli(config)
    checkpoint = run_dir(config) / "checkpoint.pt"
    _wait_for(checkpoint, process)
    first_epoch_done = checkpoint.stat().st_mtime_ns
    time.sleep(0.5)  # into the second epoch
    process.send_signal(signal.SIGINT)
    output = process.communicate(timeout=120)[0].decode()
    assert process.returncode != 0, output
    state = load_checkpoint(checkpoint)
    assert checkpoint.stat().st_mtime_ns != first_epoch_done, output
    assert state["step_in_epoch"] > 0 or state["epoch"] > 1, state
    resumed = train(config, progress=False)
    assert accuracies(resumed.metrics) == accuracies(uninterrupted)


def test_two_process_gloo_run_ends_with_identical_parameters(tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
    command += ["--standalone", "-m", "coop_utils", "train", "--profile", "smoke"]
    command += ["--method", "cooperative", "--quiet", "--set", "epochs=1"]
    command += ["--set", f"run_root={tmp_path / 'runs'}", "--set", f"results_root={tmp_path}"]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    digests = [line for line in result.stdout.splitlines() if line.startswith("parameter digest")]
    assert len(digests) == 2 and digests[0] == digests[1], result.stdout
    assert "finished" in result.stdout


def test_ablation_switches_train_together(tmp_path):
    """Three Teammates, no Leader, fixed first-block gates, factors drawn every batch."""
    config = smoke(tmp_path, teammates=3, use_leader=False, gating="first", sampling="per_batch")
    run = train(config, progress=False)
    losses = [float(row["train_loss"]) for row in run.log]
    assert losses[-1] < losses[0]
    assert set(run.metrics) == {"teammate0", "teammate1", "teammate2", "teammate_mean"}


def test_bn_recalibration_re_estimates_statistics_on_a_copy(tmp_path):
    config = smoke(tmp_path)
    data = training.prepare_data(config, torch.device("cpu"))
    torch.manual_seed(0)
    net = build_system(config, data.num_classes, data.image_size).teammates[0]
    before = net.stem[1].running_mean.clone()
    recalibrated = training.recalibrate_batchnorm(net, data.val, 0.3)
    assert torch.equal(net.stem[1].running_mean, before)  # the trained network is untouched
    with torch.no_grad():  # momentum None: the plain average of the batches' means
        expected = torch.stack([net.stem[0](images).mean((0, 2, 3)) for images, _ in data.val])
    expected = expected.mean(0)
    torch.testing.assert_close(recalibrated.stem[1].running_mean, expected, rtol=1e-4, atol=1e-5)
    assert not recalibrated.training


def test_cli_variant_of_an_ablation_flips_its_switches(monkeypatch, capsys):
    from coop_utils.__main__ import main

    seen = []

    def fake_train(config, progress=True):
        seen.append(config)
        raise ValueError("stop here")

    monkeypatch.setattr(training, "train", fake_train)
    assert (
        main(["train", "--profile", "smoke", "--variant", "one-teammate", "--set", "seed=3"]) == 2
    )
    assert seen[0].teammates == 1 and not seen[0].mutual and seen[0].seed == 3
    assert seen[0].variant == "one-teammate"
    assert main(["train", "--profile", "smoke", "--set", "colour=red"]) == 2
    assert "unknown config key(s) 'colour'" in capsys.readouterr().err


def test_bn_recalibration_reuses_the_trained_run(tmp_path, monkeypatch):
    base = train(smoke(tmp_path, method="cooperative"), progress=False)

    def no_training(*args, **kwargs):
        raise AssertionError("the recalibration ablation must reuse the trained networks")

    monkeypatch.setattr(training._Trainer, "run", no_training)
    config = smoke(
        tmp_path, method="cooperative", variant="bn-recalibration", bn_recalibration=True
    )
    recalibrated = train(config, progress=False)
    assert recalibrated.summary_path.name == "cooperative-bn-recalibration.json"
    for key in ("top1", "top5", "flops"):  # full depth keeps the trained statistics
        assert recalibrated.metrics["leader"]["1"][key] == base.metrics["leader"]["1"][key]
        assert recalibrated.metrics["teammate0"]["1"][key] == base.metrics["teammate0"]["1"][key]
    assert train(config, progress=False).reused


@pytest.mark.parametrize("use_leader", [True, False])
def test_pass_by_pass_backward_gives_the_gradients_of_the_whole_loss(tmp_path, use_leader):
    config = smoke(tmp_path, use_leader=use_leader)
    torch.manual_seed(0)
    system = build_system(config, num_classes=10, image_size=32)
    for module in system.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(module.weight, 0.5, 1.5)
    images, labels = torch.randn(8, 3, 32, 32), torch.arange(8) % 10

    def gradients(step):
        randomness = StepRandomness(
            torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
        )
        system.start_epoch(randomness)
        system.zero_grad(set_to_none=True)
        loss = step(randomness)
        return loss, {name: p.grad.clone() for name, p in system.named_parameters()}

    def whole(randomness):
        loss, _ = system(images, labels, randomness)
        loss.backward()
        return loss.detach()

    def by_pass(randomness):
        return system.backward_step(images, labels, randomness)[0]

    whole_loss, whole_grads = gradients(whole)
    pass_loss, pass_grads = gradients(by_pass)
    torch.testing.assert_close(pass_loss, whole_loss)
    assert whole_grads.keys() == pass_grads.keys()
    for name, grad in whole_grads.items():
        torch.testing.assert_close(pass_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize(("arch", "plans"), [("resnet20", 3), ("resnet32", 5), ("resnet56", 8)])
def test_independent_trains_one_network_per_distinct_plan_and_rows_every_factor(arch, plans):
    config = load_config("smoke", method="independent", arch=arch)
    system = build_system(config, num_classes=10, image_size=32)
    assert len(system.nets) == plans
    rows = list(system.evaluations())
    assert [s for _, _, s in rows] == list(config.scaling_factors)  # every s has a row
    for _, net, s in rows:  # each factor is evaluated on the network of its own plan
        assert s in system.factors[list(system.nets).index(net)]


def test_branchynet_sums_its_exits_cross_entropies_with_their_weights():
    weights = tuple(float(w) for w in range(1, 9))  # resnet20's grid gives 8 exits
    config = load_config("smoke", method="branchynet", branchynet_weights=weights)
    system = build_system(config, num_classes=10, image_size=32)
    images, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    loss, _ = system(images, labels, None)
    logits, _ = system.net.forward_exits(images)
    expected = sum(w * F.cross_entropy(z, labels) for w, z in zip(weights, logits, strict=True))
    torch.testing.assert_close(loss, expected)
    with pytest.raises(ValueError, match="one weight per BranchyNet exit: 8"):
        load_config("smoke", method="branchynet", branchynet_weights=[1.0, 2.0])
