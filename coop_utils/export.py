"""Ship one depth: a depth plan of a trained network as a plain network, to .pt2 or ONNX.

:func:`export_plan` copies the plan's stem, blocks and head into a :class:`PlanNetwork`: no gate,
no mask, no branch on ``s``, every batch norm a plain ``nn.BatchNorm2d`` holding the plan's own
statistics. :func:`save_plan` writes it as an ExportedProgram (``.pt2``: ``torch.export.export``
then ``torch.export.save``) or as ONNX (the ``[export]`` extra: onnx, onnxscript, onnxruntime),
taking batches of any size; :func:`load_plan` reads either back.

Input convention: the network takes RGB images N x 3 x H x W (H = W = the run's image size)
normalised as the run's data pipeline normalises them, ``(x - mean) / std`` per channel for
images ``x`` as floats in [0, 1], with the per-channel mean and standard deviation of the run's
training images. The file records them (:class:`Normalisation`: in a ``.pt2``, the extra file
``normalisation.json``; in ONNX, the metadata entry ``normalisation``, the same JSON), and
:func:`load_plan` returns them beside the network: ``net, norm = load_plan(path)``, then
``net(norm(images))`` for raw images. :func:`training_normalisation` recomputes them from a
run's data, as its pipeline did.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import json
import re
import shutil
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from coop_utils import runs
from coop_utils.config import RunConfig, load_config
from coop_utils.datasets import DATASETS, DatasetError
from coop_utils.gating import add_gate
from coop_utils.loaders import channel_stats, prepare_data
from coop_utils.models import PlanBatchNorm2d, SkippableResNet, build_model, check_scaling_factor
from coop_utils.results import deployed_teammate
from coop_utils.training import load_system

FORMATS = ("pt2", "onnx")
_ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")
_TORCHSCRIPT = (
    "TorchScript is no longer written (torch deprecates it): write a .pt2 file "
    "(torch.export; load it with torch.export.load) or a .onnx one"
)
#: where a file keeps its :class:`Normalisation`: a .pt2's extra file, an ONNX metadata key
NORMALISATION_FILE, NORMALISATION_KEY = "normalisation.json", "normalisation"


@dataclasses.dataclass(frozen=True)
class Normalisation:
    """What a network's input must be: RGB images at ``image_size`` x ``image_size``, as floats
    in [0, 1], less ``mean`` and divided by ``std`` per channel."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: int

    def __post_init__(self) -> None:
        mean, std = tuple(map(float, self.mean)), tuple(map(float, self.std))
        if len(mean) != len(std) or not mean:
            raise ValueError(f"a mean and a std per channel, got {len(mean)} and {len(std)}")
        if not all(value > 0 for value in std):
            raise ValueError(f"std must be positive, got {std}")
        if int(self.image_size) < 1:
            raise ValueError(f"image size must be positive, got {self.image_size}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        object.__setattr__(self, "image_size", int(self.image_size))

    def __call__(self, images: Tensor) -> Tensor:
        """``images`` (N x C x H x W: uint8 in [0, 255], or floats in [0, 1]) as the network
        takes them."""
        if images.shape[1:] != (len(self.mean), self.image_size, self.image_size):
            raise ValueError(
                f"images must be N x {len(self.mean)} x {self.image_size} x {self.image_size}, "
                f"got {tuple(images.shape)}"
            )
        images = images.float() / 255 if images.dtype == torch.uint8 else images
        mean, std = (
            torch.tensor(v, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
            for v in (self.mean, self.std)
        )
        return (images - mean) / std

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "a normalisation") -> Normalisation:
        """The normalisation :meth:`to_json` wrote; other text raises a one-line ValueError
        naming ``source``."""
        values = runs.parse_json(text, source)
        if not isinstance(values, dict) or not {"mean", "std", "image_size"} <= values.keys():
            raise ValueError(f"{source} is not a normalisation: JSON of mean, std and image_size")
        return cls(values["mean"], values["std"], values["image_size"])

    @classmethod
    def of_samples(cls, raw: Tensor, normalised: Tensor) -> Normalisation:
        """The normalisation that takes uint8 images ``raw`` to ``normalised`` (both
        N x C x H x W), fitted per channel: a data pipeline's, read off a batch it prepared."""
        x = raw.double().transpose(0, 1).flatten(1) / 255
        y = normalised.double().transpose(0, 1).flatten(1)
        y_centred = y - y.mean(1, keepdim=True)
        std = (y_centred * x).sum(1) / (y_centred**2).sum(1)  # x = std * y + mean
        mean = x.mean(1) - std * y.mean(1)
        return cls(mean.tolist(), std.tolist(), raw.shape[-1])


def training_normalisation(config: RunConfig, source: str | Path | None = None) -> Normalisation:
    """The normalisation the run of ``config`` trained with: the per-channel mean and std of its
    training images, recomputed from its data by its own pipeline (:func:`prepare_data`). When
    ``source`` is a run folder whose ``provenance.json`` names its data, other data is refused;
    missing data is never downloaded."""
    try:  # the data's fingerprint first: it raises, downloading nothing, where the data is absent
        found = runs.run_data_fingerprint(config)
    except DatasetError as error:
        raise ValueError(f"{error} Or pass --data-root, or state --mean and --std") from None
    if source is not None:
        expected = runs.read_run_file(source, "provenance.json").get("data_fingerprint")
        if expected and expected != found:
            raise ValueError(
                f"the data found (fingerprint {found}) is not the data {source} was trained on "
                f"({expected}): point --data-root at that data, or state --mean and --std"
            )
    data = prepare_data(config, torch.device("cpu"))
    mean, std = channel_stats(data.train.images, data.train.indices)
    return Normalisation(mean.tolist(), std.tolist(), data.image_size)


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


def format_of(path: str | Path, fmt: str | None = None) -> str:
    """The format to write ``path`` in: ``fmt`` if given, else ``onnx`` for a ``.onnx`` suffix,
    else ``pt2``; TorchScript (``torchscript``, a ``.pt`` or ``.ts`` suffix) is refused, as is
    a format its suffix contradicts."""
    suffix = Path(path).suffix
    if fmt == "torchscript" or suffix in (".pt", ".ts"):
        raise ValueError(_TORCHSCRIPT)
    fmt = fmt or ("onnx" if suffix == ".onnx" else "pt2")
    if (fmt, suffix) in (("pt2", ".onnx"), ("onnx", ".pt2")):
        raise ValueError(f"a {suffix} file cannot hold the {fmt} format")
    return fmt


def check_format(fmt: str) -> None:
    """Raise ``ValueError`` unless ``fmt`` is known and the packages it needs are installed."""
    if fmt == "torchscript":
        raise ValueError(_TORCHSCRIPT)
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    missing = [p for p in _ONNX_PACKAGES if importlib.util.find_spec(p) is None]
    if fmt == "onnx" and missing:
        raise ValueError(
            f"ONNX export needs {', '.join(missing)}, not installed: install the extra, "
            "pip install -e '.[export]'"
        )


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
    module: PlanNetwork,
    path: str | Path,
    fmt: str | None = None,
    force: bool = False,
    normalisation: Normalisation | None = None,
) -> Path:
    """Write ``module`` to ``path`` as .pt2 or ONNX (see :func:`format_of`), taking batches of
    any size, with ``normalisation``, the input it expects, recorded in the file. The file is
    written once the export has succeeded."""
    path, fmt = check_output(path, force), format_of(path, fmt)
    check_format(fmt)
    if normalisation is not None and normalisation.image_size != module.image_size:
        raise ValueError(
            f"the normalisation is for {normalisation.image_size} px images, the network takes "
            f"{module.image_size} px"
        )
    module = module.eval()
    device = next(module.parameters()).device
    example = torch.zeros(2, 3, module.image_size, module.image_size, device=device)
    batch = ({0: torch.export.Dim("batch")},)
    if fmt == "pt2":
        program = torch.export.export(module, (example,), dynamic_shapes=batch)
        extra = {NORMALISATION_FILE: normalisation.to_json()} if normalisation else None
        with warnings.catch_warnings():  # channels-last weights: stored whole all the same
            warnings.filterwarnings("ignore", "No complete tensor found", UserWarning)
            torch.export.save(program, path, extra_files=extra)
        return path
    program = torch.onnx.export(
        module,
        (example,),
        input_names=["images"],
        output_names=["logits"],
        dynamic_shapes=batch,
        dynamo=True,
        verbose=False,
    )
    if normalisation is not None:
        program.model.metadata_props[NORMALISATION_KEY] = normalisation.to_json()
    program.save(path, external_data=False)
    return path


