"""One training loop for every method: cooperative, independent, BYOT and BranchyNet.

What a step computes is each method's *system* (:mod:`coop_utils.systems`). The loop around
it is shared: data, optimiser and schedule, checkpoints, resume, several processes (torchrun),
signals, progress and the final evaluation (:mod:`coop_utils.evaluate`). Where runs live and
whether a finished or interrupted one can be reused is the run store's (:mod:`coop_utils.runs`).

Under torchrun every process runs the step one process runs (:func:`training_step`) on its
share of the batch, then the gradients are averaged. Batch norm normalises each process's
share with its own statistics (no SyncBatchNorm), so that ``N`` processes train with
batch-norm batches of ``batch_size / N`` images; evaluation and the re-estimation of the
statistics after training run on rank 0 with whole batches, whatever ``N``.

All randomness of an epoch comes from generators seeded by ``(seed, epoch, purpose)``,
so a run resumed from a checkpoint repeats exactly what the interrupted run would
have done (on the CPU, bit for bit).
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import itertools
import math
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm.auto import tqdm

from coop_utils import datasets, loaders, runs
from coop_utils.config import RunConfig
from coop_utils.evaluate import (
    calibration_batches,
    evaluate_system,
    training_flops,
    validation_curve,
)
from coop_utils.gating import BlockGate
from coop_utils.models import SkippableResNet
from coop_utils.systems import StepRandomness, System, build_system


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA where available, else the CPU; a CUDA name without CUDA is a ValueError."""
    return RunConfig(device=name).resolved_device()


# --- the loop ------------------------------------------------------------------------------


def learning_rate(config: RunConfig, step: int, steps_per_epoch: int, total_steps: int) -> float:
    """The learning rate of optimizer step ``step`` (from 0).

    ``step``: ``lr * gamma ** (milestone epochs passed)``; ``linear`` and ``cosine`` decay
    from ``lr`` to zero over the run's steps, updated every step (budgeted training).
    """
    if config.lr_schedule == "step":
        epoch = step // steps_per_epoch
        return config.lr * config.lr_gamma ** sum(epoch >= m for m in config.lr_milestones)
    progress = step / max(total_steps, 1)
    if config.lr_schedule == "linear":
        return config.lr * (1.0 - progress)
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def _optimizer(system: System, config: RunConfig) -> torch.optim.SGD:
    """SGD over every parameter; gate logits get no weight decay (it would pull them to ties)."""
    gates = [p for m in system.modules() if isinstance(m, BlockGate) for p in m.parameters()]
    gate_ids = {id(p) for p in gates}
    weights = [p for p in system.parameters() if id(p) not in gate_ids]
    groups = [{"params": weights, "weight_decay": config.weight_decay}]
    if any(p.requires_grad for p in gates):
        groups.append({"params": [p for p in gates if p.requires_grad], "weight_decay": 0.0})
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov)


def _process_device(config: RunConfig) -> torch.device:
    """The device this process trains on: under torchrun on CUDA, the GPU of its local rank."""
    device = config.resolved_device()
    if device.type == "cuda" and dist.is_torchelastic_launched():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return device


def _distributed(device: torch.device) -> tuple[int, int]:
    """``(rank, world size)`` under torchrun, ``(0, 1)`` otherwise.

    Under torchrun the process group is started here, even for one process, so that one process
    runs what several do: NCCL bound to the process's GPU for a CUDA device, gloo for the CPU
    (``--set device=cpu`` on a GPU machine too). It is destroyed when the process exits.
    """
    if dist.is_torchelastic_launched() and not dist.is_initialized():
        if device.type == "cuda":
            dist.init_process_group(backend="nccl", device_id=device)
        else:
            dist.init_process_group(backend="gloo")
        atexit.register(_end_distributed)
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def _end_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def _from_rank_zero(rank: int, compute: Callable[[], Any]) -> Any:
    """``compute()`` on rank 0 only, its result (or its exception, raised) on every rank."""
    outcome: Any = None
    if rank == 0:
        try:
            outcome = compute()
        except Exception as error:  # every rank raises it, so that none waits for the others
            outcome = error
    if dist.is_initialized():
        box = [outcome]
        dist.broadcast_object_list(box, src=0)
        outcome = box[0]
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def broadcast_parameters(module: nn.Module) -> None:
    """Give every process rank 0's parameters (ranks build the same networks from one seed, or
    load one checkpoint; this makes sure)."""
    for parameter in module.parameters():
        dist.broadcast(parameter.data, src=0)


#: bytes of gradients averaged by one collective call
GRADIENT_BUCKET_BYTES = 64 * 2**20


