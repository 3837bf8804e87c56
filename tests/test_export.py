"""Shipping one depth: a plan exported as a plain network equals the gated network at that plan,
and its .pt2 and ONNX files, written by the library or by the command, load back equal, with the
input normalisation of the run recorded in them."""

import copy
import dataclasses
import importlib.util
import json
import re
import shutil

import pytest
import torch
from torch import nn

from coop_utils import export, training, verdict
from coop_utils.__main__ import main
from coop_utils.config import load_config
from coop_utils.evaluate import choose_scaling_factor, count_flops
from coop_utils.gating import add_gate
from coop_utils.loaders import prepare_data
from coop_utils.models import PlanBatchNorm2d, build_model, calibrate_batchnorm, distinct_plans

ONNX_MISSING = [p for p in ("onnx", "onnxscript", "onnxruntime") if not importlib.util.find_spec(p)]
needs_onnx = pytest.mark.skipif(
    bool(ONNX_MISSING),
    reason=f"ONNX needs the [export] extra ({', '.join(ONNX_MISSING)} missing): "
    "pip install -e '.[export]'",
)


def gated_network(seed=0, calibrate=(0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)):
    """A resnet20 with a gate of random logits, non-zero residual branches and, unless
    ``calibrate`` is empty, per-depth statistics of random batches."""
    torch.manual_seed(seed)
    net = build_model("resnet20", num_classes=10, image_size=32)
    nn.init.normal_(add_gate(net).logits)
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.normal_(module.bias, 0.0, 0.1)
    if calibrate:
        batches = [torch.randn(8, 3, 32, 32) * 2 + 0.5 for _ in range(3)]
        calibrate_batchnorm(net, batches, calibrate)
    return net.eval()


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("export-run")
    config = load_config("smoke", run_root=str(root / "runs"), results_root=str(root / "results"))
    run = training.train(config, progress=False)
    return run, training.load_system(run)


def run_export(*arguments):
    return main(["export", *map(str, arguments)])


def test_an_exported_plan_equals_the_gated_network_at_every_distinct_plan():
    net = gated_network()
    images = torch.randn(5, 3, 32, 32)
    plans = distinct_plans(net)
    assert len(plans) >= 3
    for blocks, s in plans.items():
        shipped = export.export_plan(net, s)
        assert shipped.plan_blocks == list(blocks) and len(shipped.blocks) == len(blocks)
        assert not any(isinstance(m, PlanBatchNorm2d) for m in shipped.modules())
        assert not hasattr(shipped, "gate") and "s" not in shipped.forward.__code__.co_varnames
        with torch.no_grad():
            assert torch.allclose(shipped(images), net(images, s=s), atol=1e-5, rtol=0)
        assert count_flops(net, s) == _flops(shipped)


def _flops(module):
    counter = torch.utils.flop_counter.FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        module(torch.zeros(1, 3, 32, 32))
    return counter.get_total_flops()


def test_an_exported_plan_holds_its_plans_statistics_and_the_same_weights():
    net = gated_network()
    s = 0.5
    row = net.plan_index(net.active_blocks(s))
    shipped = export.export_plan(net, s)
    source_norm = net.blocks[net.active_blocks(s)[-1]].residual[1]
    shipped_norm = shipped.blocks[-1].residual[1]
    assert type(shipped_norm) is nn.BatchNorm2d
    assert torch.equal(shipped_norm.running_mean, source_norm.plan_mean[row])
    assert torch.equal(shipped_norm.running_var, source_norm.plan_var[row])
    assert not torch.equal(shipped_norm.running_mean, source_norm.running_mean)
    last = net.blocks[net.active_blocks(s)[-1]]
    assert torch.equal(shipped.blocks[-1].residual[0].weight, last.residual[0].weight)
    # a copy: changing the shipped network leaves the source alone
    with torch.no_grad():
        shipped.fc.weight.zero_()
    assert net.fc.weight.abs().sum() > 0


