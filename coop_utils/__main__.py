"""Command line of the project.

``python -m coop_utils train --profile P --dataset D --method M [--set key=value ...]`` trains
one run (the same command under ``torchrun --nproc_per_node=N`` trains with
DistributedDataParallel); ``python -m coop_utils book --profile P`` executes the chapters and
builds the book.
"""

from __future__ import annotations

import argparse
import json
import sys

from coop_utils.config import ABLATIONS, PROFILES, load_config, parse_override
from coop_utils.data import DatasetError
from coop_utils.runs import CheckpointError, RunBusyError
from coop_utils.training import NonFiniteLossError, TrainingInterrupted


def _train(args: argparse.Namespace) -> int:
    from coop_utils.training import train

    overrides = dict(ABLATIONS.get(args.variant or "", {}))  # a named ablation's switches
    overrides |= dict(parse_override(item) for item in args.set)
    for key in ("dataset", "method", "variant", "seed"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    config = load_config(args.profile, **overrides)
    run = train(config, progress=not args.quiet, reuse_stale=args.reuse_stale)
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
    book = commands.add_parser("book", help="execute the chapters and build the book")
    from coop_utils import book as book_module

    book_module.add_arguments(book)
    args = parser.parse_args(argv)
    try:
        return _train(args) if args.command == "train" else book_module.run(args)
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


if __name__ == "__main__":
    sys.exit(main())
