"""The first thing to run on a CUDA GPU: does the full profile fit, how fast is it, does it all run?

For a machine with one CUDA GPU and PyTorch, run from the repository root with its python3
(no virtual environment needed: PyTorch, pandas, seaborn, tqdm and PyYAML suffice):

    make gpu-check
    make gpu-check GPU_CHECK_ARGS="--record results/benchmarks/gpu_check.json"
    PYTHONPATH=. python3 benchmarks/gpu_check.py --data-root gpu-data --full-steps 20

Steps, the most decisive first, each reported PASS, FAIL or SKIP with its time; a failed step
does not stop the others:

a. the full profile's configuration (ResNet-152, batch 128, bf16 autocast, channels-last) at
   64 px, through ``torchrun --standalone --nproc_per_node=1`` as a campaign run would be
   trained, for ``--full-steps`` steps and its final evaluation: the peak GPU memory against
   the card's. The batch is never lowered: running out of memory fails the step;
b. the cooperative step of that configuration, eager and compiled (each residual block
   compiled, :meth:`coop_utils.models.SkippableResNet.compile_blocks`), side by side: images/s,
   peak memory, MFU (model FLOPs utilisation; n/a where the GPU's peak is unknown, as on a MIG
   slice) and the compiled graphs after warm-up and after the timed steps: a graph more after
   warm-up, or dynamo's recompile limit, fails the step (a step would fall back to eager);
c. every method and every ablation: a smoke run of 3 steps on cuda.

Data: a Tiny ImageNet subset in its original layout (``--data-root``, else ``$COOP_DATA_ROOT``,
else ``gpu-data/`` where it exists, see benchmarks/make_subset.py), else images generated in
the same format: what an image shows changes neither memory nor speed.

Time: about 5 minutes on one H100, estimated without a GPU (:data:`ESTIMATED_S`): the step of
a and b counts 60 TFLOP at 64 px (3 x the forward FLOPs of the Leader, the Teammates and 4
sub-networks, batch 128), 0.25 s at an assumed 25 % of the H100's dense bf16 peak; the final
evaluation of a about 2.5 PFLOP of inference (about 10 s); compiling b's block graphs (at most
12 at one image size with ``gate_gradient: kept``, counted on the CPU) about 10 s each, forward
and backward; a smoke run about 5 s, and starting a process with CUDA about 20 s. Every step
runs under a time limit, and a step that the whole check's budget (:data:`BUDGET_S`, inside
the 10 minutes of one command) no longer covers is skipped.

Exit status: 0 when every step passed, 1 when one failed or was skipped, 2 without CUDA or with
bad arguments (one line, before any work).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from train_step import CooperativeStep, cooperative_step

from coop_utils import datasets, training
from coop_utils.config import ABLATIONS, RunConfig, load_config
from coop_utils.evaluate import count_flops
from coop_utils.models import SkippableResNet, block_graph_bound
from coop_utils.runs import device_name, write_benchmark

REPO_ROOT = Path(__file__).resolve().parents[1]
METHODS = ("cooperative", "independent", "byot", "branchynet")
SMOKE_STEPS = 3
DEFAULT_FULL_STEPS = 20
FULL_IMAGE_SIZE = 64
WARMUP_STEPS = 3
TIMED_STEPS = 10
#: generated data for step a when no subset is found: classes x images, enough for 20 steps
GENERATED_TRAIN_PER_CLASS = 16
GENERATED_TEST_PER_CLASS = 4
#: seconds of the whole check, and each step's estimate and limit (see the module docstring)
BUDGET_S = 540
ESTIMATED_S = {"a": 75, "b eager": 30, "b compiled": 150, "c": 70}
LIMIT_S = {"a": 240, "b eager": 120, "b compiled": 300}
#: the line a child process prints its figures on, as JSON
RESULT_MARK = "gpu-check-result: "

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


# --- pure parts: peak, FLOPs, MFU, what to run ----------------------------------------------


def peak_bf16_flops(name: str) -> float | None:
    """The dense BF16 peak (FLOP/s) of a GPU by its name, or None for a GPU not in the table
    and for a MIG slice (a share of the chip, whose peak the chip's figure overstates)."""
    normalised = name.upper().replace("-", " ")
    if " MIG " in f" {normalised} ":
        return None
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


def gib(value: float) -> str:
    return f"{value / 2**30:.1f} GiB"


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


def full_config(data_root: Path | None, steps: int, run_root: Path, **overrides: Any) -> RunConfig:
    """The full profile's configuration at 64 px for ``steps`` steps of one epoch, on the subset
    in ``data_root`` or (None) on generated Tiny ImageNet images.

    It is named a smoke run: a check, never recorded, so no behaviour digest is computed (that
    would train ResNet-152 on one CPU thread first).
    """
    where = {"data_root": str(data_root)} if data_root is not None else {"data": "generated"}
    where |= {
        "generated_train_per_class": GENERATED_TRAIN_PER_CLASS,
        "generated_test_per_class": GENERATED_TEST_PER_CLASS,
    }
    config = load_config(
        "full",
        dataset="tiny-imagenet",
        image_size=FULL_IMAGE_SIZE,
        epochs=1,
        max_steps=steps,
        run_root=str(run_root),
        results_root=str(run_root / "results"),
        **where | overrides,
    )
    return config.replace(profile="smoke")


def parse_result(output: str) -> dict[str, Any]:
    """The figures a child process printed (its last :data:`RESULT_MARK` line)."""
    lines = [line for line in output.splitlines() if line.startswith(RESULT_MARK)]
    if not lines:
        raise RuntimeError("the process printed no result")
    return json.loads(lines[-1][len(RESULT_MARK) :])


# --- arguments --------------------------------------------------------------------------------


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message}\n")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = _OneLineParser(
        prog="benchmarks/gpu_check.py",
        description=__doc__.splitlines()[0],
        epilog="Exit status: 0 all steps passed, 1 a step failed or was skipped, 2 no CUDA or "
        "bad arguments.",
    )
    parser.add_argument(
        "--data-root",
        type=Path,
        help="the folder holding tiny-imagenet-200/, a class subset in the original layout "
        "(default: $COOP_DATA_ROOT, else gpu-data/ where it exists, else generated images)",
    )
    parser.add_argument(
        "--run-root", type=Path, help="where the runs go (default: a temporary folder, removed)"
    )
    parser.add_argument(
        "--full-steps",
        type=int,
        default=DEFAULT_FULL_STEPS,
        help=f"training steps of step a (default {DEFAULT_FULL_STEPS})",
    )
    parser.add_argument("--skip-full", action="store_true", help="skip step a")
    parser.add_argument("--skip-throughput", action="store_true", help="skip step b")
    parser.add_argument("--skip-smoke", action="store_true", help="skip step c")
    parser.add_argument(
        "--record", type=Path, help="write the figures of a and b to this JSON file"
    )
    parser.add_argument("--child", choices=["full", "step"], help=argparse.SUPPRESS)
    parser.add_argument("--child-options", default="{}", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def resolve_data_root(args: argparse.Namespace) -> Path | None:
    """The subset step a reads: ``--data-root``, ``$COOP_DATA_ROOT``, else ``gpu-data/`` where it
    holds a subset; None: generated images."""
    if args.data_root is not None:
        return args.data_root
    if os.environ.get("COOP_DATA_ROOT"):
        return Path(os.environ["COOP_DATA_ROOT"])
    default = Path("gpu-data")
    return default if (default / datasets.DATASETS["tiny-imagenet"].folder).is_dir() else None


def check_arguments(args: argparse.Namespace) -> None:
    """Raise ValueError (one line) for arguments the steps cannot run with."""
    if args.full_steps < 1:
        raise ValueError(f"--full-steps must be at least 1, got {args.full_steps}")
    if args.record and args.skip_full and args.skip_throughput:
        raise ValueError("--record writes the figures of a and b, which are both skipped")
    if args.run_root is not None and args.run_root.exists() and not args.run_root.is_dir():
        raise ValueError(f"--run-root {args.run_root} is not a folder")
    root = resolve_data_root(args)
    if args.skip_full or root is None:
        return
    folder = root / datasets.DATASETS["tiny-imagenet"].folder
    if not folder.is_dir():
        raise ValueError(
            f"--data-root {root} holds no {folder.name}/ folder; build a subset with "
            f"python benchmarks/make_subset.py --source <tiny-imagenet-200> --out {folder}, "
            "or pass another --data-root, or none (generated images)"
        )
    try:
        for split in datasets.SPLITS:
            datasets.data_fingerprint("tiny-imagenet", split, root=root)
    except datasets.DatasetError as error:
        raise ValueError(f"--data-root {root}: {error}") from None


# --- steps ------------------------------------------------------------------------------------


class Report:
    """Runs steps within a time budget, printing each as PASS, FAIL or SKIP with its time."""

    def __init__(self, budget_s: float = BUDGET_S) -> None:
        self.failed: list[str] = []
        self.skipped: list[str] = []
        self.started = time.perf_counter()
        self.budget_s = budget_s

    def remaining(self) -> float:
        return self.budget_s - (time.perf_counter() - self.started)

    def step(self, name: str, function: Callable[[], str], estimate_s: float = 0.0) -> None:
        if self.remaining() < estimate_s:
            print(f"SKIP  {name}: {self.remaining():.0f} s of the budget left", flush=True)
            self.skipped.append(name)
            return
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
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def run_child(child: str, options: dict[str, Any], timeout: float, torchrun: bool = False):
    """Run this script as a child process (under torchrun, one process, if asked); its figures."""
    script = [str(Path(__file__).resolve()), "--child", child]
    script += ["--child-options", json.dumps(options)]
    command = [sys.executable]
    if torchrun:
        command += ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1"]
    paths = [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]
    env = os.environ | {"PYTHONPATH": os.pathsep.join(path for path in paths if path)}
    try:
        result = subprocess.run(
            command + script,
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=max(timeout, 1),
        )
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"stopped after {timeout:.0f} s, its time limit") from None
    if result.returncode != 0:
        sys.stderr.write(result.stdout[-4000:] + result.stderr[-4000:])
        lines = [line.strip() for line in (result.stdout + result.stderr).splitlines()]
        errors = [line for line in lines if "Error" in line and "ChildFailed" not in line]
        reason = errors[-1] if errors else "see its output"
        raise RuntimeError(f"exit status {result.returncode}: {reason}")
    return parse_result(result.stdout)


