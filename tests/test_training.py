"""The training engine: every method learns, the objective is METHOD.md's, runs resume and reuse."""

import copy
import functools
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch._dynamo.utils import counters

from coop_utils import models, systems, training
from coop_utils.config import load_config
from coop_utils.evaluate import calibration_batches
from coop_utils.loaders import prepare_data
from coop_utils.memory import SavedActivations
from coop_utils.models import calibrate_batchnorm
from coop_utils.runs import RunBusyError, digest_key, hold_run, load_checkpoint, run_dir
from coop_utils.systems import StepRandomness, build_system
from coop_utils.training import train

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
    step, calls = systems.IndependentSystem.backward_step, []

    def poisoned(self, images, labels, randomness):
        loss, terms = step(self, images, labels, randomness)
        calls.append(1)
        return (loss * math.nan if len(calls) == 16 else loss), terms  # epoch 2 has 13 + 3

    monkeypatch.setattr(systems.IndependentSystem, "backward_step", poisoned)
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
    """Poll until the run writes ``path`` (an event, not a guess at how long a step takes)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.stdout.read().decode()
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


def final_state_digest(config):
    """Digest of the finished run's whole state: parameters, batch-norm statistics (shared and
    per depth), gate logits, and the optimizer's momentum buffers."""
    state = load_checkpoint(run_dir(config) / "checkpoint.pt")
    optimizer = {
        f"momentum{i}": v["momentum_buffer"] for i, v in state["optimizer"]["state"].items()
    }
    return training.state_digest(state["system"] | optimizer)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The cooperative smoke run, trained without interruption: its metrics and state digest."""
    config = smoke(tmp_path_factory.mktemp("whole"))
    return train(config, progress=False).metrics, final_state_digest(config)


def test_run_killed_mid_training_resumes_to_an_identical_state(tmp_path, uninterrupted):
    config = smoke(tmp_path)
    process = _start_cli(config)
    _wait_for(run_dir(config) / "checkpoint.pt", process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (run_dir(config) / "metrics.json").exists()
    resumed = train(config, progress=False)
    assert final_state_digest(config) == uninterrupted[1]
    assert accuracies(resumed.metrics) == accuracies(uninterrupted[0])
    assert [row["epoch"] for row in resumed.log] == ["1", "2", "3"]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("at_step", [3, 13])  # mid-epoch 1, and the last step of epoch 1
def test_a_signal_mid_step_saves_between_steps_and_resumes_exactly(
    tmp_path, monkeypatch, uninterrupted, signum, at_step
):
    """The signal arrives inside a chosen step; the step completes, then the run saves and stops.
    Resumed, it ends in exactly the state of the uninterrupted run."""
    config = smoke(tmp_path)
    step, calls = systems.CooperativeSystem.backward_step, []

    def signalled(self, *args):
        calls.append(1)
        if len(calls) == at_step:
            os.kill(os.getpid(), signum)  # delivered while this step is in flight
        return step(self, *args)

    monkeypatch.setattr(systems.CooperativeSystem, "backward_step", signalled)
    with pytest.raises(training.TrainingInterrupted, match=signal.Signals(signum).name):
        train(config, progress=False)
    state = load_checkpoint(run_dir(config) / "checkpoint.pt")
    assert state["global_step"] == at_step  # the step in flight finished, no further one began
    monkeypatch.setattr(systems.CooperativeSystem, "backward_step", step)
    resumed = train(config, progress=False)
    assert final_state_digest(config) == uninterrupted[1]
    assert accuracies(resumed.metrics) == accuracies(uninterrupted[0])


def test_ctrl_c_on_the_command_line_exits_with_one_line(tmp_path):
    """Wherever the signal lands (a step, the evaluation, or after the end), the command ends
    with one line and no traceback; exactness of the resume is the in-process tests' job."""
    config = smoke(tmp_path)
    process = _start_cli(config)
    _wait_for(run_dir(config) / "checkpoint.pt", process)
    process.send_signal(signal.SIGINT)
    output = process.communicate(timeout=300)[0].decode()
    assert process.returncode in (0, 130), output
    assert "Traceback" not in output, output
    if process.returncode == 130:
        assert "interrupted" in output and "resume" in output, output


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


def test_cli_variant_of_an_ablation_flips_its_switches(monkeypatch, capsys):
    from coop_utils.__main__ import main

    seen = []

    def fake_train(config, progress=True, **kwargs):
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


