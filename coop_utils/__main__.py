"""Command line of the project.

``python -m coop_utils train --profile P --dataset D --method M [--set key=value ...]`` trains
one run (the same command under ``torchrun --nproc_per_node=N`` trains on N processes, their
gradients averaged); ``python -m coop_utils book`` builds the reader's book from the
recorded results, training nothing (``--profile P --train``: also each chapter's runs);
``python -m coop_utils results --profile P`` trains (or reuses, or resumes) every run of the
profile's campaign in turn, keeping each summary already recorded by this config and code;
``python -m coop_utils export RUN --s S --output FILE`` writes one depth plan of a trained
network as a plain network (a torch.export .pt2 file, or ONNX), recording the input
normalisation it expects.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

from coop_utils import book, export, training
from coop_utils.config import ABLATIONS, PROFILES, load_config, parse_override
from coop_utils.datasets import DatasetError
from coop_utils.evaluate import choose_scaling_factor, count_flops
from coop_utils.models import check_scaling_factor
from coop_utils.results import campaign_state
from coop_utils.runs import CheckpointError, RunBusyError, results_path, run_progress
from coop_utils.training import NonFiniteLossError, TrainingInterrupted


def _train(args: argparse.Namespace) -> int:
    overrides = dict(ABLATIONS.get(args.variant or "", {}))  # a named ablation's switches
    overrides |= dict(parse_override(item) for item in args.set)
    for key in ("dataset", "method", "variant", "seed"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    config = load_config(args.profile, **overrides)
    run = training.train(config, progress=not args.quiet, reuse_stale=args.reuse_stale)
    if run.parameter_digest:
        print(f"parameter digest: {run.parameter_digest}", flush=True)
    if not run.metrics:  # a rank other than 0
        return 0
    status = "reused finished run" if run.reused else "finished"
    print(f"{status}: {run.directory} ({run.wall_time_s:.0f} s of training)")
    for network, rows in run.metrics.items():
        cells = "  ".join(f"s={s}: {row['top1']:.1f}" for s, row in rows.items())
        print(f"  {network:>14} top-1 %  {cells}")
    if run.summary_path:
        print(f"summary: {run.summary_path}")
    if args.json:
        print(json.dumps(run.metrics))
    return 0


def _results(args: argparse.Namespace) -> int:
    print("checking the recorded runs' behaviour digests against today's code", file=sys.stderr)
    planned = campaign_state(args.profile, behaviour=True, name=args.campaign)
    if not planned:
        raise ValueError(f"profile {args.profile!r} has no runs in its campaign {args.campaign!r}")
    busy = []
    for number, (config, state) in enumerate(planned, 1):
        name = results_path(config).stem
        if args.list:
            progress = run_progress(config) if state == "to run" else ""
            print(
                f"{number:>3}/{len(planned)}  {name:<40} {state}" + f": {progress}" * bool(progress)
            )
            continue
        if state == "recorded":  # the committed summary stands, whether or not runs/ is here
            print(f"run {number}/{len(planned)}: {name}: recorded, kept", flush=True)
            continue
        print(f"run {number}/{len(planned)}: {name}", flush=True)
        try:
            run = training.train(config, progress=not args.quiet, reuse_stale=args.reuse_stale)
        except RunBusyError:  # another process of this command trains it: take the next run
            print("  training in another process: skipped", flush=True)
            busy.append(name)
            continue
        print(f"  {'reused' if run.reused else 'finished'}: {run.summary_path}", flush=True)
        for path in export.record_run_files(run):
            print(f"  recorded {path}", flush=True)
    if busy:
        print(
            f"{len(busy)} run(s) were training in other processes ({', '.join(busy)}); "
            "run this command again once they finish to record them",
            flush=True,
        )
    return 0


def _export(args: argparse.Namespace) -> int:
    # Bad input is refused before anything is loaded or written.
    if args.s is not None:
        check_scaling_factor(args.s)
    if (args.mean is None) != (args.std is None):
        raise ValueError("--mean and --std go together")
    stated = export.Normalisation(args.mean, args.std, 1) if args.mean else None  # checks them
    fmt = export.format_of(args.output, args.format)
    export.check_format(fmt)
    export.check_output(args.output, args.force)
    net, name, config = export.load_network(args.source, args.network)
    if args.data_root is not None:
        config = config.replace(data_root=str(args.data_root))
    s = args.s
    if s is None:
        s = choose_scaling_factor(net, args.budget_flops, scaling_factors=config.scaling_factors)
    # The Leader trains at full depth only: its shared statistics are those of its full plan.
    full_leader = name == "leader" and len(net.active_blocks(s)) == net.num_blocks
    module = export.export_plan(net, s, shared_bn=args.shared_bn or full_leader)
    if stated is not None:
        normalisation = dataclasses.replace(stated, image_size=net.image_size)
    else:
        normalisation = export.training_normalisation(config, args.source)
    flops, full = count_flops(net, s), count_flops(net, 1.0)
    print(
        f"{name} of {args.source}, s = {s:g}: blocks {module.plan_blocks} "
        f"({len(module.plan_blocks)} of {net.num_blocks}), {flops:,} FLOPs per image "
        f"({flops / full:.0%} of full depth)"
    )
    path = export.save_plan(module, args.output, fmt, force=args.force, normalisation=normalisation)
    reloaded, recorded = export.load_plan(path, fmt)
    images = torch.rand(4, 3, net.image_size, net.image_size)  # raw images, floats in [0, 1]
    with torch.no_grad():
        gap = (reloaded(recorded(images)) - module(normalisation(images))).abs().max().item()
    print(
        f"wrote {path} ({fmt}, {path.stat().st_size / 1e6:.2f} MB); reloaded, its outputs are "
        f"within {gap:.1e} of the exported module's"
    )
    source = "as stated" if stated is not None else "of the run's training images"
    print(
        f"input: RGB images {net.image_size}x{net.image_size}, floats in [0, 1], less mean "
        f"{_rounded(recorded.mean)} and divided by std {_rounded(recorded.std)} per channel "
        f"({source}; recorded in the file)"
    )
    return 0


def _rounded(values) -> str:
    return "(" + ", ".join(f"{v:.4f}" for v in values) + ")"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m coop_utils", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train (or reuse, or resume) one run")
    train.add_argument("--profile", required=True, choices=PROFILES)
    train.add_argument("--dataset", choices=["cifar100", "tiny-imagenet"])
    train.add_argument("--method", choices=["cooperative", "independent", "byot", "branchynet"])
    train.add_argument(
        "--variant",
        help="a name for the run's results file; an ablation's name also flips its switches: "
        + ", ".join(ABLATIONS),
    )
    train.add_argument("--seed", type=int)
    train.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key"
    )
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.add_argument(
        "--reuse-stale",
        action="store_true",
        help="reuse or resume a run made by other code or data instead of training it again",
    )
    train.add_argument("--json", action="store_true", help="also print the metrics as JSON")
    results = commands.add_parser(
        "results", help="train (or reuse, or resume) every run of the profile's campaign"
    )
    results.add_argument("--profile", default="preview", choices=PROFILES)
    results.add_argument(
        "--campaign",
        default="campaign",
        help="which of the profile's campaigns: its main list (default) or a name under "
        "'campaigns' in params/PROFILE.yaml, such as budget-pilot",
    )
    results.add_argument("--list", action="store_true", help="list the runs and stop")
    results.add_argument("--quiet", action="store_true", help="no progress bars")
    results.add_argument("--reuse-stale", action="store_true", help="as for train")
    book.add_arguments(
        commands.add_parser("book", help="build the reader's book (--train: also train)")
    )
    _add_export_arguments(commands)
    args = parser.parse_args(argv)
    handlers = {"train": _train, "results": _results, "book": book.run, "export": _export}
    try:
        return handlers[args.command](args)
    except (ValueError, DatasetError, RunBusyError) as error:  # bad input: no traceback
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (NonFiniteLossError, CheckpointError) as error:  # the run's state: kept as it is
        print(f"error: {error}", file=sys.stderr)
        return 1
    except TrainingInterrupted as error:  # the checkpoint is saved: the same command resumes
        print(f"interrupted by {error}", file=sys.stderr)
        return 128 + error.signum
    except KeyboardInterrupt:  # outside the training steps: the last checkpoint stands
        print(
            "interrupted: the last saved checkpoint stands; the same command resumes",
            file=sys.stderr,
        )
        return 130


_EXPORT_EPILOG = """\
The file's network takes RGB images N x 3 x H x W at the run's image size, normalised as the
run's data pipeline normalises them: (x - mean) / std per channel, x a float image in [0, 1],
mean and std those of the run's training images. The file records them: a .pt2 in its extra file
normalisation.json (JSON: mean, std, image_size), an ONNX file in its metadata entry
normalisation (the same JSON). In Python, coop_utils.export.load_plan(FILE) returns the network
and the normalisation: net, norm = load_plan(FILE); logits = net(norm(images)).

