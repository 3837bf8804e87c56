"""Run configuration: one dataclass, three profiles, validation before any work starts.

``load_config("preview", dataset="tiny-imagenet", method="cooperative", seed=1)``
reads ``params/preview.yaml``, applies the overrides, and checks every key: an
unknown key, a wrong type or an out-of-range value raises ``ValueError`` naming
the key and what it allows.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import torch
import yaml

from coop_utils.models import ARCHITECTURES, SCALING_FACTORS, EarlyExitNetwork

PROFILES = ("smoke", "preview", "full")
#: the repository's root: relative paths of the book and its chapters start here
REPO_ROOT = Path(__file__).resolve().parent.parent
PARAMS_DIR = REPO_ROOT / "params"

Dataset = Literal["cifar100", "tiny-imagenet"]
Method = Literal["cooperative", "independent", "byot", "branchynet"]

#: the ablations of the cooperative method: a variant name and the switches it flips
ABLATIONS: dict[str, dict[str, Any]] = {
    "no-leader": {"use_leader": False},
    "no-mutual": {"mutual": False},
    "no-sfsl": {"sfsl": False},
    "first-gating": {"gating": "first"},
    "one-teammate": {"teammates": 1, "mutual": False},
    "per-batch": {"sampling": "per_batch"},
    "shared-bn": {"bn_stats": "shared"},
    "sfsl-normalised": {"sfsl_normalise": True},
    "gate-all": {"gate_gradient": "all"},
    "gate-kept": {"gate_gradient": "kept"},
}

#: keys that say where or how fast a run happens, not what it computes: left out of the hash
_NOT_HASHED = ("device", "compile", "data_root", "run_root", "results_root", "eval_every")
#: keys a profile file carries for the chapters and the campaigns but that a run does not take
_NOTEBOOK_KEYS = ("chapters", "campaign", "campaigns")


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a training run; see ``book/open-decisions.md`` for each default."""

    dataset: Dataset = "cifar100"
    method: Method = "cooperative"
    profile: Literal["smoke", "preview", "full"] = "smoke"
    variant: str = ""  # a name for an ablation or seed, used in the results file name

    # data
    data: Literal["real", "generated"] = "real"
    generated_train_per_class: int = 20
    generated_test_per_class: int = 5
    num_classes: int | None = None  # None: all classes of the dataset
    image_size: int | None = None  # None: the dataset's own size (32 or 64)
    train_fraction: float = 1.0  # share of the training images per class
    val_fraction: float = 0.05  # carved from training data, stratified

    # network and schedule
    arch: str = "resnet152"
    epochs: int = 200
    max_steps: int | None = None  # stop after this many optimizer steps (smoke runs)
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    lr_schedule: Literal["step", "linear", "cosine"] = "step"  # linear, cosine: to zero
    lr_milestones: tuple[int, ...] = (60, 120, 160)  # step: lr x lr_gamma at these epochs
    lr_gamma: float = 0.2

    # cooperative method
    temperature: float = 4.0
    teammates: int = 2
    use_leader: bool = True
    mutual: bool = True
    sfsl: bool = True
    sfsl_normalise: bool = False  # 1/s rescaled to mean 1 over the drawn factors
    gating: Literal["gumbel", "first"] = "gumbel"
    gate_gradient: Literal["kept", "all"] = "kept"  # which blocks a sub-network pass computes
    tau: float = 1.0
    sampling: Literal["per_epoch", "per_batch"] = "per_epoch"
    factors_per_teammate: int = 2
    sampled_factors: tuple[float, ...] = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    bn_stats: Literal["per_depth", "shared"] = "per_depth"  # per_depth: re-estimated per plan
    bn_batches: int = 20  # training batches that re-estimate each plan's statistics

    # baselines and evaluation
    scaling_factors: tuple[float, ...] = SCALING_FACTORS  # also: one independent net per plan
    branchynet_weights: tuple[float, ...] = ()  # per exit, shallow to deep; (): 1 for each
    eval_every: int = 0  # evaluate every N epochs during training; 0: only at the end

    # where and how
    seed: int = 0
    device: str = "auto"  # auto: cuda if available, else cpu
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on CUDA, else fp32
    compile: bool = False
    data_root: str | None = None  # None: $COOP_DATA_ROOT, else data/
    run_root: str = "runs"
    results_root: str = "results"

    def __post_init__(self) -> None:
        _validate(self)

    def to_dict(self) -> dict[str, Any]:
        return {key: list(v) if isinstance(v, tuple) else v for key, v in vars(self).items()}

    def resolved_device(self) -> torch.device:
        """The device ``device`` names; ``auto`` is CUDA where available."""
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        device = torch.device(self.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"config key 'device' is {self.device!r}, but CUDA is not available")
        return device

    def resolved_precision(self) -> str:
        """``fp32`` or ``bf16`` (autocast); ``auto`` is bf16 on CUDA and fp32 elsewhere."""
        if self.precision != "auto":
            return self.precision
        cuda = self.device.startswith("cuda") or (
            self.device == "auto" and torch.cuda.is_available()
        )
        return "bf16" if cuda else "fp32"

    def hash(self) -> str:
        """Short hash of the keys that change what the run computes, the precision included."""
        hashed = {key: value for key, value in self.to_dict().items() if key not in _NOT_HASHED}
        hashed["precision"] = self.resolved_precision()
        payload = json.dumps(hashed, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)