def test_shared_bn_ablation_reuses_the_trained_run(tmp_path, monkeypatch):
    base = train(smoke(tmp_path, method="cooperative"), progress=False)

    def no_training(*args, **kwargs):
        raise AssertionError("the shared-bn ablation must reuse the trained networks")

    monkeypatch.setattr(training._Trainer, "run", no_training)
    config = smoke(tmp_path, method="cooperative", variant="shared-bn", bn_stats="shared")
    shared = train(config, progress=False)
    assert shared.summary_path.name == "cooperative-shared-bn.json"
    for key in ("top1", "top5", "flops"):  # the Leader has one depth: nothing to re-estimate
        assert shared.metrics["leader"]["1"][key] == base.metrics["leader"]["1"][key]
    recorded = json.loads((shared.directory / "metrics.json").read_text())
    assert recorded["weights_from"] == str(base.directory)
    assert train(config, progress=False).reused


def test_a_finished_run_stores_per_depth_statistics_with_its_teammates(tmp_path):
    config = smoke(tmp_path)
    run = train(config, progress=False)
    system = training.load_system(run)
    for net in system.teammates:
        plans = {tuple(net.active_blocks(s)) for s in config.scaling_factors}
        assert net.bn_plans.shape[0] == len(plans) and all(
            net.plan_index(p) is not None for p in plans
        )
    assert not system.leader.has_plan_stats  # one depth, its training statistics


def test_evaluation_at_a_depth_does_not_depend_on_the_last_epochs_drawn_factors(tmp_path):
    """Two copies of a network whose running statistics were moved by sub-network passes at
    different scaling factors evaluate identically once per-depth statistics are estimated."""
    from coop_utils.models import calibrate_batchnorm

    config = smoke(tmp_path)
    data = prepare_data(config, torch.device("cpu"))
    torch.manual_seed(0)
    net = build_system(config, data.num_classes, data.image_size).teammates[0]
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(module.weight, 0.5, 1.5)
    images = next(iter(data.test))[0]
    outputs = []
    for drawn in ((0.2, 0.3), (0.8, 0.9)):
        copy_ = copy.deepcopy(net).train()
        with torch.no_grad():
            for s in drawn:
                copy_(images, mask=copy_.gate.sample(s, generator=torch.Generator().manual_seed(0)))
        calibrate_batchnorm(copy_, calibration_batches(data))
        copy_.eval()
        with torch.no_grad():
            outputs.append([copy_(images, s=s) for s in config.scaling_factors])
        outputs[-1].append(copy_.blocks[1].residual[1].running_mean.clone())  # shared stats
    for first, second in zip(outputs[0][:-1], outputs[1][:-1], strict=True):
        torch.testing.assert_close(first, second, rtol=0, atol=0)
    assert not torch.equal(outputs[0][-1], outputs[1][-1])  # the shared statistics did differ


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


def test_a_run_made_by_other_code_is_set_aside_and_trained_again(tmp_path, monkeypatch, capsys):
    config = smoke(tmp_path, method="byot", epochs=1)
    first = train(config, progress=False)
    recorded = json.loads(first.summary_path.read_text())
    assert recorded["code_digest"] == training.runs.code_digest()[0]
    assert recorded["precision"] == "fp32" and recorded["data_fingerprint"]
    monkeypatch.setattr(training.runs, "code_digest", lambda: ("0123456789abcdef", False))
    assert train(config, progress=False, reuse_stale=True).reused  # asked for: reused as it is
    again = train(config, progress=False)
    assert not again.reused
    assert "made by other code or data (code_digest" in capsys.readouterr().out
    aside = list(run_dir(config).parent.glob(f"{run_dir(config).name}.stale-*"))
    assert len(aside) == 1 and (aside[0] / "metrics.json").exists()  # nothing was deleted
    assert json.loads(again.summary_path.read_text())["code_digest"] == "0123456789abcdef"
    assert train(config, progress=False).reused