def child_full(options: dict[str, Any]) -> dict[str, Any] | None:
    """Step a, in the torchrun process: train and evaluate; rank 0's figures."""
    root = Path(options["data_root"]) if options["data_root"] else None
    config = full_config(root, options["steps"], Path(options["run_root"]), device="cuda")
    run = training.train(config, progress=False)
    if not run.metrics:  # a rank other than 0
        return None
    device = torch.device("cuda", torch.cuda.current_device())
    return {
        "batch_size": config.batch_size,
        "image_size": config.image_size,
        "steps": options["steps"],
        "peak_memory_bytes": torch.cuda.max_memory_allocated(device),
        "card_memory_bytes": torch.cuda.get_device_properties(device).total_memory,
        "images_per_s": float(run.log[-1]["images_per_s"]) if run.log else None,
        "teammate_top1_full_depth": run.metrics["teammate0"]["1"]["top1"],
    }


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


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_step(
    config: RunConfig,
    num_classes: int,
    compile: bool,
    peak: float | None,
    device: str = "cuda",
    backend: str = "inductor",
    warmup: int = WARMUP_STEPS,
    timed: int = TIMED_STEPS,
) -> dict[str, Any]:
    """Step b, one side: the cooperative step of ``config`` eager or compiled (``backend``);
    images/s, peak memory, MFU, and the compiled graphs after warm-up and after the timed
    steps. Dynamo's recompile limit, if reached, raises instead of falling back to eager."""
    from torch._dynamo.utils import counters

    target = torch.device(device)
    step = cooperative_step(config, num_classes, config.image_size, target)
    flops = step_flops(step, config.gate_gradient)
    nets = [m for m in step.system.modules() if isinstance(m, SkippableResNet)]
    graphs: list[int] = []
    with contextlib.ExitStack() as stack:
        if compile:
            torch._dynamo.reset()
            counters.clear()
            stack.enter_context(_fail_on_recompile_limit())
            for net in nets:
                net.compile_blocks(backend=backend)
        for _ in range(warmup):
            step()
        graphs.append(counters["stats"]["unique_graphs"])
        _synchronize(target)
        if target.type == "cuda":
            torch.cuda.reset_peak_memory_stats(target)
        start = time.perf_counter()
        for _ in range(timed):
            step()
        _synchronize(target)
        seconds = time.perf_counter() - start
        graphs.append(counters["stats"]["unique_graphs"])
    steps_per_s = timed / seconds
    memory = torch.cuda.max_memory_allocated(target) if target.type == "cuda" else None
    return {
        "image_size": config.image_size,
        "compile": compile,
        "batch_size": config.batch_size,
        "images_per_s": config.batch_size * steps_per_s,
        "steps_per_s": steps_per_s,
        "peak_memory_bytes": memory,
        "flops_per_step": flops,
        "mfu": mfu(flops, steps_per_s, peak),
        "graphs_after_warmup": graphs[0] if compile else None,
        "graphs_after_timed_steps": graphs[1] if compile else None,
        "graph_bound": block_graph_bound(nets[0]) if compile else None,
    }


