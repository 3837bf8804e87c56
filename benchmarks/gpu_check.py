"""Does the training code run on a CUDA GPU, and how fast is the cooperative step there?

For a machine with one CUDA GPU and PyTorch, run from the repository root with its python3
(no virtual environment needed: PyTorch, pandas, seaborn, tqdm and PyYAML suffice):

    make gpu-check                                          # every step
    make gpu-check GPU_CHECK_ARGS="--skip-train --record results/benchmarks/gpu_check.json"
    PYTHONPATH=. python3 benchmarks/gpu_check.py --data-root gpu-data --full-steps 20

Steps, each reported PASS or FAIL with its time; a failed step does not stop the others:

a. every method and every ablation of ``coop_utils.config.ABLATIONS``: a smoke run of a few
   steps on cuda;
b. the full profile's configuration (ResNet-152, batch 128; bf16 autocast and channels-last, as
   training on CUDA does) for ``--full-steps`` steps of one epoch on a Tiny ImageNet subset at
   64 px (``--data-root``, see benchmarks/make_subset.py), then again with ``compile=True``;
   the batch is halved while it runs out of memory;
c. a smoke run under ``torchrun --standalone --nproc_per_node=1``;
d. the cooperative step of ResNet-152 at 32 and 64 px, batch 128, with and without
   torch.compile: images/s, peak GPU memory and MFU (model FLOPs utilisation).

Exit status: 0 when every step passed, 1 when one failed, 2 without CUDA or with bad arguments
(one line, before any work). Target: under 10 minutes on one H100.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
from train_step import CooperativeStep, cooperative_step

from coop_utils import data, training
from coop_utils.config import ABLATIONS, load_config
from coop_utils.evaluate import count_flops
from coop_utils.models import SkippableResNet
from coop_utils.runs import device_name, write_benchmark

REPO_ROOT = Path(__file__).resolve().parents[1]
METHODS = ("cooperative", "independent", "byot", "branchynet")
SMOKE_STEPS = 3
DEFAULT_FULL_STEPS = 50
THROUGHPUT_ARCH = "resnet152"
THROUGHPUT_BATCH = 128
THROUGHPUT_SIZES = (32, 64)
WARMUP_STEPS = 3
TIMED_STEPS = 10
TORCHRUN_TIMEOUT_S = 300

#: dense BF16 tensor-core peak in FLOP/s (without sparsity: half the figure NVIDIA's datasheets
#: give "with sparsity"), by a name the device's name contains; the first match applies
PEAK_BF16_FLOPS = (
    ("H100 PCIE", 756.5e12),  # NVIDIA H100 datasheet, H100 PCIe: 1,513 TFLOPS with sparsity
    ("H100 NVL", 835.5e12),  # NVIDIA H100 datasheet, H100 NVL: 1,671 TFLOPS with sparsity
    ("H200 NVL", 835.5e12),  # NVIDIA H200 datasheet, H200 NVL: 1,671 TFLOPS with sparsity
    ("H100", 989.4e12),  # NVIDIA H100 datasheet, H100 SXM: 1,979 TFLOPS with sparsity
    ("H200", 989.4e12),  # NVIDIA H200 datasheet, H200 SXM: the H100 SXM's tensor cores
    ("A100", 312e12),  # NVIDIA A100 datasheet: 312 TFLOPS dense (624 with sparsity)
)
PEAK_SOURCE = "NVIDIA datasheets, dense BF16 tensor-core peak (without sparsity)"

Result = TypeVar("Result")


# --- pure parts: peak, FLOPs, MFU, what to run ----------------------------------------------


def peak_bf16_flops(name: str) -> float | None:
    """The dense BF16 peak (FLOP/s) of a GPU by its name, or None for a GPU not in the table."""
    normalised = name.upper().replace("-", " ")
    return next((peak for key, peak in PEAK_BF16_FLOPS if key in normalised), None)


def cooperative_step_flops(
    full_depth_flops: int,
    full_depth_passes: int,
    subnetwork_flops: Sequence[int],
    batch_size: int,
) -> int:
    """Training FLOPs of one cooperative step: the forward FLOPs of one image for each pass (the
    full-depth passes of the Leader and the Teammates, then each sub-network's), times 3 for
    forward and backward (a backward costs about two forwards), times the batch."""
    return 3 * batch_size * (full_depth_passes * full_depth_flops + sum(subnetwork_flops))


def mfu(flops_per_step: float, steps_per_s: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation: the FLOP/s the steps achieve over the GPU's peak (None: unknown)."""
    return None if peak is None else flops_per_step * steps_per_s / peak


def format_mfu(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def smoke_variants() -> dict[str, dict[str, Any]]:
    """Every method, and every ablation with its switches as ``train --variant`` applies them:
    a label and its config overrides."""
    variants = {method: {"method": method} for method in METHODS}
    for name, switches in ABLATIONS.items():
        variants[f"cooperative --variant {name}"] = {
            "method": "cooperative",
            **switches,
            "variant": name,
        }
    return variants


def halving_on_oom(
    run: Callable[[int], Result], batch_size: int, minimum: int = 2
) -> tuple[Result, int]:
    """``run(batch_size)``, halving the batch while CUDA runs out of memory; returns the result
    and the batch size that fitted. Below ``minimum`` the error is raised."""
    while True:
        try:
            return run(batch_size), batch_size
        except torch.cuda.OutOfMemoryError:
            if batch_size // 2 < minimum:
                raise
        batch_size //= 2  # outside the handler, so the failed attempt's tensors are freed
        gc.collect()
        torch.cuda.empty_cache()


# --- arguments --------------------------------------------------------------------------------


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message}\n")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = _OneLineParser(
        prog="benchmarks/gpu_check.py",
        description=__doc__.splitlines()[0],
        epilog="Exit status: 0 all steps passed, 1 a step failed, 2 no CUDA or bad arguments.",
    )
    parser.add_argument(
        "--data-root",
        type=Path,
        default=Path(os.environ.get("COOP_DATA_ROOT", "gpu-data")),
        help="the folder holding tiny-imagenet-200/, a class subset in the original layout "
        "(default: $COOP_DATA_ROOT, else gpu-data/)",
    )
    parser.add_argument(
        "--run-root", type=Path, help="where the runs go (default: a temporary folder, removed)"
    )
    parser.add_argument(
        "--full-steps",
        type=int,
        default=DEFAULT_FULL_STEPS,
        help=f"steps of each full-profile run (default {DEFAULT_FULL_STEPS})",
    )
    parser.add_argument("--skip-train", action="store_true", help="skip steps a and b")
    parser.add_argument("--skip-torchrun", action="store_true", help="skip step c")
    parser.add_argument("--skip-throughput", action="store_true", help="skip step d")
    parser.add_argument(
        "--record", type=Path, help="write step d's figures to this JSON file (a benchmark record)"
    )
    return parser.parse_args(argv)