def test_a_recorded_run_stands_while_its_behaviour_digest_does(tmp_path, monkeypatch, capsys):
    """A recorded profile's run carries a behaviour digest: other code bytes that train alike
    keep it (nothing to record), a digest that moves sets it aside and trains it again."""
    config = smoke(tmp_path, method="byot", epochs=1).replace(profile="preview")
    today = {"digest": "aaaa"}
    monkeypatch.setattr(
        training.runs, "behaviour_digests", lambda configs: {digest_key(config): today["digest"]}
    )
    first = train(config, progress=False)
    assert json.loads(first.summary_path.read_text())["behaviour_digest"] == "aaaa"
    monkeypatch.setattr(training.runs, "code_digest", lambda: ("0123456789abcdef", False))
    assert train(config, progress=False).reused  # a docstring edit: same behaviour, reused
    today["digest"] = "bbbb"  # a change to what training does
    again = train(config, progress=False)
    assert not again.reused
    assert "(behaviour_digest aaaa -> bbbb" in capsys.readouterr().out
    assert json.loads(again.summary_path.read_text())["behaviour_digest"] == "bbbb"
    assert train(config, progress=False).reused


def test_learning_rate_schedules_end_where_they_should():
    config = load_config("smoke", epochs=4, lr=0.1, lr_milestones=(2,), lr_gamma=0.5)
    step = [training.learning_rate(config, t, 10, 40) for t in (0, 19, 20, 39)]
    assert step == pytest.approx([0.1, 0.1, 0.05, 0.05])
    linear = config.replace(lr_schedule="linear")
    assert [training.learning_rate(linear, t, 10, 40) for t in (0, 20, 39)] == pytest.approx(
        [0.1, 0.05, 0.0025]
    )
    cosine = config.replace(lr_schedule="cosine")
    assert [training.learning_rate(cosine, t, 10, 40) for t in (0, 20)] == pytest.approx(
        [0.1, 0.05]
    )
    assert training.learning_rate(cosine, 39, 10, 40) < 0.001


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


# --- the GPU path, checked on the CPU -------------------------------------------------------


def _peak_saved_bytes(config, monkeypatch):
    """Peak bytes that autograd holds for backward over a short run's training steps (the
    final evaluation is left out: it saves nothing, and it is slow)."""
    monkeypatch.setattr(training, "evaluate_system", lambda *args: {})
    monkeypatch.setattr(training, "calibration_batches", lambda data: [])
    with SavedActivations() as saved:
        train(config, progress=False)
    return saved.peak


def test_a_step_under_a_process_group_holds_one_pass_at_a_time(tmp_path, monkeypatch):
    """A one-process gloo group, as torchrun starts for one process: the step holds what the
    pass-by-pass step of a plain run holds."""
    config = smoke(tmp_path, max_steps=3)
    alone = _peak_saved_bytes(config.replace(run_root=str(tmp_path / "alone")), monkeypatch)
    store = f"file://{tmp_path / 'store'}"
    dist.init_process_group("gloo", init_method=store, rank=0, world_size=1)
    try:
        grouped = config.replace(run_root=str(tmp_path / "group"))
        in_group = _peak_saved_bytes(grouped, monkeypatch)
    finally:
        dist.destroy_process_group()
    assert in_group <= 1.3 * alone, (in_group, alone)


def test_compiled_training_holds_one_pass_at_a_time_and_compiles_each_block_kind_once(
    tmp_path, monkeypatch
):
    """Fresh scaling factors and Gumbel masks every step: the compiled blocks keep one graph per
    block shape and way of running, never hitting dynamo's recompile limit, and a compiled step
    holds no more than an eager one."""
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    monkeypatch.setattr(models, "_COMPILED_BLOCKS", {}, raising=False)
    monkeypatch.setattr(torch._dynamo.config, "fail_on_recompile_limit_hit", True)
    config = smoke(tmp_path, sampling="per_batch", gate_gradient="all", max_steps=5)
    eager = _peak_saved_bytes(config.replace(run_root=str(tmp_path / "eager")), monkeypatch)
    torch._dynamo.reset()
    counters.clear()
    try:
        compiled = config.replace(compile=True, run_root=str(tmp_path / "compiled"))
        peak = _peak_saved_bytes(compiled, monkeypatch)
        graphs = counters["stats"]["unique_graphs"]
    finally:
        torch._dynamo.reset()
    assert peak <= 1.3 * eager, (peak, eager)
    stages = 3  # resnet20: per stage a first block, and gateable blocks run three ways
    assert 0 < graphs <= 4 * stages, graphs


def _torchrun_train(tmp_path, *arguments):
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
    command += ["--standalone", "-m", "coop_utils", "train", "--profile", "smoke"]
    command += ["--method", "cooperative", "--set", "max_steps=2", *arguments]
    command += ["--set", f"run_root={tmp_path / 'runs'}"]
    command += ["--set", f"results_root={tmp_path / 'results'}"]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result.stdout


