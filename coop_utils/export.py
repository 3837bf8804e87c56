"""Ship one depth: a depth plan of a trained network as a plain network, to TorchScript or ONNX.

:func:`export_plan` copies the plan's stem, blocks and head into a :class:`PlanNetwork`: no gate,
no mask, no branch on ``s``, every batch norm a plain ``nn.BatchNorm2d`` holding the plan's own
statistics. :func:`save_plan` writes it as TorchScript (``torch.jit.script``) or ONNX (the
``[export]`` extra: onnx, onnxscript, onnxruntime), and :func:`load_plan` reads either back.
The network takes normalised images, as the run's data pipeline feeds them.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import json
import re
import shutil
import statistics
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from coop_utils import runs
from coop_utils.config import RunConfig, load_config
from coop_utils.data import DATASETS
from coop_utils.gating import add_gate
from coop_utils.models import PlanBatchNorm2d, SkippableResNet, build_model, check_scaling_factor

FORMATS = ("torchscript", "onnx")
_ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")


class PlanBlock(nn.Module):
    """A residual block that always runs: ``relu(F(x) + shortcut(x))``."""

    def __init__(self, residual: nn.Module, shortcut: nn.Module) -> None:
        super().__init__()
        self.residual, self.shortcut = residual, shortcut

    def forward(self, x: Tensor) -> Tensor:
        out = self.residual(x)
        out += self.shortcut(x)
        return torch.relu_(out)


class PlanNetwork(nn.Module):
    """One depth plan as a plain network: stem, the plan's blocks in order, pool, classifier."""

    def __init__(self, net: SkippableResNet, blocks: list[int], s: float, plan_row: int | None):
        super().__init__()
        self.stem = _plain_copy(net.stem, plan_row)
        self.blocks = nn.ModuleList(
            PlanBlock(_plain_copy(b.residual, plan_row), _plain_copy(b.shortcut, plan_row))
            for b in (net.blocks[i] for i in blocks)
        )
        self.pool, self.fc = copy.deepcopy(net.pool), copy.deepcopy(net.fc)
        self.plan_blocks = list(blocks)  # the source network's block indices, for the record
        self.scaling_factor = float(s)
        self.image_size = int(net.image_size)

    def forward(self, x: Tensor) -> Tensor:
        out = self.stem(x)
        for block in self.blocks:
            out = block(out)
        return self.fc(torch.flatten(self.pool(out), 1))


def _plain_copy(module: nn.Module, plan_row: int | None) -> nn.Module:
    """A copy of ``module`` whose batch norms are plain, with plan ``plan_row``'s statistics
    (the shared running statistics when ``None``)."""
    module, own = copy.deepcopy(module), plan_row is not None
    for name, bn in list(module.named_modules()):
        if isinstance(bn, PlanBatchNorm2d):
            plain = nn.BatchNorm2d(bn.num_features, bn.eps, bn.momentum, device=bn.weight.device)
            with torch.no_grad():
                plain.weight.copy_(bn.weight)
                plain.bias.copy_(bn.bias)
                plain.running_mean.copy_(bn.plan_mean[plan_row] if own else bn.running_mean)
                plain.running_var.copy_(bn.plan_var[plan_row] if own else bn.running_var)
            parent, _, attribute = name.rpartition(".")
            setattr(module.get_submodule(parent), attribute, plain)
    return module


def export_plan(net: SkippableResNet, s: float, shared_bn: bool = False) -> PlanNetwork:
    """The depth plan ``net`` runs at ``s`` as a :class:`PlanNetwork` in eval mode: the same
    weights, that plan's batch-norm statistics; ``shared_bn`` takes the shared ones instead."""
    if not isinstance(net, SkippableResNet):
        raise ValueError(f"export takes a SkippableResNet, got {type(net).__name__}")
    s = check_scaling_factor(s)
    blocks = net.active_blocks(s)
    row = None
    if not shared_bn:
        if not net.has_plan_stats:
            raise ValueError(
                "the network has no per-depth batch-norm statistics; to export it with its "
                "shared statistics, say so: --shared-bn (shared_bn=True)"
            )
        row = net.plan_index(blocks)
        if row is None:
            raise ValueError(
                f"no per-depth batch-norm statistics for the plan of s={s:g} (blocks {blocks}); "
                "choose a scaling factor of the run's grid, or --shared-bn (shared_bn=True)"
            )
    return PlanNetwork(net, blocks, s, row).eval().requires_grad_(False)