def check_arguments(args: argparse.Namespace) -> None:
    """Raise ValueError (one line) for arguments the steps cannot run with."""
    if args.full_steps < 1:
        raise ValueError(f"--full-steps must be at least 1, got {args.full_steps}")
    if args.record and args.skip_throughput:
        raise ValueError("--record writes the figures of step d, which --skip-throughput skips")
    if args.run_root is not None and args.run_root.exists() and not args.run_root.is_dir():
        raise ValueError(f"--run-root {args.run_root} is not a folder")
    if args.skip_train:
        return
    folder = args.data_root / data.DATASETS["tiny-imagenet"].folder
    if not folder.is_dir():
        raise ValueError(
            f"--data-root {args.data_root} holds no {folder.name}/ folder; build a subset with "
            f"python benchmarks/make_subset.py --source <tiny-imagenet-200> --out {folder}, "
            "or pass --data-root, or --skip-train"
        )
    try:
        for split in data.SPLITS:
            data.data_fingerprint("tiny-imagenet", split, root=args.data_root)
    except data.DatasetError as error:
        raise ValueError(f"--data-root {args.data_root}: {error}") from None


# --- steps ------------------------------------------------------------------------------------


class Report:
    """Runs steps, printing each as PASS or FAIL with its time; counts the failures."""

    def __init__(self) -> None:
        self.failed: list[str] = []

    def step(self, name: str, function: Callable[[], str]) -> None:
        start = time.perf_counter()
        try:
            note = function()
        except Exception as error:  # every step runs, whatever another did
            seconds = time.perf_counter() - start
            reason = (str(error).strip().splitlines() or [""])[0]
            print(f"FAIL  {name}  ({seconds:.1f} s): {type(error).__name__}: {reason}", flush=True)
            traceback.print_exc(file=sys.stderr)
            self.failed.append(name)
        else:
            seconds = time.perf_counter() - start
            print(f"PASS  {name}  ({seconds:.1f} s){f': {note}' if note else ''}", flush=True)
        finally:
            gc.collect()
            torch.cuda.empty_cache()