def _fail_on_recompile_limit() -> contextlib.AbstractContextManager:
    """Dynamo raises instead of falling back to eager at its recompile limit (a name that
    changed between PyTorch versions)."""
    config = torch._dynamo.config
    for name in ("fail_on_recompile_limit_hit", "fail_on_cache_limit_hit"):
        if hasattr(config, name):
            return config.patch(**{name: True})
    return contextlib.nullcontext()


def check_graphs(row: dict[str, Any]) -> None:
    """Raise unless the compiled step kept its graphs after warm-up, within the bound."""
    after_warmup, after = row["graphs_after_warmup"], row["graphs_after_timed_steps"]
    if after != after_warmup:
        raise RuntimeError(f"recompiled after warm-up: {after_warmup} graphs, then {after}")
    if after_warmup > row["graph_bound"]:
        raise RuntimeError(f"{after_warmup} graphs, more than the {row['graph_bound']} expected")


def child_step(options: dict[str, Any]) -> dict[str, Any]:
    """Step b, one side, in its own process."""
    config = full_config(None, 1, Path(tempfile.gettempdir()), device="cuda")
    num_classes = datasets.DATASETS["tiny-imagenet"].num_classes
    peak = peak_bf16_flops(device_name(torch.device("cuda")))
    return measure_step(config, num_classes, options["compile"], peak)