The mean and std are recomputed from the run's data (--data-root, else the run's data_root,
else $COOP_DATA_ROOT, else data/), by the run's own pipeline; a run folder's data is checked
against the data it trained on, by fingerprint. Without the data, state them: --mean and --std.
TorchScript (.pt, .ts, --format torchscript) is no longer written: torch deprecates it.
"""


def _add_export_arguments(commands) -> None:
    parser = commands.add_parser(
        "export",
        help="write one depth plan of a trained network as a plain network (.pt2, ONNX)",
        description="Write one depth plan of a trained network as a plain network: an\n"
        "ExportedProgram (.pt2, torch.export) or ONNX.",
        epilog=_EXPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "source", help="a cooperative run's folder, or a weights file of one network (.pt)"
    )
    depth = parser.add_mutually_exclusive_group(required=True)
    depth.add_argument("--s", type=float, help="the scaling factor, in (0, 1]")
    depth.add_argument(
        "--budget-flops",
        type=float,
        help="FLOPs per image: the deepest plan of the run's grid within it",
    )
    parser.add_argument(
        "--output", "-o", type=Path, required=True, help="the file to write: .pt2 or .onnx"
    )
    parser.add_argument(
        "--format",
        metavar="{pt2,onnx}",
        help="default: onnx for a .onnx output, else pt2; onnx needs the [export] extra",
    )
    parser.add_argument(
        "--network",
        help="teammate0, teammate1, ... or leader (default: the deployed Teammate of the run)",
    )
    parser.add_argument(
        "--shared-bn",
        action="store_true",
        help="export with the shared batch-norm statistics where no per-depth ones are stored",
    )
    parser.add_argument(
        "--data-root", type=Path, help="where the run's dataset lies (for its mean and std)"
    )
    for flag, text in (
        ("--mean", "the input's per-channel mean, in [0, 1] units: stated, not recomputed"),
        ("--std", "the input's per-channel standard deviation, with --mean"),
    ):
        parser.add_argument(flag, type=float, nargs=3, metavar=("R", "G", "B"), help=text)
    parser.add_argument("--force", action="store_true", help="overwrite an existing output file")


if __name__ == "__main__":
    sys.exit(main())