_HINTS = typing.get_type_hints(RunConfig)


def _describe(hint: Any) -> str:
    origin = get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(value) for value in get_args(hint))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in get_args(hint))
    if origin is tuple:
        return f"a list of {_describe(get_args(hint)[0])}"
    if hint is type(None):
        return "null"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[hint]


def _matches(value: Any, hint: Any) -> bool:
    origin = get_origin(hint)
    if origin is Literal:
        return value in get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in get_args(hint))
    if origin is tuple:
        return isinstance(value, tuple) and all(_matches(v, get_args(hint)[0]) for v in value)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


_RANGES: dict[str, tuple[str, Any]] = {
    "generated_train_per_class": ("an integer >= 1", lambda v: v >= 1),
    "generated_test_per_class": ("an integer >= 1", lambda v: v >= 1),
    "num_classes": ("null or an integer >= 2", lambda v: v is None or v >= 2),
    "image_size": ("null or an integer >= 16", lambda v: v is None or v >= 16),
    "train_fraction": ("a number in (0, 1]", lambda v: 0 < v <= 1),
    "val_fraction": ("a number in [0, 0.5]", lambda v: 0 <= v <= 0.5),
    "arch": ("one of " + ", ".join(ARCHITECTURES), lambda v: v in ARCHITECTURES),
    "epochs": ("an integer >= 1", lambda v: v >= 1),
    "max_steps": ("null or an integer >= 1", lambda v: v is None or v >= 1),
    "batch_size": ("an integer >= 2", lambda v: v >= 2),
    "lr": ("a number > 0", lambda v: v > 0),
    "momentum": ("a number in [0, 1)", lambda v: 0 <= v < 1),
    "weight_decay": ("a number >= 0", lambda v: v >= 0),
    "lr_milestones": (
        "increasing epochs >= 1",
        lambda v: list(v) == sorted(set(v)) and all(m >= 1 for m in v),
    ),
    "lr_gamma": ("a number in (0, 1]", lambda v: 0 < v <= 1),
    "bn_batches": ("an integer >= 1", lambda v: v >= 1),
    "temperature": ("a number > 0", lambda v: v > 0),
    "teammates": ("an integer from 1 to 4", lambda v: 1 <= v <= 4),
    "tau": ("a number > 0", lambda v: v > 0),
    "factors_per_teammate": ("an integer >= 0", lambda v: v >= 0),
    "sampled_factors": ("numbers in (0, 1)", lambda v: len(v) > 0 and all(0 < s < 1 for s in v)),
    "scaling_factors": (
        "numbers in (0, 1], including 1.0",
        lambda v: all(0 < s <= 1 for s in v) and 1.0 in v,
    ),
    "branchynet_weights": ("numbers > 0", lambda v: all(w > 0 for w in v)),
    "eval_every": ("an integer >= 0", lambda v: v >= 0),
    "seed": ("an integer >= 0", lambda v: v >= 0),
    "device": (
        "'auto', 'cpu', 'cuda' or 'cuda:N'",
        lambda v: v in ("auto", "cpu", "cuda") or (v.startswith("cuda:") and v[5:].isdigit()),
    ),
}


def _validate(config: RunConfig) -> None:
    for key, value in vars(config).items():
        hint = _HINTS[key]
        if not _matches(value, hint):
            raise ValueError(f"config key {key!r} must be {_describe(hint)}, got {value!r}")
        if key in _RANGES:
            allowed, check = _RANGES[key]
            if not check(value):
                raise ValueError(f"config key {key!r} must be {allowed}, got {value!r}")
    if config.method == "cooperative" and config.factors_per_teammate > len(config.sampled_factors):
        raise ValueError(
            f"config key 'factors_per_teammate' ({config.factors_per_teammate}) exceeds the "
            f"{len(config.sampled_factors)} sampled_factors it draws from without replacement"
        )
    if config.sfsl_normalise and not config.sfsl:
        raise ValueError("config key 'sfsl_normalise' needs sfsl: true (it rescales 1/s)")
    depth = sum(ARCHITECTURES[config.arch].stage_sizes)
    exits = len(EarlyExitNetwork.blocks_at(depth, config.scaling_factors))
    if config.branchynet_weights and len(config.branchynet_weights) != exits:
        raise ValueError(
            f"config key 'branchynet_weights' must give one weight per BranchyNet exit: {exits} "
            f"for {config.arch} at these scaling_factors, got {len(config.branchynet_weights)}"
        )
    if config.teammates == 1 and config.mutual and config.method == "cooperative":
        raise ValueError(
            "config key 'mutual' must be false with teammates: 1 (no one to learn from)"
        )