def test_shared_statistics_are_exported_only_on_purpose():
    net = gated_network(calibrate=())
    with pytest.raises(ValueError, match="no per-depth batch-norm statistics.*--shared-bn"):
        export.export_plan(net, 0.5)
    shipped = export.export_plan(net, 0.5, shared_bn=True)
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(shipped(images), net(images, s=0.5), atol=1e-5, rtol=0)
    # statistics stored for the full plan only: no row for s = 0.5
    with pytest.raises(ValueError, match="no per-depth batch-norm statistics for the plan"):
        export.export_plan(gated_network(calibrate=(1.0,)), 0.5)


@pytest.mark.parametrize("s", [0.0, -0.1, 1.5])
def test_a_scaling_factor_outside_the_unit_interval_is_refused(s):
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        export.export_plan(gated_network(calibrate=()), s)


NORMALISATION = export.Normalisation((0.5, 0.45, 0.4), (0.25, 0.24, 0.26), 32)


def test_normalisation_prepares_raw_images_and_reads_back_from_json_and_samples():
    norm = NORMALISATION
    raw = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    mean, std = torch.tensor(norm.mean).view(1, 3, 1, 1), torch.tensor(norm.std).view(1, 3, 1, 1)
    expected = (raw.float() / 255 - mean) / std
    assert torch.allclose(norm(raw), expected, atol=1e-6)
    assert torch.allclose(norm(raw.float() / 255), expected, atol=1e-6)
    assert export.Normalisation.from_json(norm.to_json()) == norm
    fitted = export.Normalisation.of_samples(raw, expected)
    assert fitted.image_size == 32
    assert torch.allclose(torch.tensor(fitted.mean), mean.flatten(), atol=1e-6)
    assert torch.allclose(torch.tensor(fitted.std), std.flatten(), atol=1e-6)
    with pytest.raises(ValueError, match="N x 3 x 32 x 32"):
        norm(torch.rand(2, 3, 64, 64))
    with pytest.raises(ValueError, match="std must be positive"):
        export.Normalisation((0.5,) * 3, (0.2, 0.0, 0.2), 32)


@pytest.mark.parametrize("text", ["{not json", '{"mean": [0.5], "std": [0.2]}', "[0.5, 0.2]"])
def test_a_recorded_normalisation_that_is_not_one_is_named_in_one_line(text):
    with pytest.raises(ValueError, match="^the normalisation of net.pt2 is not ") as caught:
        export.Normalisation.from_json(text, "the normalisation of net.pt2")
    assert "\n" not in str(caught.value)


def test_pt2_file_loads_back_equal_at_any_batch_size_with_its_normalisation(tmp_path):
    net = gated_network()
    shipped = export.export_plan(net, 0.4)
    path = export.save_plan(shipped, tmp_path / "plan.pt2", normalisation=NORMALISATION)
    extra = {"normalisation.json": ""}
    program = torch.export.load(path, extra_files=extra)  # a plain ExportedProgram
    assert isinstance(program, torch.export.ExportedProgram)
    recorded = json.loads(extra["normalisation.json"])
    assert recorded == {"mean": [0.5, 0.45, 0.4], "std": [0.25, 0.24, 0.26], "image_size": 32}
    loaded, norm = export.load_plan(path)
    assert norm == NORMALISATION
    for batch in (1, 6):
        images = norm(torch.rand(batch, 3, 32, 32))  # raw images, as documented
        with torch.no_grad():
            assert torch.allclose(loaded(images), shipped(images), atol=1e-5, rtol=0)
            assert torch.allclose(loaded(images), net(images, s=0.4), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="exists; --force"):
        export.save_plan(shipped, path)
    export.save_plan(shipped, path, force=True)  # no normalisation given: none recorded
    assert export.load_plan(path).normalisation is None
    with pytest.raises(ValueError, match="for 64 px images"):
        wide = dataclasses.replace(NORMALISATION, image_size=64)
        export.save_plan(shipped, tmp_path / "other.pt2", normalisation=wide)


