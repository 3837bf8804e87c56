"""Does a change to the training code leave every trained run exactly as it was?

Every recorded run carries the code digest of the training modules it ran
(``coop_utils.runs.code_digest``). A refactor of those modules changes the digest, and
with it every recorded run would count as made by other code. This check decides whether
it is: it trains each (method, variant) of the preview campaign twice on a small generated
dataset in the campaign's regime (ResNet-20, Nesterov SGD, linear decay, per-epoch
validation), once with the training modules of a base git revision and once with the ones
in this checkout, each in a fresh process with its own data, run and cache folders. The two
are the same code only if every run agrees bit for bit: the trained state (every parameter
and buffer, per-depth batch-norm statistics too), every accuracy and FLOPs count, the
per-epoch log (bar its timings), the data fingerprint and the config hash.

With ``--record``, a passing check is written to ``results/code-equivalence/`` and the
verdict, the campaign list and run reuse then take the two digests as one code
(``coop_utils.runs.same_code``). A failing check records nothing and exits 1.

    python benchmarks/code_equivalence.py --base 9c5e343             # check only
    python benchmarks/code_equivalence.py --base 9c5e343 --record    # check, then record

It takes about 10 s per run and code version on 2 CPU cores (13 runs: about 5 minutes).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

import torch

from coop_utils.config import campaign
from coop_utils.runs import EQUIVALENCE_DIR, TRAINING_MODULES, code_digest, write_benchmark

ROOT = Path(__file__).resolve().parent.parent
#: the campaign's regime (params/preview.yaml) on data small enough to train in seconds
REGIME = (
    "data=generated",
    "generated_train_per_class=16",
    "generated_test_per_class=4",
    "num_classes=10",
    "epochs=2",
    "batch_size=16",
    "bn_batches=2",
    "eval_every=1",
)
#: keys of a summary's metrics and of the per-epoch log that measure time, not computation
TIMINGS = ("latency_ms", "time_s", "wall_time_s", "seconds", "images_per_s")


def runs_to_check() -> list[tuple[str, str, str]]:
    """``(dataset, method, variant)`` of every distinct run of the preview campaign, in the
    campaign's order (so ``shared-bn`` finds its cooperative run finished, as it did there),
    then the cooperative run on CIFAR-100 for the other on-disk format."""
    seen: list[tuple[str, str, str]] = []
    for run in campaign("preview"):
        key = ("tiny-imagenet", run["method"], run.get("variant", ""))
        if key not in seen:
            seen.append(key)
    return [*seen, ("cifar100", "cooperative", "")]


def extract(revision: str, folder: Path) -> None:
    """The package and the profiles of git ``revision``, into ``folder``."""
    archive = subprocess.run(
        ["git", "archive", revision, "coop_utils", "params"],
        cwd=ROOT,
        capture_output=True,
        check=False,
    )
    if archive.returncode:
        sys.exit(f"error: git cannot archive {revision!r}: {archive.stderr.decode().strip()}")
    with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
        tar.extractall(folder, filter="data")


def copy_checkout(folder: Path) -> Path:
    """This checkout's package and profiles, into ``folder``."""
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "coop_utils", folder / "coop_utils", ignore=ignore)
    shutil.copytree(ROOT / "params", folder / "params")
    return folder


def train(code: Path, work: Path, dataset: str, method: str, variant: str) -> dict:
    """Train one run with the package in ``code``; what it computed, timings left out."""
    name = method + (f"-{variant}" if variant else "")
    command = [sys.executable, "-m", "coop_utils", "train", "--profile", "preview"]
    command += ["--dataset", dataset, "--method", method, "--quiet"]
    command += ["--variant", variant] if variant else []
    for setting in (*REGIME, f"run_root={work / 'runs'}", f"results_root={work / 'results'}"):
        command += ["--set", setting]
    env = {**os.environ, "COOP_CACHE_DIR": str(work / "cache"), "PYTHONPATH": str(code)}
    done = subprocess.run(command, cwd=code, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"error: {name} failed with the code in {code}:\n{done.stderr[-2000:]}")
    summary = json.loads((work / "results" / "preview" / dataset / f"{name}.json").read_text())
    run = work / "runs" / dataset / method / summary["config_hash"]
    weights = json.loads((run / "metrics.json").read_text()).get("weights_from", run)  # shared-bn
    state = torch.load(Path(weights, "checkpoint.pt"), map_location="cpu", weights_only=True)
    state = state["system"]
    with open(run / "log.csv", newline="") as handle:
        log = [{k: v for k, v in row.items() if k not in TIMINGS} for row in csv.DictReader(handle)]
    metrics = {
        network: {s: {k: v for k, v in row.items() if k not in TIMINGS} for s, row in rows.items()}
        for network, rows in summary["metrics"].items()
    }
    return {
        "state": state_digest(state),
        "metrics": metrics,
        "log": log,
        "data_fingerprint": summary["data_fingerprint"],
        "config_hash": summary["config_hash"],
        "code_digest": summary["code_digest"],
    }


def state_digest(state: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for key, tensor in sorted(state.items()):
        digest.update(key.encode())
        digest.update(tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the git revision to compare against")
    parser.add_argument("--record", action="store_true", help=f"record a pass in {EQUIVALENCE_DIR}")
    args = parser.parse_args()
    if args.record and code_digest()[1]:
        sys.exit("error: commit the training modules first: a record names the commit it checked")
    with tempfile.TemporaryDirectory(prefix="code-equivalence-") as tmp:
        base, new = Path(tmp, "base-code"), copy_checkout(Path(tmp, "new-code"))
        extract(args.base, base)
        checked, identical, digests = {}, True, set()
        for dataset, method, variant in runs_to_check():
            name = f"{dataset}/{method}" + (f"-{variant}" if variant else "")
            a = train(base, Path(tmp, "base"), dataset, method, variant)
            b = train(new, Path(tmp, "new"), dataset, method, variant)
            differ = [k for k in a if k != "code_digest" and a[k] != b[k]]
            digests.add((a["code_digest"], b["code_digest"]))
            identical &= not differ
            checked[name] = {"state": a["state"], "identical": not differ, "differ": differ}
            print(f"{name:40} state {a['state']} {b['state']}  " + (", ".join(differ) or "same"))
    if len(digests) != 1:
        sys.exit(f"error: the runs of one side report different code digests: {digests}")
    ((base_digest, new_digest),) = digests
    print(f"code digests: {args.base} {base_digest}, this checkout {new_digest}")
    print("identical: every run" if identical else "NOT identical: see the rows above")
    if identical and args.record:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", args.base], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        path = EQUIVALENCE_DIR / f"{base_digest}-{new_digest}.json"
        results = {
            "base": {"revision": commit, "digest": base_digest},
            "new": {"digest": new_digest},
            "modules": list(TRAINING_MODULES),
            "regime": ["profile=preview", *REGIME],
            "identical": identical,
            "runs": checked,
        }
        print(f"recorded: {write_benchmark(path, 'code_equivalence', results)}")
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