def _coerce(value: Any, hint: Any) -> Any:
    """YAML lists become tuples, and whole numbers become floats, where the dataclass says so."""
    if isinstance(value, list) and get_origin(hint) is tuple:
        return tuple(_coerce(v, get_args(hint)[0]) for v in value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def parse_override(text: str) -> tuple[str, Any]:
    """``"lr=0.05"`` -> ``("lr", 0.05)``; the value is read as YAML (``[0.2, 0.5]``, ``true``)."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ValueError(f"an override must look like key=value, got {text!r}")
    return key.strip(), yaml.safe_load(raw)


def load_config(profile: str, params_dir: str | Path | None = None, **overrides: Any) -> RunConfig:
    """The profile's ``params/<profile>.yaml`` with ``overrides`` applied, validated."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}")
    path = Path(params_dir or PARAMS_DIR) / f"{profile}.yaml"
    if not path.is_file():
        raise ValueError(f"profile file {path} is missing")
    values = yaml.safe_load(path.read_text()) or {}
    values.update(overrides)
    values["profile"] = profile
    for key in _NOTEBOOK_KEYS:
        values.pop(key, None)
    unknown = sorted(set(values) - set(_HINTS))
    if unknown:
        raise ValueError(
            f"unknown config key(s) {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(sorted(_HINTS))}"
        )
    return RunConfig(**{key: _coerce(value, _HINTS[key]) for key, value in values.items()})


def campaign(
    profile: str, params_dir: str | Path | None = None, name: str = "campaign"
) -> list[dict[str, Any]]:
    """The runs of one of the profile's campaigns, in order: one override dict per run.

    ``campaign`` is the profile's main list; other campaigns sit under ``campaigns: {name:
    {results_root: ..., set: {...}, runs: [...]}}``, each written to its own results folder,
    with ``set`` (optional) overriding config keys for every run of the section. An entry
    gives ``method``, ``seeds`` and optionally ``variant`` (an ablation's name flips its
    switches; any other name needs ``set`` or ``match_training_flops``), ``set`` (config keys
    to override) and ``match_training_flops`` (the name of another run of the campaign, such
    as ``cooperative``: the run keeps that key, and its epochs are chosen so that its training
    FLOPs match that run's of the same seed, :func:`coop_utils.results.planned_configs`).
    """
    path = Path(params_dir or PARAMS_DIR) / f"{profile}.yaml"
    content = yaml.safe_load(path.read_text()) or {}
    section: dict[str, Any] = {}
    if name == "campaign":
        entries = content.get("campaign") or []
    else:
        known = content.get("campaigns") or {}
        if name not in known:
            raise ValueError(
                f"{path} has no campaign {name!r}; known: {', '.join(['campaign', *known])}"
            )
        section = known[name]
        entries = section.get("runs") or []
    runs = []
    for entry in entries:
        unknown = sorted(set(entry) - _ENTRY_KEYS)
        if unknown:
            raise ValueError(
                f"{path}: campaign entry {entry} has unknown key(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(_ENTRY_KEYS))}"
            )
        variant, overrides = entry.get("variant", ""), dict(entry.get("set") or {})
        matched = entry.get("match_training_flops")
        if variant and variant not in ABLATIONS and not overrides and not matched:
            raise ValueError(
                f"{path}: campaign variant {variant!r} is not an ablation (a run of another "
                "name says what it changes with 'set' or 'match_training_flops')"
            )
        if matched and not variant:
            raise ValueError(
                f"{path}: a campaign entry with match_training_flops needs a variant (its "
                f"results file must not be {entry['method']!r}'s)"
            )
        for seed in entry.get("seeds", [0]):
            run = {"method": entry["method"], "seed": seed}
            if variant:
                run |= {"variant": variant, **ABLATIONS.get(variant, {})}
            if section.get("results_root"):
                run["results_root"] = section["results_root"]
            run |= dict(section.get("set") or {}) | overrides
            if matched:
                run["match_training_flops"] = matched
            runs.append(run)
    return runs


#: the keys a campaign entry may hold
_ENTRY_KEYS = {"method", "variant", "seeds", "set", "match_training_flops"}