@torch.no_grad()
def average_gradients(module: nn.Module, loss: Tensor) -> Tensor:
    """Average the gradients of ``module``'s parameters over the processes; return the mean of
    ``loss`` over them, the whole batch's loss.

    A parameter that a step left without a gradient on one process but not on another gets a
    zero gradient there; one left without it everywhere keeps none, so that the optimizer skips
    it as it would in one process (DistributedDataParallel with ``find_unused_parameters``).
    """
    world_size = dist.get_world_size()
    params = [p for p in module.parameters() if p.requires_grad]
    device = loss.device
    used = [float(p.grad is not None) for p in params]
    counts = torch.tensor([*used, float(loss)], dtype=torch.float64, device=device)
    dist.all_reduce(counts)
    for param, count in zip(params, counts[:-1].tolist(), strict=True):
        if count and param.grad is None:
            param.grad = torch.zeros_like(param)
    grads = [p.grad for p in params if p.grad is not None]
    bucket: list[Tensor] = []
    size = 0
    for index, grad in enumerate(grads):
        bucket.append(grad)
        size += grad.numel() * grad.element_size()
        following = grads[index + 1] if index + 1 < len(grads) else None
        if following is None or following.dtype != grad.dtype or size >= GRADIENT_BUCKET_BYTES:
            _all_reduce_mean(bucket, world_size)
            bucket, size = [], 0
    return (counts[-1] / world_size).to(loss.dtype)


def _all_reduce_mean(tensors: list[Tensor], world_size: int) -> None:
    """Replace ``tensors`` (one dtype) by their means over the processes, in one collective."""
    flat = torch._utils._flatten_dense_tensors(tensors)
    dist.all_reduce(flat)
    flat.div_(world_size)
    means = torch._utils._unflatten_dense_tensors(flat, tensors)
    for tensor, mean in zip(tensors, means, strict=True):
        tensor.copy_(mean)


def training_step(
    system: System, images: Tensor, labels: Tensor, randomness: StepRandomness
) -> Tensor:
    """The gradients of one batch, pass by pass (:meth:`System.backward_step`), averaged over
    the processes under torchrun; returns the batch's loss.

    One process and several run the same passes: each pass is back-propagated as soon as it is
    computed, so a step holds one pass's graph at a time, not all of them until one backward
    (see :mod:`coop_utils.memory`), and the gradients are averaged once they are accumulated.
    """
    loss, _ = system.backward_step(images, labels, randomness)
    if dist.is_initialized():
        loss = average_gradients(system, loss)
    return loss


def parameter_digest(module: nn.Module) -> str:
    """SHA-256 of every parameter, to check that ranks hold the same network.

    Buffers are left out: BN running statistics are each rank's own (each normalises its own
    share of the batch); rank 0's are the run's.
    """
    return _digest(dict(module.named_parameters()))


def state_digest(state: nn.Module | dict[str, Tensor]) -> str:
    """SHA-256 of a module's whole state (parameters and buffers, batch-norm statistics too)."""
    return _digest(state.state_dict() if isinstance(state, nn.Module) else state)