@needs_onnx
def test_onnx_file_loads_back_equal_in_onnx_runtime_with_its_normalisation(tmp_path):
    import onnx
    import onnxruntime

    net = gated_network()
    shipped = export.export_plan(net, 0.7)
    path = export.save_plan(shipped, tmp_path / "plan.onnx", normalisation=NORMALISATION)
    metadata = {entry.key: entry.value for entry in onnx.load(str(path)).metadata_props}
    assert export.Normalisation.from_json(metadata["normalisation"]) == NORMALISATION
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    loaded, norm = export.load_plan(path)
    assert norm == NORMALISATION
    for batch in (1, 6):
        images = norm(torch.rand(batch, 3, 32, 32))
        (logits,) = session.run(None, {session.get_inputs()[0].name: images.numpy()})
        with torch.no_grad():
            assert torch.allclose(torch.from_numpy(logits), shipped(images), atol=1e-5, rtol=0)
        assert torch.allclose(loaded(images), torch.from_numpy(logits))


def test_torchscript_and_contradicting_formats_are_refused_naming_pt2():
    for path, fmt in [("net.pt", None), ("net.ts", None), ("net.pt2", "torchscript")]:
        with pytest.raises(ValueError, match=r"TorchScript is no longer written.*\.pt2"):
            export.format_of(path, fmt)
    with pytest.raises(ValueError, match=r"TorchScript is no longer written.*\.pt2"):
        export.check_format("torchscript")
    assert [export.format_of(p) for p in ("a.pt2", "a.onnx", "a.bin")] == ["pt2", "onnx", "pt2"]
    with pytest.raises(ValueError, match="cannot hold the onnx format"):
        export.format_of("net.pt2", "onnx")


def test_a_format_whose_extra_is_absent_is_refused_naming_the_extra(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name, *a)
    )
    with pytest.raises(ValueError, match=r"needs onnx.*\[export\]"):
        export.check_format("onnx")
    with pytest.raises(ValueError, match="unknown format"):
        export.check_format("tflite")
    export.check_format("pt2")


# --- the command, on a cooperative smoke run ------------------------------------------------


def test_the_command_exports_the_deployed_teammate_to_pt2_with_the_runs_normalisation(
    smoke_run, tmp_path, capsys
):
    run, system = smoke_run
    deployed = verdict.deployed_teammate(run.metrics)
    net = system.teammates[int(deployed.removeprefix("teammate"))]
    assert run_export(run.directory, "--s", 0.5, "--output", tmp_path / "net.pt2") == 0
    printed = capsys.readouterr().out
    assert f"{deployed} of" in printed and str(net.active_blocks(0.5)) in printed
    assert f"{count_flops(net, 0.5):,} FLOPs" in printed and " MB" in printed
    assert "of the run's training images; recorded in the file" in printed
    loaded, norm = export.load_plan(tmp_path / "net.pt2")
    # the recorded normalisation is the run's: raw test images normalised by it are the very
    # batch the run's evaluation loader feeds the network
    test = prepare_data(run.config, torch.device("cpu")).test
    batch = next(iter(test))[0]
    raw = test.images[: len(batch)]
    assert norm.image_size == run.config.image_size == net.image_size == raw.shape[-1]
    assert torch.allclose(norm(raw), batch, atol=1e-5, rtol=0)
    assert torch.allclose(norm(raw.float() / 255), batch, atol=1e-5, rtol=0)
    with torch.no_grad():
        assert torch.allclose(loaded(norm(raw)), net(batch, s=0.5), atol=1e-4, rtol=0)


@needs_onnx
def test_the_command_exports_to_onnx_within_a_flops_budget(smoke_run, tmp_path, capsys):
    import onnxruntime

    run, system = smoke_run
    net = system.teammates[1]
    budget = 0.7 * count_flops(net, 1.0)
    s = choose_scaling_factor(net, budget_flops=budget, scaling_factors=run.config.scaling_factors)
    output = tmp_path / "net.onnx"
    assert (
        run_export(run.directory, "--budget-flops", budget, "--network", "teammate1", "-o", output)
        == 0
    )
    assert f"s = {s:g}" in capsys.readouterr().out
    session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    images = torch.randn(3, 3, 32, 32)
    (logits,) = session.run(None, {session.get_inputs()[0].name: images.numpy()})
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(logits), net(images, s=s), atol=1e-5, rtol=0)


