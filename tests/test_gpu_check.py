"""benchmarks/gpu_check.py on a machine without CUDA: its refusal, its arguments, its arithmetic."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from coop_utils.config import ABLATIONS, load_config
from coop_utils.data import make_fake_tiny_imagenet
from coop_utils.evaluate import count_flops

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
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


def test_the_data_root_comes_from_the_environment_else_gpu_data(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("COOP_DATA_ROOT", raising=False)
    assert gpu_check.parse_args([]).data_root == Path("gpu-data")
    monkeypatch.setenv("COOP_DATA_ROOT", str(tmp_path))
    args = gpu_check.parse_args([])
    assert args.data_root == tmp_path and args.full_steps == gpu_check.DEFAULT_FULL_STEPS
    assert gpu_check.parse_args(["--data-root", "x"]).data_root == Path("x")


def test_valid_arguments_pass(data_root: Path) -> None:
    gpu_check.check_arguments(gpu_check.parse_args(["--data-root", str(data_root)]))
    skipping = ["--skip-train", "--data-root", "/nonexistent", "--record", "out.json"]
    gpu_check.check_arguments(gpu_check.parse_args(skipping))  # no data needed


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--data-root", "{tmp}/nothing"], "holds no tiny-imagenet-200/ folder"),
        (["--data-root", "{data}", "--full-steps", "0"], "--full-steps must be at least 1"),
        (["--data-root", "{data}", "--skip-throughput", "--record", "a.json"], "--record"),
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


def test_halving_on_oom_finds_a_batch_that_fits() -> None:
    tried = []

    def run(batch: int) -> str:
        tried.append(batch)
        if batch > 32:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return f"ran {batch}"

    assert gpu_check.halving_on_oom(run, 128) == ("ran 32", 32) and tried == [128, 64, 32]
    with pytest.raises(torch.cuda.OutOfMemoryError):
        gpu_check.halving_on_oom(run, 128, minimum=64)


def test_time_step_is_steps_per_second_and_the_peak_memory_of_the_timed_steps(monkeypatch) -> None:
    steps, resets = [], []

    def step_of_10_ms() -> None:
        steps.append(None)
        time.sleep(0.01)

    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda: resets.append(len(steps)))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda: 123)
    steps_per_s, peak = gpu_check.time_step(step_of_10_ms)
    assert 20 < steps_per_s <= 100 and peak == 123
    assert resets[0] >= gpu_check.WARMUP_STEPS
    assert len(steps) - resets[-1] == gpu_check.TIMED_STEPS  # the peak spans the timed steps