def train_smoke(overrides: dict[str, Any], run_root: Path) -> str:
    """Step a: a smoke run of ``SMOKE_STEPS`` steps on cuda, evaluated as every run is."""
    config = load_config(
        "smoke",
        device="cuda",
        max_steps=SMOKE_STEPS,
        run_root=str(run_root),
        results_root=str(run_root / "results"),
        **overrides,
    )
    training.train(config, progress=False)
    return ""


def train_full(data_root: Path, run_root: Path, steps: int, compile: bool) -> str:
    """Step b: the full profile's configuration for ``steps`` steps of one epoch at 64 px."""
    config = load_config(
        "full",
        dataset="tiny-imagenet",
        data_root=str(data_root),
        image_size=64,
        epochs=1,
        max_steps=steps,
        compile=compile,
        device="cuda",
        run_root=str(run_root),
        results_root=str(run_root / "results"),
    )
    run, batch = halving_on_oom(
        lambda batch: training.train(config.replace(batch_size=batch), progress=False),
        config.batch_size,
    )
    rate = run.log[-1].get("images_per_s") if run.log else None
    note = f"batch {batch}" + (f", {float(rate):,.0f} images/s in training" if rate else "")
    if batch != config.batch_size:
        note += f" (batch {config.batch_size} ran out of memory)"
    return note


def torchrun_smoke(run_root: Path) -> str:
    """Step c: a smoke run under torchrun (``python -m torch.distributed.run``), as a subprocess."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node=1", "-m", "coop_utils", "train", "--profile", "smoke"]
    command += ["--method", "cooperative", "--quiet", "--set", "device=cuda"]
    command += ["--set", f"max_steps={SMOKE_STEPS}", "--set", f"run_root={run_root}"]
    command += ["--set", f"results_root={run_root / 'results'}"]
    paths = [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]
    env = os.environ | {"PYTHONPATH": os.pathsep.join(path for path in paths if path)}
    result = subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=TORCHRUN_TIMEOUT_S
    )
    if result.returncode != 0:
        sys.stderr.write(result.stdout[-4000:] + result.stderr[-4000:])
        lines = [line.strip() for line in result.stderr.splitlines()]
        errors = [line for line in lines if line.startswith("error:")]  # the CLI's one-liners
        errors = errors or [
            line for line in lines if "Error:" in line and "ChildFailed" not in line
        ]
        reason = errors[-1] if errors else "see its output"
        raise RuntimeError(f"torchrun exited with status {result.returncode}: {reason}")
    return "exit status 0"


def step_flops(step: CooperativeStep, gate_gradient: str) -> int:
    """Training FLOPs of one call of ``step`` (scaling factors drawn per epoch): a sub-network
    pass computes every block with ``gate_gradient: all``, only its plan's with ``kept``."""
    system = step.system
    full = count_flops(system.teammates[0], 1.0)
    subnetworks = [
        count_flops(net, s) if gate_gradient == "kept" else full
        for net, factors in zip(system.teammates, step.randomness.epoch_factors, strict=True)
        for s in factors
    ]
    passes = len(system.teammates) + (system.leader is not None)
    return cooperative_step_flops(full, passes, subnetworks, len(step.labels))


def time_step(step: CooperativeStep) -> tuple[float, int]:
    """Steps per second over ``TIMED_STEPS`` steps after ``WARMUP_STEPS`` (and the Timer's own
    two), the GPU synchronised before and after, and the peak GPU memory (bytes) of the timed
    steps: the Timer runs its setup, the reset of the peak, right before them."""
    # imported here: torch.utils.benchmark warns on import where there is no CUDA runtime
    from torch.utils import benchmark

    for _ in range(WARMUP_STEPS):
        step()
    timer = benchmark.Timer(
        "step()",
        setup="torch.cuda.reset_peak_memory_stats()",
        globals={"step": step},
        num_threads=torch.get_num_threads(),
    )
    seconds = timer.timeit(number=TIMED_STEPS).mean
    return 1 / seconds, torch.cuda.max_memory_allocated()