def full_step(report: Report, args: argparse.Namespace, run_root: Path, rows: dict) -> str:
    """Step a: the full profile through torchrun; its peak memory against the card's."""
    root = resolve_data_root(args)
    options = {"data_root": str(root) if root else None, "steps": args.full_steps}
    options["run_root"] = str(run_root / "full")
    row = run_child("full", options, min(LIMIT_S["a"], report.remaining()), torchrun=True)
    rows["full"] = row
    peak, card = row["peak_memory_bytes"], row["card_memory_bytes"]
    rate = row["images_per_s"]
    return (
        f"batch {row['batch_size']}, {row['image_size']} px, {row['steps']} steps on "
        f"{'a Tiny ImageNet subset' if root else 'generated images'}: peak memory {gib(peak)} "
        f"of the card's {gib(card)} ({peak / card:.0%})"
        + (f", {rate:,.0f} images/s in training" if rate else "")
    )


def throughput_step(report: Report, compile: bool, rows: dict) -> str:
    """Step b, one side: the cooperative step at 64 px, eager or compiled."""
    key = "b compiled" if compile else "b eager"
    row = run_child("step", {"compile": compile}, min(LIMIT_S[key], report.remaining()))
    rows[key] = row
    note = (
        f"batch {row['batch_size']}, {row['images_per_s']:,.0f} images/s, peak memory "
        f"{gib(row['peak_memory_bytes'])}, MFU {format_mfu(row['mfu'])}"
    )
    if compile:
        check_graphs(row)
        note += (
            f", {row['graphs_after_warmup']} compiled graphs after warm-up (at most "
            f"{row['graph_bound']}), none after"
        )
    return note