class _OnnxPlan:
    """An ONNX Runtime session called like a module: images (a tensor) in, logits out."""

    def __init__(self, path: Path) -> None:
        import onnxruntime  # here: an optional dependency, the [export] extra

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = torch.get_num_threads(), 1
        self.session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
        self.input = self.session.get_inputs()[0].name
        self.metadata = self.session.get_modelmeta().custom_metadata_map

    def __call__(self, images: Tensor) -> Tensor:
        array = images.detach().cpu().contiguous().numpy()
        return torch.from_numpy(self.session.run(None, {self.input: array})[0])


class LoadedPlan(NamedTuple):
    """A file of :func:`save_plan` read back: the network, and the input it expects."""

    net: Callable[[Tensor], Tensor]
    normalisation: Normalisation | None  # None: the file records none


def load_plan(path: str | Path, fmt: str | None = None) -> LoadedPlan:
    """A file of :func:`save_plan` loaded back: the network (the ExportedProgram's module, or an
    ONNX Runtime session called like one) and the normalisation the file records."""
    path, fmt = Path(path), format_of(path, fmt)
    check_format(fmt)
    if fmt == "onnx":
        net = _OnnxPlan(path)
        recorded = net.metadata.get(NORMALISATION_KEY)
    else:
        extra = {NORMALISATION_FILE: ""}
        net = torch.export.load(path, extra_files=extra).module()
        recorded = extra[NORMALISATION_FILE]
    source = f"the normalisation recorded in {path}"
    return LoadedPlan(net, Normalisation.from_json(recorded, source) if recorded else None)