def measure_throughput(
    image_size: int, compile: bool, peak: float | None, rows: list[dict[str, Any]]
) -> str:
    """Step d: one configuration of the cooperative step; appends its figures to ``rows``."""
    config = load_config(
        "full", dataset="tiny-imagenet", arch=THROUGHPUT_ARCH, image_size=image_size, device="cuda"
    )
    gate_gradient = getattr(config, "gate_gradient", "all")
    num_classes = data.DATASETS["tiny-imagenet"].num_classes

    def measure(batch: int) -> dict[str, Any]:
        step = cooperative_step(config.replace(batch_size=batch), num_classes, image_size, "cuda")
        flops = step_flops(step, gate_gradient)
        if compile:
            torch._dynamo.reset()
            for module in step.system.modules():
                if isinstance(module, SkippableResNet):
                    module.compile()  # in place: every pass of the step runs compiled
        steps_per_s, peak_memory = time_step(step)
        return {
            "image_size": image_size,
            "compile": compile,
            "batch_size": batch,
            "images_per_s": batch * steps_per_s,
            "steps_per_s": steps_per_s,
            "peak_memory_gib": peak_memory / 2**30,
            "flops_per_step": flops,
            "mfu": mfu(flops, steps_per_s, peak),
        }

    row, batch = halving_on_oom(measure, THROUGHPUT_BATCH)
    rows.append(row)
    if batch != THROUGHPUT_BATCH:
        note = f"batch {batch} (batch {THROUGHPUT_BATCH} ran out of memory)"
    else:
        note = f"batch {batch}"
    return (
        f"{note}, {row['images_per_s']:,.0f} images/s, peak memory "
        f"{row['peak_memory_gib']:.1f} GiB, MFU {format_mfu(row['mfu'])}"
    )


# --- main -------------------------------------------------------------------------------------


def training_steps(report: Report, args: argparse.Namespace, run_root: Path) -> None:
    """Steps a, b and c, as the arguments ask."""
    if not args.skip_train:
        for label, overrides in smoke_variants().items():
            folder = run_root / "smoke" / label.replace(" --variant ", "-")
            report.step(f"a. smoke {label}", lambda o=overrides, f=folder: train_smoke(o, f))
        for compile in (False, True):
            folder = run_root / ("full-compiled" if compile else "full")
            report.step(
                f"b. full profile, {args.full_steps} steps" + (", compiled" if compile else ""),
                lambda c=compile, f=folder: train_full(args.data_root, f, args.full_steps, c),
            )
    if not args.skip_torchrun:
        report.step("c. torchrun smoke", lambda: torchrun_smoke(run_root / "torchrun"))


def throughput_steps(report: Report, gpu: str, record: Path | None) -> None:
    """Step d, each configuration a step of its own; ``record`` receives the figures."""
    peak = peak_bf16_flops(gpu)
    if peak is None:
        print(f"MFU n/a: no peak figure for {gpu}", flush=True)
    else:
        print(f"MFU against {peak / 1e12:.1f} TFLOP/s ({PEAK_SOURCE})", flush=True)
    rows: list[dict[str, Any]] = []
    for size in THROUGHPUT_SIZES:
        for compile in (False, True):
            report.step(
                f"d. cooperative step, {THROUGHPUT_ARCH} {size} px"
                + (", compiled" if compile else ""),
                lambda s=size, c=compile: measure_throughput(s, c, peak, rows),
            )
    if record and rows:
        results = {
            "arch": THROUGHPUT_ARCH,
            "warmup_steps": WARMUP_STEPS,
            "timed_steps": TIMED_STEPS,
            "peak_bf16_flops": peak,
            "peak_source": PEAK_SOURCE,
            "rows": rows,
        }
        print(f"recorded: {write_benchmark(record, 'gpu_check', results, device='cuda')}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        print(
            f"gpu check: CUDA is not available here (torch {torch.__version__}); "
            "run it on a machine with an NVIDIA GPU",
            file=sys.stderr,
        )
        return 2
    try:
        check_arguments(args)
    except ValueError as error:
        print(f"gpu check: error: {error}", file=sys.stderr)
        return 2
    gpu = device_name(torch.device("cuda"))
    print(f"{gpu}, torch {torch.__version__}, CUDA {torch.version.cuda}", flush=True)
    report = Report()
    with contextlib.ExitStack() as stack:
        run_root = args.run_root
        if run_root is None:
            run_root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gpu-check-")))
        training_steps(report, args, run_root)
        if not args.skip_throughput:
            throughput_steps(report, gpu, args.record)
    if report.failed:
        print(f"{len(report.failed)} step(s) failed: {', '.join(report.failed)}")
        return 1
    print("every step passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