def side_by_side(rows: dict[str, dict[str, Any]]) -> str:
    """One line comparing the eager and the compiled step."""
    eager, compiled = rows["b eager"], rows["b compiled"]
    return (
        f"cooperative step at {eager['image_size']} px, batch {eager['batch_size']}: eager "
        f"{eager['images_per_s']:,.0f} images/s (MFU {format_mfu(eager['mfu'])}), compiled "
        f"{compiled['images_per_s']:,.0f} images/s (MFU {format_mfu(compiled['mfu'])}): "
        f"{compiled['images_per_s'] / eager['images_per_s']:.2f}x"
    )


def train_smoke(overrides: dict[str, Any], run_root: Path) -> str:
    """Step c: a smoke run of ``SMOKE_STEPS`` steps on cuda, evaluated as every run is."""
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


# --- main -------------------------------------------------------------------------------------


def run_steps(report: Report, args: argparse.Namespace, run_root: Path, gpu: str) -> dict:
    """Steps a, b and c, as the arguments ask; the figures of a and b."""
    rows: dict[str, dict[str, Any]] = {}
    if not args.skip_full:
        report.step(
            f"a. full profile through torchrun, {args.full_steps} steps",
            lambda: full_step(report, args, run_root, rows),
            ESTIMATED_S["a"],
        )
    if not args.skip_throughput:
        peak = peak_bf16_flops(gpu)
        if peak is None:
            print(f"MFU n/a: no peak figure for {gpu}", flush=True)
        else:
            print(f"MFU against {peak / 1e12:.1f} TFLOP/s ({PEAK_SOURCE})", flush=True)
        for compile in (False, True):
            key = "b compiled" if compile else "b eager"
            report.step(
                f"b. cooperative step, {FULL_IMAGE_SIZE} px, {'compiled' if compile else 'eager'}",
                lambda c=compile: throughput_step(report, c, rows),
                ESTIMATED_S[key],
            )
        if {"b eager", "b compiled"} <= set(rows):
            print(side_by_side(rows), flush=True)
    if not args.skip_smoke:
        for label, overrides in smoke_variants().items():
            folder = run_root / "smoke" / label.replace(" --variant ", "-")
            report.step(
                f"c. smoke {label}",
                lambda o=overrides, f=folder: train_smoke(o, f),
                ESTIMATED_S["c"] / len(smoke_variants()),
            )
    return rows


def _child_main(args: argparse.Namespace) -> int:
    options = json.loads(args.child_options)
    result = child_full(options) if args.child == "full" else child_step(options)
    if result is not None:
        print(RESULT_MARK + json.dumps(result), flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        print(
            f"gpu check: CUDA is not available here (torch {torch.__version__}); "
            "run it on a machine with an NVIDIA GPU",
            file=sys.stderr,
        )
        return 2
    if args.child:
        return _child_main(args)
    try:
        check_arguments(args)
    except ValueError as error:
        print(f"gpu check: error: {error}", file=sys.stderr)
        return 2
    gpu = device_name(torch.device("cuda"))
    estimate = sum(ESTIMATED_S.values())
    print(
        f"{gpu}, torch {torch.__version__}, CUDA {torch.version.cuda}; estimated "
        f"{estimate / 60:.0f} min, at most {BUDGET_S / 60:.0f} min",
        flush=True,
    )
    report = Report()
    with contextlib.ExitStack() as stack:
        run_root = args.run_root
        if run_root is None:
            run_root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gpu-check-")))
        rows = run_steps(report, args, run_root, gpu)
    if args.record and rows:
        results = {
            "warmup_steps": WARMUP_STEPS,
            "timed_steps": TIMED_STEPS,
            "peak_bf16_flops": peak_bf16_flops(gpu),
            "peak_source": PEAK_SOURCE,
            "rows": rows,
        }
        print(f"recorded: {write_benchmark(args.record, 'gpu_check', results, device='cuda')}")
    elapsed = time.perf_counter() - report.started
    if report.failed or report.skipped:
        names = ", ".join(report.failed + report.skipped)
        print(
            f"{len(report.failed)} failed, {len(report.skipped)} skipped ({names}); {elapsed:.0f} s"
        )
        return 1
    print(f"every step passed in {elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
