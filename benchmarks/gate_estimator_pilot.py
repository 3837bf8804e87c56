"""Which gate estimator should train the sub-networks? A pilot of ``kept`` against ``all``.

Trains the cooperative method twice with the same seed, data, draws and schedule, once with
``gate_gradient: kept`` (only the kept blocks run) and once with ``all`` (every block runs,
exact straight-through gradient for every gate), then compares, from the two finished runs:

- validation top-1 at every distinct depth plan, per Teammate (never the test split);
- how far the gate logits moved from zero, and whether the learned plans leave the
  first-k blocks;
- training throughput (images/s from each run's log).

    python benchmarks/gate_estimator_pilot.py --set epochs=3 --set lr_schedule=linear \
        --record results/benchmarks/gate_estimator_pilot.json

Runs go through ``coop_utils.training.train``: a finished run is reused, an interrupted one
resumes, so the command can be stopped and started again.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from coop_utils.config import load_config, parse_override
from coop_utils.models import distinct_plans, first_blocks_mask
from coop_utils.runs import write_benchmark
from coop_utils.training import load_system, train

ESTIMATORS = ("kept", "all")


def compare(runs: dict) -> dict:
    """Per estimator: validation top-1 per plan and Teammate, gate statistics, images/s."""
    results = {}
    for estimator, run in runs.items():
        system = load_system(run)
        rows = {}
        for index, net in enumerate(system.teammates):
            for blocks, s in distinct_plans(net, run.config.scaling_factors).items():
                metrics = run.metrics[f"teammate{index}"][f"{s:.4g}"]
                rows.setdefault(f"{len(blocks)} blocks (s={s:g})", {})[f"teammate{index}"] = (
                    metrics["val_top1"]
                )
        learned = [
            sum(
                not net.inference_mask(s).equal(first_blocks_mask(net.stage_sizes, s))
                for s in run.config.scaling_factors
            )
            for net in system.teammates
        ]
        logits = [net.gate.logits.detach() for net in system.teammates]
        results[estimator] = {
            "val_top1_by_plan": rows,
            "gate_logit_max_abs": [float(v.abs().max()) for v in logits],
            "gate_logit_std": [float(v.std()) for v in logits],
            "factors_whose_plan_left_first_k": learned,
            "images_per_s": statistics.median(float(row["images_per_s"]) for row in run.log),
            "wall_time_s": run.wall_time_s,
            "code_digest": json.loads((Path(run.directory) / "provenance.json").read_text())[
                "code_digest"
            ],
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="preview")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--record", type=Path, help="write the comparison to this JSON file")
    args = parser.parse_args()
    overrides = dict(parse_override(item) for item in args.set)
    overrides.setdefault("results_root", "results/pilot")
    runs = {}
    for estimator in ESTIMATORS:
        config = load_config(
            args.profile,
            dataset="tiny-imagenet",
            method="cooperative",
            variant=f"gate-{estimator}",
            gate_gradient=estimator,
            **overrides,
        )
        runs[estimator] = train(config)
    results = compare(runs)
    plans = list(results["kept"]["val_top1_by_plan"])
    print(f"\n{'plan':<22}" + "".join(f"{e + ' t0':>10}{e + ' t1':>10}" for e in ESTIMATORS))
    for plan in plans:
        cells = "".join(
            f"{results[e]['val_top1_by_plan'][plan].get(t, float('nan')):>10.1f}"
            for e in ESTIMATORS
            for t in ("teammate0", "teammate1")
        )
        print(f"{plan:<22}{cells}")
    for estimator in ESTIMATORS:
        row = results[estimator]
        print(
            f"{estimator}: {row['images_per_s']:.0f} images/s, gate logits max |.| "
            f"{row['gate_logit_max_abs']}, factors whose plan left first-k "
            f"{row['factors_whose_plan_left_first_k']}"
        )
    speed = results["kept"]["images_per_s"] / results["all"]["images_per_s"]
    print(f"training throughput, kept over all: {speed:.2f}x")
    if args.record:
        record = {
            "overrides": overrides,
            "estimators": results,
            "kept_over_all_images_per_s": speed,
        }
        print(f"recorded: {write_benchmark(args.record, 'gate_estimator_pilot', record)}")


if __name__ == "__main__":
    main()