def test_the_command_refuses_bad_input_in_one_line_before_any_work(
    smoke_run, tmp_path, capsys, monkeypatch
):
    run, system = smoke_run
    shallowest = count_flops(system.teammates[0], min(run.config.scaling_factors))
    output = tmp_path / "net.pt2"
    cases = [
        (["--s", 0], r"\(0, 1\]"),
        (["--s", 1.2], r"\(0, 1\]"),
        (["--budget-flops", shallowest - 1], f"{shallowest:,} FLOPs"),
        (["--s", 0.5, "--network", "leader"], "no per-depth batch-norm statistics"),
        (["--s", 0.5, "--network", "teammate9"], "no network 'teammate9'"),
    ]
    for arguments, message in cases:
        assert run_export(run.directory, *arguments, "-o", output) == 2
        error = capsys.readouterr().err
        assert error.startswith("error: ") and error.count("\n") == 1, error
        assert re.search(message, error), error
        assert not output.exists()
    # format and argument errors: refused before the network is loaded, the old file kept
    kept = tmp_path / "kept.pt"
    kept.write_bytes(b"keep me")
    monkeypatch.setattr(export, "load_network", lambda *a: pytest.fail("loaded"))
    refused = [
        (["-o", kept, "--force"], r"TorchScript is no longer written.*\.pt2"),
        (["-o", tmp_path / "net.ts"], r"TorchScript is no longer written.*\.pt2"),
        (["-o", output, "--format", "torchscript"], r"TorchScript is no longer written.*\.pt2"),
        (["-o", output, "--mean", 0.5, 0.5, 0.5], "--mean and --std go together"),
        (["-o", output, "--mean", 0.5, 0.5, 0.5, "--std", 0.2, 0, 0.2], "std must be positive"),
    ]
    for arguments, message in refused:
        assert run_export(run.directory, "--s", 0.5, *arguments) == 2
        error = capsys.readouterr().err
        assert error.startswith("error: ") and error.count("\n") == 1, error
        assert re.search(message, error), error
    assert kept.read_bytes() == b"keep me" and not output.exists()
    monkeypatch.undo()
    assert run_export(run.directory, "--s", 0.5, "-o", tmp_path / "absent" / "net.pt2") == 2
    assert "output folder" in capsys.readouterr().err
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    assert run_export(run.directory, "--s", 0.5, "-o", tmp_path / "net.onnx") == 2
    assert "[export]" in capsys.readouterr().err
    monkeypatch.undo()
    output.write_bytes(b"keep me")
    assert run_export(run.directory, "--s", 0.5, "-o", output) == 2
    assert "--force" in capsys.readouterr().err and output.read_bytes() == b"keep me"
    assert run_export(run.directory, "--s", 0.5, "-o", output, "--force") == 0
    # the Leader trains at full depth only: its shared statistics are its full plan's
    assert (
        run_export(run.directory, "--s", 1.0, "--network", "leader", "-o", output, "--force") == 0
    )
    assert (
        run_export(
            run.directory, "--s", 0.5, "--network", "leader", "--shared-bn", "-o", output, "--force"
        )
        == 0
    )