def test_under_torchrun_rank_zero_alone_reuses_or_sets_aside_a_run(tmp_path):
    """Two processes: the shared-bn ablation of a finished run is evaluated by rank 0 while the
    other waits; a stale run is set aside once and trained again by both."""
    base = smoke(tmp_path, max_steps=2)
    train(base, progress=False)
    output = _torchrun_train(tmp_path, "--variant", "shared-bn")
    shared = run_dir(base.replace(bn_stats="shared", variant="shared-bn"))
    assert json.loads((shared / "metrics.json").read_text())["weights_from"] == str(run_dir(base))
    assert output.count("finished:") == 1, output

    provenance = run_dir(base) / "provenance.json"
    recorded = json.loads(provenance.read_text())
    provenance.write_text(json.dumps(recorded | {"code_digest": "0123456789abcdef"}))
    output = _torchrun_train(tmp_path)
    assert output.count("retraining") == 1 and output.count("finished:") == 1, output
    assert len(list(run_dir(base).parent.glob(f"{run_dir(base).name}.stale-*"))) == 1
    assert (run_dir(base) / "metrics.json").exists()


def test_the_process_group_follows_the_device_and_ends_with_the_process(monkeypatch):
    calls = []
    monkeypatch.setattr(dist, "is_torchelastic_launched", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setattr(training.atexit, "register", lambda handler: calls.append(handler))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert training._distributed(torch.device("cpu")) == (0, 1)  # on a GPU machine too
    assert calls[0] == {"backend": "gloo"}
    training._distributed(torch.device("cuda", 1))
    assert calls[2] == {"backend": "nccl", "device_id": torch.device("cuda", 1)}
    destroyed = []
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "destroy_process_group", lambda: destroyed.append(1))
    calls[1]()  # the handler registered for the process's exit
    assert destroyed == [1]


def test_evaluation_and_calibration_batches_do_not_depend_on_the_number_of_processes(tmp_path):
    config = smoke(tmp_path, bn_batches=2)
    alone = prepare_data(config, torch.device("cpu"))
    torch.manual_seed(0)
    net = build_system(config, alone.num_classes, alone.image_size).teammates[0]
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(module.weight, 0.5, 1.5)
    stats = []
    for world_size in (1, 2):
        data = prepare_data(config, torch.device("cpu"), rank=0, world_size=world_size)
        assert data.train.batch_size == config.batch_size // world_size
        for name in ("val", "test", "calibration"):
            batches = [(x, y) for x, y in getattr(data, name)]
            expected = [(x, y) for x, y in getattr(alone, name)]
            assert len(batches) == len(expected) and all(
                torch.equal(x, x0) and torch.equal(y, y0)
                for (x, y), (x0, y0) in zip(batches, expected, strict=True)
            ), name
        calibrated = copy.deepcopy(net)
        calibrate_batchnorm(calibrated, calibration_batches(data), config.scaling_factors)
        stats.append({k: v for k, v in calibrated.state_dict().items() if "plan_" in k})
    assert stats[0].keys() == stats[1].keys() and stats[0]
    assert all(torch.equal(stats[0][k], stats[1][k]) for k in stats[0])


def test_the_loaders_share_one_copy_of_the_training_images_on_the_device(tmp_path):
    data = prepare_data(smoke(tmp_path), torch.device("meta"))
    assert data.train.images.device.type == "meta"
    assert data.train.images is data.val.images is data.calibration.images


def test_the_independent_step_holds_one_network_at_a_time_with_the_same_gradients():
    config = load_config("smoke", method="independent")
    torch.manual_seed(0)
    system = build_system(config, num_classes=10, image_size=32)
    images, labels = torch.randn(8, 3, 32, 32), torch.arange(8) % 10
    joint = copy.deepcopy(system)
    with SavedActivations() as step:
        loss, _ = system.backward_step(images, labels, None)
    singles = []
    for factors, net in zip(system.factors, copy.deepcopy(system).nets, strict=True):
        with SavedActivations() as single:
            F.cross_entropy(net(images, s=factors[0]), labels).backward()
        singles.append(single.peak)
    assert step.peak <= 1.3 * max(singles), (step.peak, singles)
    joint_loss, _ = joint(images, labels, None)
    joint_loss.backward()
    assert torch.equal(loss, joint_loss.detach())
    for (name, p), q in zip(system.named_parameters(), joint.parameters(), strict=True):
        assert (p.grad is None) == (q.grad is None) and (
            p.grad is None or torch.equal(p.grad, q.grad)
        ), name