def check_format(fmt: str) -> None:
    """Raise ``ValueError`` unless ``fmt`` is known and the packages it needs are installed."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    missing = [p for p in _ONNX_PACKAGES if importlib.util.find_spec(p) is None]
    if fmt == "onnx" and missing:
        raise ValueError(
            f"ONNX export needs {', '.join(missing)}, not installed: install the extra, "
            "pip install -e '.[export]'"
        )


def format_of(path: Path, fmt: str | None) -> str:
    """``fmt`` if given, else the format ``path``'s suffix names (``.onnx``; else TorchScript)."""
    return fmt or ("onnx" if path.suffix == ".onnx" else "torchscript")


def check_output(path: str | Path, force: bool = False) -> Path:
    """``path`` if a file may be written there: its folder exists and, unless ``force``,
    no file is there yet."""
    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"output folder {path.parent} does not exist")
    if path.is_dir() or (path.exists() and not force):
        raise ValueError(f"{path} exists; --force (force=True) overwrites it")
    return path


def save_plan(
    module: PlanNetwork, path: str | Path, fmt: str | None = None, force: bool = False
) -> Path:
    """Write ``module`` to ``path`` as TorchScript or ONNX (default: ONNX for a ``.onnx``
    suffix), taking batches of any size."""
    path, fmt = check_output(path, force), format_of(Path(path), fmt)
    check_format(fmt)
    module = module.eval()
    if fmt == "torchscript":
        with _quiet_torchscript():
            torch.jit.save(torch.jit.script(module), str(path))
        return path
    device = next(module.parameters()).device
    example = torch.zeros(2, 3, module.image_size, module.image_size, device=device)
    torch.onnx.export(
        module,
        (example,),
        str(path),
        input_names=["images"],
        output_names=["logits"],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        external_data=False,
        dynamo=True,
        verbose=False,
    )
    return path


class _OnnxPlan:
    """An ONNX Runtime session called like a module: images (a tensor) in, logits out."""

    def __init__(self, path: Path) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = torch.get_num_threads(), 1
        self.session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
        self.input = self.session.get_inputs()[0].name

    def __call__(self, images: Tensor) -> Tensor:
        array = images.detach().cpu().contiguous().numpy()
        return torch.from_numpy(self.session.run(None, {self.input: array})[0])


def load_plan(path: str | Path, fmt: str | None = None) -> Callable[[Tensor], Tensor]:
    """A file of :func:`save_plan` loaded back: a TorchScript module or an ONNX Runtime session."""
    path, fmt = Path(path), format_of(Path(path), fmt)
    check_format(fmt)
    if fmt == "onnx":
        return _OnnxPlan(path)
    with _quiet_torchscript():
        return torch.jit.load(str(path)).eval()