def time_call(call: Callable[[Tensor], object], images: Tensor, min_run_time: float = 0.2) -> float:
    """Median seconds of ``call(images)`` on the CPU, under inference mode, as
    ``torch.utils.benchmark.Timer`` measures it (with torch's current thread count)."""
    # Imported here: on a build without a CUDA runtime, importing torch.utils.benchmark logs
    # a warning, which every command of the package would otherwise print.
    from torch.utils.benchmark import Timer

    timer = Timer(
        "call(images)",
        globals={"call": call, "images": images},
        num_threads=torch.get_num_threads(),
    )
    with torch.inference_mode():
        timer.timeit(3)  # warm-up
        return timer.blocked_autorange(min_run_time=min_run_time).median


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
        values = runs.read_run_file(path.parent, "config.json")
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
    if not (path / "checkpoint.pt").is_file() or not (path / "config.json").is_file():
        raise ValueError(f"{path} is not a run folder: it needs config.json and checkpoint.pt")
    config = _config(runs.read_run_file(path, "config.json"))
    if config.method != "cooperative":
        raise ValueError(f"{path} is a {config.method} run; export takes cooperative runs")
    system = load_system(runs.Run(config, path, {}, [], 0.0))
    nets = {f"teammate{i}": net for i, net in enumerate(system.teammates)}
    nets |= {"leader": system.leader} if system.leader is not None else {}
    if network is None and (path / "metrics.json").is_file():
        network = deployed_teammate(runs.read_run_file(path, "metrics.json")["metrics"])
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