def test_a_weights_file_of_one_network_exports_like_its_run(smoke_run, tmp_path, capsys):
    run, system = smoke_run
    net = system.teammates[1]
    path = export.save_network(net, tmp_path / "weights" / "teammate1.pt", run.config, "teammate1")
    state = torch.load(path, weights_only=True)
    assert state["network"] == "teammate1" and state["config"]["arch"] == "resnet20"
    assert run_export(path, "--s", 0.5, "-o", tmp_path / "a.pt2") == 0
    assert "teammate1 of" in capsys.readouterr().out
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        reference = net(images, s=0.5)
        assert torch.allclose(
            export.load_plan(tmp_path / "a.pt2").net(images), reference, atol=1e-5
        )

    # fp16, a bare state dict, the config beside it in config.json
    half = tmp_path / "half"
    half.mkdir()
    state = {k: v.half() if v.is_floating_point() else v for k, v in net.state_dict().items()}
    torch.save(state, half / "teammate1.pt")
    shutil.copy(run.directory / "config.json", half / "config.json")
    loaded, name, config = export.load_network(half / "teammate1.pt")
    assert name == "teammate1" and config.arch == run.config.arch
    assert loaded.fc.weight.dtype == torch.float32
    with torch.no_grad():
        assert (loaded(images, s=0.5) - reference).abs().max() < 0.05
    assert run_export(half / "teammate1.pt", "--s", 0.5, "-o", tmp_path / "b.pt2") == 0

    # a file without a config, and one of another network than asked
    (half / "config.json").unlink()
    with pytest.raises(ValueError, match="no config.json beside it"):
        export.load_network(half / "teammate1.pt")
    with pytest.raises(ValueError, match="holds one network, teammate1"):
        export.load_network(path, "leader")

    # a network without per-depth statistics needs --shared-bn
    net = copy.deepcopy(net)
    net.set_plan_stats([], [])
    bare = export.save_network(net, tmp_path / "bare.pt", run.config, "teammate1")
    assert run_export(bare, "--s", 0.5, "-o", tmp_path / "c.pt2") == 2
    assert "--shared-bn" in capsys.readouterr().err
    assert run_export(bare, "--s", 0.5, "-o", tmp_path / "c.pt2", "--shared-bn") == 0


def test_the_normalisation_is_the_runs_data_checked_or_else_stated(smoke_run, tmp_path, capsys):
    run, system = smoke_run
    # a run folder whose recorded data is not the data found: refused, nothing written
    copied = tmp_path / "run"
    shutil.copytree(run.directory, copied)
    provenance = json.loads((copied / "provenance.json").read_text())
    (copied / "provenance.json").write_text(json.dumps(provenance | {"data_fingerprint": "0" * 16}))
    assert run_export(copied, "--s", 0.5, "-o", tmp_path / "a.pt2") == 2
    error = capsys.readouterr().err
    assert "is not the data" in error and "--mean and --std" in error and error.count("\n") == 1
    assert not (tmp_path / "a.pt2").exists()

    # a weights file whose data is absent: refused, unless the normalisation is stated
    absent = run.config.replace(data="real", data_root=str(tmp_path / "no-data"))
    path = export.save_network(system.teammates[0], tmp_path / "teammate0.pt", absent, "teammate0")
    assert run_export(path, "--s", 0.5, "-o", tmp_path / "b.pt2") == 2
    error = capsys.readouterr().err
    assert "not found" in error and "--mean and --std" in error and error.count("\n") == 1
    assert not (tmp_path / "b.pt2").exists()
    stated = ["--mean", 0.5, 0.4, 0.3, "--std", 0.2, 0.25, 0.3]
    assert run_export(path, "--s", 0.5, "-o", tmp_path / "b.pt2", *stated) == 0
    assert "as stated; recorded in the file" in capsys.readouterr().out
    expected = export.Normalisation((0.5, 0.4, 0.3), (0.2, 0.25, 0.3), 32)
    assert export.load_plan(tmp_path / "b.pt2").normalisation == expected


def test_a_finished_campaign_run_records_its_log_and_seed_zero_weights(smoke_run):
    run, system = smoke_run
    written = export.record_run_files(run)
    log, *weights = written
    assert (
        log.name == "cooperative.csv" and log.read_text() == (run.directory / "log.csv").read_text()
    )
    assert sorted(path.name for path in weights) == ["leader.pt", "teammate0.pt", "teammate1.pt"]
    for path in weights:
        assert path.stat().st_size < 2_000_000
        state = torch.load(path, weights_only=True)
        assert all(v.dtype != torch.float32 for v in state["state"].values())
    loaded, name, _ = export.load_network(next(p for p in weights if p.stem == "teammate0"))
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():  # fp16 weights: the same network within half precision
        gap = (loaded(images, s=0.5) - system.teammates[0](images, s=0.5)).abs().max()
    assert name == "teammate0" and gap < 0.05
    seed1 = dataclasses.replace(run, config=run.config.replace(seed=1))
    assert [path.suffix for path in export.record_run_files(seed1)] == [".csv"]  # no weights