@contextlib.contextmanager
def _quiet_torchscript():
    """Silence recent torch's notice that TorchScript is deprecated: the format is asked for."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*deprecated")
        yield


def time_call(call: Callable[[Tensor], object], images: Tensor, warmup=3, repeats=10) -> float:
    """Median wall-clock seconds of ``call(images)`` on the CPU, under inference mode."""
    timings = []
    with torch.inference_mode():
        for index in range(warmup + repeats):
            start = time.perf_counter()
            call(images)
            if index >= warmup:
                timings.append(time.perf_counter() - start)
    return statistics.median(timings)


def _config(values: Mapping[str, Any]) -> RunConfig:
    """The run config of a saved network or run folder (older records lack ``profile``)."""
    return load_config(**{"profile": "smoke", **values})


def load_network(source: str | Path, network: str | None = None):
    """``(network, its name, run config)`` from a cooperative run's folder (``network``:
    ``teammate<N>`` or ``leader``, default the deployed Teammate of its metrics, else teammate0)
    or from a weights file of :func:`save_network` (its config embedded or in ``config.json``
    beside it)."""
    path = Path(source)
    if path.is_dir():
        return _from_run(path, network)
    if not path.is_file():
        raise ValueError(f"{path} is neither a run folder nor a weights file")
    payload = runs.load_checkpoint(path)
    wrapped = isinstance(payload.get("state"), dict)
    state = payload["state"] if wrapped else payload
    values = payload.get("config") if wrapped else None
    if values is None:
        beside = path.parent / "config.json"
        if not beside.is_file():
            raise ValueError(f"{path} embeds no config and has no config.json beside it")
        values = json.loads(beside.read_text())
    config = _config(values)
    name = path.stem if re.fullmatch(r"teammate\d+|leader", path.stem) else None
    name = payload.get("network", name) if wrapped else name
    if network is not None and name is not None and network != name:
        raise ValueError(f"{path} holds one network, {name}, not {network}")
    name = name or network or "network"
    info = DATASETS[config.dataset]
    net = build_model(
        config.arch, config.num_classes or info.num_classes, config.image_size or info.image_size
    )
    if any(key.startswith("gate.") for key in state):
        add_gate(net, mode=config.gating)
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return net.eval(), name, config


def _from_run(path: Path, network: str | None):
    from coop_utils.runs import Run
    from coop_utils.training import load_system
    from coop_utils.verdict import deployed_teammate

    if not (path / "checkpoint.pt").is_file() or not (path / "config.json").is_file():
        raise ValueError(f"{path} is not a run folder: it needs config.json and checkpoint.pt")
    config = _config(json.loads((path / "config.json").read_text()))
    if config.method != "cooperative":
        raise ValueError(f"{path} is a {config.method} run; export takes cooperative runs")
    system = load_system(Run(config, path, {}, [], 0.0))
    nets = {f"teammate{i}": net for i, net in enumerate(system.teammates)}
    nets |= {"leader": system.leader} if system.leader is not None else {}
    if network is None and (path / "metrics.json").is_file():
        network = deployed_teammate(json.loads((path / "metrics.json").read_text())["metrics"])
    network = network or "teammate0"
    if network not in nets:
        raise ValueError(f"no network {network!r} in {path}; it has {', '.join(nets)}")
    return nets[network], network, config


def save_network(
    net: SkippableResNet, path: str | Path, config: RunConfig, name: str, half: bool = False
) -> Path:
    """One network's weights (fp16 with ``half``), its name and its run's config, in one file
    that ``torch.load(weights_only=True)`` and :func:`load_network` read."""
    state = {
        key: (value.half() if half and value.is_floating_point() else value).cpu()
        for key, value in net.state_dict().items()
    }
    runs.save_checkpoint(Path(path), {"config": config.to_dict(), "network": name, "state": state})
    return Path(path)


def log_path(summary_path: str | Path) -> Path:
    """Where a recorded run's per-epoch log lies: ``logs/<name>.csv`` beside its summary."""
    summary_path = Path(summary_path)
    return summary_path.parent / "logs" / f"{summary_path.stem}.csv"


#: the methods whose seed-0 networks the book shows, so their weights are recorded with the results
SHOWN_METHODS = ("cooperative", "independent", "byot", "branchynet")


def record_run_files(run) -> list[Path]:
    """Beside a finished campaign run's summary: its per-epoch log
    (``<profile>/<dataset>/logs/<name>.csv``) and, for seed 0 of a shown method without an
    ablation, each network's fp16 weights (``weights/<profile>/<dataset>/<name>/<net>.pt``)."""
    from coop_utils.training import load_system

    config, summary = run.config, Path(run.summary_path)
    written = []
    log = Path(run.directory) / "log.csv"
    if log.exists():
        target = log_path(summary)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(log, target)
        written.append(target)
    if config.seed == 0 and not config.variant and config.method in SHOWN_METHODS:
        nets = {}  # each network once, under the first name it is evaluated as
        for name, net, _ in load_system(run).evaluations():
            nets.setdefault(id(net), (name, net))
        names = [name for name, _ in nets.values()]
        folder = Path(config.results_root) / "weights" / config.profile / config.dataset
        for index, (name, net) in enumerate(nets.values()):
            label = name if names.count(name) == 1 else f"{name}{names[:index].count(name)}"
            path = folder / summary.stem / f"{label}.pt"
            written.append(save_network(net, path, config, label, half=True))
    return written