def _digest(tensors: dict[str, Tensor]) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(tensors.items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def _shared_bn_evaluation(
    config: RunConfig,
    directory: Path,
    trained: runs.Run,
    current: dict[str, Any],
    device: torch.device,
) -> runs.Run:
    """Evaluate the finished run ``trained`` with its shared batch-norm statistics, as
    ``config``'s run: the ablation changes evaluation only, so nothing is trained again."""
    data = loaders.prepare_data(config, device)
    system = load_system(trained).to(device, memory_format=torch.channels_last)
    for net in system.modules():
        if isinstance(net, SkippableResNet):
            net.set_plan_stats([], [])
    metrics = evaluate_system(system, data, config, device)
    runs.atomic_write_json(directory / "config.json", config.to_dict())
    runs.atomic_write_json(directory / "provenance.json", current)
    shutil.copyfile(trained.directory / "log.csv", directory / "log.csv")
    wall, weights_from = trained.wall_time_s, str(trained.directory)
    compute = _compute(config, data, len(data.train))  # the trained run's: it trains nothing
    return runs.record_run(
        config, directory, metrics, wall, data, device, current | compute, weights_from=weights_from
    )


def _compute(config: RunConfig, data: loaders.Data, steps_per_epoch: int) -> dict[str, float]:
    """The summary's training compute (:func:`coop_utils.evaluate.training_flops`)."""
    total, per_step = training_flops(config, data.num_classes, data.image_size, steps_per_epoch)
    return {"training_flops": total, "step_forward_flops_per_image": round(per_step)}


def load_system(run: runs.Run) -> System:
    """The trained networks of a finished ``run`` (its last checkpoint), in eval mode."""
    config = run.config
    info = datasets.DATASETS[config.dataset]
    system = build_system(
        config, config.num_classes or info.num_classes, config.image_size or info.image_size
    )
    state = runs.load_checkpoint(Path(run.directory) / "checkpoint.pt")
    system.load_state_dict(state["system"])
    return system.eval()


def train(config: RunConfig, progress: bool = True, reuse_stale: bool = False) -> runs.Run:
    """Train ``config``'s run, or reuse it if finished, or resume it if interrupted.

    A run made by code that behaves otherwise or from other data (its behaviour digest or data
    fingerprint differ) is moved aside and trained again, unless ``reuse_stale``. The
    ``shared-bn`` ablation only changes evaluation: when the same run with per-depth statistics
    has finished, its trained networks are evaluated with their shared statistics instead of
    training them again. Under torchrun, rank 0 alone decides all this and touches the run's
    folder; the other ranks follow its answer.
    """
    device = _process_device(config)
    rank, world_size = _distributed(device)
    directory = runs.run_dir(config)
    done, current = _from_rank_zero(rank, lambda: _reuse(config, directory, reuse_stale, device))
    if done is not None:
        return done if rank == 0 else runs.Run(config, directory, {}, [], 0.0, reused=done.reused)
    with runs.hold_run(directory) if rank == 0 else contextlib.nullcontext():
        return _Trainer(config, directory, device, rank, world_size, progress, current).run()


def _reuse(
    config: RunConfig, directory: Path, reuse_stale: bool, device: torch.device
) -> tuple[runs.Run | None, dict[str, Any]]:
    """Rank 0's part of :func:`train` before training: the run if it is finished (or, for the
    ``shared-bn`` ablation, evaluated from its finished base run), and today's provenance."""
    current = runs.provenance(config)
    finished = runs.finished_run(config, current, reuse_stale)
    if finished is not None:
        return finished, current
    if config.bn_stats == "shared" and config.method == "cooperative":
        base = config.replace(bn_stats="per_depth", variant="")
        trained = runs.finished_run(base, current, reuse_stale)
        if trained is not None:
            with runs.hold_run(directory):
                return _shared_bn_evaluation(config, directory, trained, current, device), current
    return None, current


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped training between two steps; a checkpoint was saved there."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum


class _StopRequest:
    """SIGINT and SIGTERM set a flag that the loop reads between steps, so that a checkpoint
    never holds a half-updated network or generators that ran ahead of the saved step.

    A second SIGINT stops at once (the last checkpoint stays). Signal handlers can only be set
    in the main thread; elsewhere the default behaviour stays.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> _StopRequest:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


class _Trainer:
    def __init__(self, config, directory, device, rank, world_size, progress, current) -> None:
        self.config, self.directory, self.device = config, directory, device
        self.rank, self.world_size = rank, world_size
        self.progress = progress and rank == 0
        self.provenance = current
        self.checkpoint_path = directory / "checkpoint.pt"
        self.log_path = directory / "log.csv"

    def _save(self, epoch: int, step_in_epoch: int, global_step: int, randomness, wall) -> None:
        if self.rank != 0:
            return
        runs.save_checkpoint(
            self.checkpoint_path,
            {
                "system": self.system.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "epoch": epoch,
                "step_in_epoch": step_in_epoch,
                "global_step": global_step,
                "randomness": randomness.state() if randomness is not None else {},
                "wall_time_s": wall,
            },
        )

    def run(self) -> runs.Run:
        config, device = self.config, self.device
        torch.manual_seed(config.seed)
        data = loaders.prepare_data(config, device, self.rank, self.world_size)
        if self.progress:
            print(data.description)
        # channels-last is faster on CUDA and, through oneDNN, on the CPU too (about 1.25x for
        # a cooperative ResNet-20 step on 2 cores).
        system = build_system(config, data.num_classes, data.image_size)
        self.system = system.to(device, memory_format=torch.channels_last)  # moves it in place
        self.optimizer = _optimizer(system, config)

        start_epoch, skip_steps, global_step, wall_before = 0, 0, 0, 0.0
        saved_randomness = None
        if self.checkpoint_path.exists():
            state = runs.load_checkpoint(self.checkpoint_path)
            system.load_state_dict(state["system"])
            self.optimizer.load_state_dict(state["optimizer"])
            start_epoch, skip_steps = state["epoch"], state["step_in_epoch"]
            global_step, wall_before = state["global_step"], state["wall_time_s"]
            saved_randomness = state["randomness"] or None
            if self.progress:
                print(f"resuming {self.directory} at epoch {start_epoch + 1}, step {global_step}")
        if self.rank == 0:
            self.directory.mkdir(parents=True, exist_ok=True)
            runs.atomic_write_json(self.directory / "config.json", config.to_dict())
            runs.atomic_write_json(self.directory / "provenance.json", self.provenance)
            runs.truncate_log(self.log_path, start_epoch)

        if dist.is_initialized():
            broadcast_parameters(system)
        if config.compile:
            for net in system.modules():
                if isinstance(net, SkippableResNet):
                    net.compile_blocks()

        steps_per_epoch = len(data.train)
        total_steps = min(steps_per_epoch * config.epochs, config.max_steps or math.inf)
        bar = tqdm(
            total=total_steps,
            initial=global_step,
            disable=not self.progress,
            unit="step",
            desc=f"{config.method} {config.dataset}",
        )
        started = time.perf_counter()
        epoch, lr = start_epoch, config.lr
        with _StopRequest() as stop, bar:
            while epoch < config.epochs and global_step < total_steps:
                randomness = StepRandomness(
                    loaders.seeded_generator(config.seed, epoch, 1),
                    loaders.seeded_generator(config.seed, epoch, 2),
                )
                system.start_epoch(randomness)
                if saved_randomness is not None:
                    randomness.load_state(saved_randomness)
                    saved_randomness = None
                data.train.set_epoch(epoch)
                epoch_loss, epoch_images, epoch_start = 0.0, 0, time.perf_counter()
                batches = itertools.islice(enumerate(data.train), skip_steps, None)
                for step_in_epoch, (images, labels) in batches:
                    if global_step >= total_steps:
                        break
                    lr = learning_rate(config, global_step, steps_per_epoch, total_steps)
                    for group in self.optimizer.param_groups:
                        group["lr"] = lr
                    images = images.contiguous(memory_format=torch.channels_last)
                    self.optimizer.zero_grad(set_to_none=True)
                    loss_value = float(training_step(system, images, labels, randomness))
                    if not math.isfinite(loss_value):
                        raise NonFiniteLossError(
                            f"non-finite loss ({loss_value}) at epoch {epoch + 1}, step "
                            f"{step_in_epoch + 1} (global step {global_step + 1}); the last good "
                            f"checkpoint in {self.directory} is kept"
                        )
                    self.optimizer.step()
                    global_step += 1
                    skip_steps = step_in_epoch + 1
                    epoch_loss += loss_value * len(labels)
                    epoch_images += len(labels)
                    rate = epoch_images * self.world_size / (time.perf_counter() - epoch_start)
                    bar.update()
                    bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr:.3g}", img_s=f"{rate:.0f}")
                    if skip_steps < steps_per_epoch:  # the epoch's last step stops after its log
                        wall = wall_before + time.perf_counter() - started
                        self._stop_if_asked(stop, epoch, skip_steps, global_step, randomness, wall)
                epoch += 1
                skip_steps = 0
                wall = wall_before + time.perf_counter() - started
                if self.rank == 0:
                    seconds = max(time.perf_counter() - epoch_start, 1e-9)
                    row = {
                        "epoch": epoch,
                        "global_step": global_step,
                        "lr": lr,
                        "train_loss": epoch_loss / max(epoch_images, 1),
                        "images_per_s": epoch_images * self.world_size / seconds,
                        "val_top1_deepest": "",
                        "val_top1_shallowest": "",
                    }
                    if config.eval_every and epoch % config.eval_every == 0:
                        row |= validation_curve(system, data)
                    runs.append_log(self.log_path, row)
                    self._save(epoch, 0, global_step, None, wall)
                self._stop_if_asked(stop, epoch, 0, global_step, None, wall)

        wall = wall_before + time.perf_counter() - started
        digest = parameter_digest(system)
        if dist.is_initialized():
            dist.barrier()
        if self.rank != 0:
            return runs.Run(config, self.directory, {}, [], wall, parameter_digest=digest)
        system.calibrate(calibration_batches(data))
        self._save(epoch, 0, global_step, None, wall)  # the checkpoint holds the statistics
        metrics = evaluate_system(system, data, config, device)
        summary = self.provenance | _compute(config, data, len(data.train))
        run = runs.record_run(config, self.directory, metrics, wall, data, device, summary)
        run.parameter_digest = digest
        return run

    def _stop_if_asked(self, stop, epoch, step_in_epoch, global_step, randomness, wall) -> None:
        """On a signal (under torchrun, any rank's, so that all stop at one step), save where the
        loop stands (between two steps) and stop."""
        signum = stop.signum or 0
        if dist.is_initialized():
            flag = torch.tensor([signum], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            signum = int(flag.item())
        if not signum:
            return
        self._save(epoch, step_in_epoch, global_step, randomness, wall)
        raise TrainingInterrupted(
            signum,
            f"{signal.Signals(signum).name}: checkpoint saved in {self.directory} at epoch "
            f"{epoch + 1}, step {global_step}; the same command resumes it",
        )
