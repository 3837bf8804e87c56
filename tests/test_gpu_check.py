"""benchmarks/gpu_check.py on a machine without CUDA: its refusal, its arguments, its arithmetic."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from coop_utils.config import ABLATIONS, load_config
from coop_utils.evaluate import count_flops
from coop_utils.generated import make_fake_tiny_imagenet

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
import activation_memory  # noqa: E402
import gpu_check  # noqa: E402
from train_step import cooperative_step  # noqa: E402


def run_script(*arguments: str) -> subprocess.CompletedProcess:
    env = os.environ | {"CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "gpu_check.py"), *arguments],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=120,
    )


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA"
)
def test_without_cuda_it_says_so_in_one_line_and_exits_2() -> None:
    for arguments in [(), ("--data-root", "/nonexistent")]:  # CUDA is checked first
        result = run_script(*arguments)
        output = (result.stdout + result.stderr).strip()
        assert result.returncode == 2 and "CUDA" in output and "\n" not in output


def test_help_exits_0() -> None:
    result = run_script("--help")
    assert result.returncode == 0 and "--full-steps" in result.stdout


# --- arguments --------------------------------------------------------------------------------


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    make_fake_tiny_imagenet(
        tmp_path / "gpu-data", images_per_class=2, val_per_class=1, num_classes=3
    )
    return tmp_path / "gpu-data"


def test_the_data_root_comes_from_the_environment_else_gpu_data_else_generated(
    monkeypatch, tmp_path, data_root
) -> None:
    monkeypatch.delenv("COOP_DATA_ROOT", raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert gpu_check.resolve_data_root(gpu_check.parse_args([])) is None  # generated images
    (work / "gpu-data").symlink_to(data_root)
    assert gpu_check.resolve_data_root(gpu_check.parse_args([])) == Path("gpu-data")
    monkeypatch.setenv("COOP_DATA_ROOT", str(tmp_path))
    args = gpu_check.parse_args([])
    assert gpu_check.resolve_data_root(args) == tmp_path
    assert args.full_steps == gpu_check.DEFAULT_FULL_STEPS
    assert gpu_check.resolve_data_root(gpu_check.parse_args(["--data-root", "x"])) == Path("x")


def test_valid_arguments_pass(data_root: Path, monkeypatch, tmp_path) -> None:
    gpu_check.check_arguments(gpu_check.parse_args(["--data-root", str(data_root)]))
    skipping = ["--skip-full", "--data-root", "/nonexistent", "--record", "out.json"]
    gpu_check.check_arguments(gpu_check.parse_args(skipping))  # no data needed
    monkeypatch.delenv("COOP_DATA_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    gpu_check.check_arguments(gpu_check.parse_args([]))  # no subset: generated images


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--data-root", "{tmp}/nothing"], "holds no tiny-imagenet-200/ folder"),
        (["--data-root", "{data}", "--full-steps", "0"], "--full-steps must be at least 1"),
        (["--skip-full", "--skip-throughput", "--record", "a.json"], "--record"),
        (["--data-root", "{data}", "--run-root", "{data}/tiny-imagenet-200/wnids.txt"], "folder"),
        (["--data-root", "{broken}"], "missing"),
    ],
)
def test_bad_arguments_are_named_in_one_line(arguments, message, data_root, tmp_path) -> None:
    broken = tmp_path / "broken"
    make_fake_tiny_imagenet(broken, images_per_class=1, val_per_class=1, num_classes=2)
    (broken / "tiny-imagenet-200" / "val" / "val_annotations.txt").unlink()
    places = {"tmp": tmp_path, "data": data_root, "broken": broken}
    args = gpu_check.parse_args([argument.format(**places) for argument in arguments])
    with pytest.raises(ValueError, match=message) as raised:
        gpu_check.check_arguments(args)
    assert "\n" not in str(raised.value)


def test_an_unknown_option_is_refused_in_one_line() -> None:
    result = run_script("--colour", "red")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "--colour" in result.stderr


def test_every_method_and_ablation_is_run_with_its_switches() -> None:
    variants = gpu_check.smoke_variants()
    assert {"cooperative", "independent", "byot", "branchynet"} <= set(variants)
    for name, switches in ABLATIONS.items():
        overrides = variants[f"cooperative --variant {name}"]
        assert overrides == {"method": "cooperative", "variant": name, **switches}
        load_config("smoke", **overrides)  # a valid run
    assert len(variants) == 4 + len(ABLATIONS)


# --- arithmetic -------------------------------------------------------------------------------


def test_peak_by_device_name() -> None:
    assert gpu_check.peak_bf16_flops("NVIDIA H100 80GB HBM3") == 989.4e12
    assert gpu_check.peak_bf16_flops("NVIDIA H200") == 989.4e12
    assert gpu_check.peak_bf16_flops("NVIDIA H100 PCIe") == 756.5e12
    assert gpu_check.peak_bf16_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert gpu_check.peak_bf16_flops("NVIDIA GeForce RTX 4090") is None
    # a MIG slice is a share of the chip: the chip's peak would understate its MFU
    assert gpu_check.peak_bf16_flops("NVIDIA H100 80GB HBM3 MIG 3g.40gb") is None
    assert gpu_check.peak_bf16_flops("NVIDIA A100-SXM4-40GB MIG 1g.5gb") is None


def test_mfu_arithmetic() -> None:
    # 2 full-depth passes of 10 FLOPs and sub-networks of 4 and 6, batch 5: 3 * 5 * (20 + 10)
    assert gpu_check.cooperative_step_flops(10, 2, [4, 6], 5) == 450
    assert gpu_check.cooperative_step_flops(10, 3, [], 1) == 90
    assert gpu_check.mfu(450e12, 2.0, 1000e12) == pytest.approx(0.9)
    assert gpu_check.mfu(989.4e12, 0.5, 989.4e12) == pytest.approx(0.5)
    assert gpu_check.mfu(1e15, 1.0, None) is None
    assert gpu_check.format_mfu(0.4567) == "45.7 %" and gpu_check.format_mfu(None) == "n/a"


def test_step_flops_counts_every_pass_of_the_cooperative_step() -> None:
    config = load_config("smoke", batch_size=4)
    step = cooperative_step(config, num_classes=10, image_size=32)
    net = step.system.teammates[0]
    full = count_flops(net, 1.0)
    factors = [s for drawn in step.randomness.epoch_factors for s in drawn]
    assert len(factors) == 4 and full > count_flops(net, min(factors))
    # Leader + 2 Teammates at full depth; with `all`, each of 4 sub-networks costs a full pass
    assert gpu_check.step_flops(step, "all") == 3 * 4 * 7 * full
    teammates, drawn = step.system.teammates, step.randomness.epoch_factors
    kept = [count_flops(t, s) for t, factors in zip(teammates, drawn, strict=True) for s in factors]
    assert gpu_check.step_flops(step, "kept") == 3 * 4 * (3 * full + sum(kept))


def test_the_full_configuration_is_the_full_profiles_at_64_px_and_no_recorded_run(tmp_path):
    config = gpu_check.full_config(None, 20, tmp_path)
    full = load_config("full")
    assert (config.arch, config.batch_size, config.image_size) == (full.arch, 128, 64)
    assert config.dataset == "tiny-imagenet" and config.data == "generated"
    assert config.profile == "smoke"  # a check: no behaviour digest, no recorded summary
    images = 200 * gpu_check.GENERATED_TRAIN_PER_CLASS * (1 - config.val_fraction)
    assert images >= gpu_check.DEFAULT_FULL_STEPS * config.batch_size
    subset = gpu_check.full_config(Path("gpu-data"), 5, tmp_path)
    assert subset.data == "real" and subset.data_root == "gpu-data" and subset.max_steps == 5


def test_the_steps_fit_one_command_with_room_to_spare() -> None:
    assert sum(gpu_check.ESTIMATED_S.values()) <= 0.75 * gpu_check.BUDGET_S
    assert gpu_check.BUDGET_S <= 570 and max(gpu_check.LIMIT_S.values()) < gpu_check.BUDGET_S


def test_a_step_the_budget_no_longer_covers_is_skipped(capsys) -> None:
    report = gpu_check.Report(budget_s=10)
    report.step("first", lambda: "ran", estimate_s=5)
    report.step("second", lambda: "ran", estimate_s=60)
    report.step("third", lambda: 1 / 0)
    output = capsys.readouterr().out
    assert "PASS  first" in output and "SKIP  second" in output and "FAIL  third" in output
    assert report.skipped == ["second"] and report.failed == ["third"]


def test_a_child_result_is_its_last_marked_line() -> None:
    output = f'noise\n{gpu_check.RESULT_MARK}{{"a": 1}}\n{gpu_check.RESULT_MARK}{{"a": 2}}\n'
    assert gpu_check.parse_result(output) == {"a": 2}
    with pytest.raises(RuntimeError, match="no result"):
        gpu_check.parse_result("Traceback ...")


def test_the_compiled_step_keeps_its_graphs_after_warm_up(monkeypatch) -> None:
    """Step b's compiled side on the CPU (dynamo's eager backend): fresh masks every step add
    no graph after warm-up, and the graphs stay within the bound."""
    monkeypatch.setattr(gpu_check, "cooperative_step", cooperative_step)
    config = load_config("smoke", batch_size=2)
    try:
        row = gpu_check.measure_step(
            config, 10, True, None, device="cpu", backend="eager", warmup=2, timed=2
        )
    finally:
        torch._dynamo.reset()
    gpu_check.check_graphs(row)
    assert 0 < row["graphs_after_warmup"] <= row["graph_bound"] == 12
    assert row["mfu"] is None and row["images_per_s"] > 0
    with pytest.raises(RuntimeError, match="recompiled after warm-up"):
        gpu_check.check_graphs(row | {"graphs_after_timed_steps": row["graph_bound"] + 1})
    eager = row | {"compile": False, "images_per_s": row["images_per_s"] / 2}
    assert "2.00x" in gpu_check.side_by_side({"b eager": eager, "b compiled": row})


# --- the memory estimate of the README ----------------------------------------------------------


def test_cuda_autocast_promotion_of_addcmul_is_emulated() -> None:
    x, scale = torch.ones(2, dtype=torch.bfloat16), torch.tensor(0.5)
    with activation_memory.CudaAutocastPromotion(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.addcmul(x, x, scale).dtype == torch.float32
        assert torch.addcmul(x, x, scale.to(x.dtype)).dtype == torch.bfloat16


def test_the_memory_estimate_counts_one_pass_at_a_time_and_scales_with_the_batch() -> None:
    row = activation_memory.estimate("cooperative", 32, 128, arch="resnet20")
    assert 0 < row["pass_by_pass_gib"] < row["one_backward_gib"]
    assert row["pass_by_pass_fits"] > row["one_backward_fits"] > 128
    assert row["step_gib"] == pytest.approx(row["static_gib"] + row["pass_by_pass_gib"])
