"""The run store: atomic writes, the single-writer lock, logs and result summaries."""

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from coop_utils.__main__ import main
from coop_utils.config import load_config
from coop_utils.runs import (
    TRAINING_MODULES,
    CheckpointError,
    RunBusyError,
    append_log,
    atomic_write_json,
    code_digest,
    git_commit,
    hold_run,
    load_checkpoint,
    provenance,
    read_log,
    read_run_file,
    results_path,
    run_dir,
    save_checkpoint,
    truncate_log,
    write_benchmark,
    write_summary,
)


def test_run_dir_and_results_path(tmp_path):
    config = load_config("smoke", run_root=str(tmp_path / "runs"), results_root="res")
    assert run_dir(config) == tmp_path / "runs" / "cifar100" / "cooperative" / config.hash()
    assert str(results_path(config)) == "res/smoke/cifar100/cooperative.json"
    ablation = config.replace(variant="no-leader", use_leader=False)
    assert str(results_path(ablation)) == "res/smoke/cifar100/cooperative-no-leader.json"
    assert results_path(ablation.replace(seed=2)).name == "cooperative-no-leader-seed2.json"


def test_checkpoint_round_trip_with_weights_only(tmp_path):
    state = {"weights": torch.arange(4.0), "epoch": 3, "rng": torch.Generator().get_state()}
    save_checkpoint(tmp_path / "checkpoint.pt", state)
    loaded = load_checkpoint(tmp_path / "checkpoint.pt")
    assert loaded["epoch"] == 3 and torch.equal(loaded["weights"], state["weights"])
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temp file left


def _checkpoint_bytes(tmp_path) -> bytes:
    state = {"weights": torch.randn(256), "epoch": 3, "rng": torch.Generator().get_state()}
    save_checkpoint(tmp_path / "whole.pt", state)
    return (tmp_path / "whole.pt").read_bytes()


def _assert_unreadable_named(path, error: CheckpointError) -> None:
    message = str(error)
    assert str(path) in message and "cannot be read" in message and "\n" not in message
    assert f"mv {path} {path}.unreadable" in message
    assert path.exists()  # nothing deleted


@pytest.mark.parametrize("fraction", [0.001, 0.01, 0.25, 0.5, 0.9, 0.999])
def test_a_truncated_checkpoint_is_named_in_one_line(tmp_path, fraction):
    whole = _checkpoint_bytes(tmp_path)
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(whole[: max(1, int(len(whole) * fraction))])
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    _assert_unreadable_named(path, caught.value)


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"", r"\(the file is empty\)"), (bytes(range(256)) * 8, r"\(\w*Error: .+\)")],
)
def test_an_empty_or_garbage_checkpoint_is_named_in_one_line(tmp_path, content, reason):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=reason) as caught:
        load_checkpoint(path)
    _assert_unreadable_named(path, caught.value)


def test_train_reports_an_unreadable_checkpoint_in_one_line(tmp_path, capsys):
    config = load_config("smoke", run_root=str(tmp_path / "runs"), results_root=str(tmp_path))
    path = run_dir(config) / "checkpoint.pt"
    path.parent.mkdir(parents=True)
    truncated = _checkpoint_bytes(tmp_path)[:100]
    path.write_bytes(truncated)
    # made by this code from this data, so it is resumed, not set aside as stale
    atomic_write_json(path.parent / "provenance.json", provenance(config))
    argv = ["train", "--profile", "smoke", "--quiet", "--set", f"run_root={config.run_root}"]
    assert main([*argv, "--set", f"results_root={tmp_path}"]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: checkpoint") and "\n" not in error and str(path) in error
    assert path.read_bytes() == truncated


def test_a_run_file_that_is_not_json_is_named_in_one_line(tmp_path):
    path = tmp_path / "provenance.json"
    path.write_text('{"code_digest": ')
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))} is not JSON: ") as caught:
        read_run_file(tmp_path, "provenance.json")
    assert "\n" not in str(caught.value)
    assert read_run_file(tmp_path, "metrics.json") == {}  # absent


def test_failed_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "metrics.json"
    atomic_write_json(path, {"top1": 1.0})
    with pytest.raises(TypeError):
        atomic_write_json(path, {"top1": object()})  # not serialisable: fails mid-write
    assert json.loads(path.read_text()) == {"top1": 1.0}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_second_writer_is_refused(tmp_path):
    owner = re.escape(f"(pid {os.getpid()} on {platform.node()})")
    busy = pytest.raises(RunBusyError, match=f"being trained by another process {owner}")
    with hold_run(tmp_path / "run"), busy, hold_run(tmp_path / "run"):
        pass
    with hold_run(tmp_path / "run"):  # released: a later writer gets in
        pass


def test_a_writer_in_another_process_is_refused_and_keeps_its_owner_record(tmp_path):
    """The refused writer does not wait, and leaves the record of the owner for the next."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pathlib import Path; "
         "from coop_utils.runs import hold_run\n"
         "with hold_run(Path(sys.argv[1])):\n print('held', flush=True); sys.stdin.read()",
         str(tmp_path / "run")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline() == "held\n"
        for _ in range(2):
            start = time.monotonic()
            refused = pytest.raises(RunBusyError, match=re.escape(f"(pid {holder.pid} on "))
            with refused, hold_run(tmp_path / "run"):
                pass
            assert time.monotonic() - start < 5
    finally:
        holder.communicate("")
    with hold_run(tmp_path / "run"):  # the holder is gone: its lock went with it
        owner = (tmp_path / "run" / "lock").read_text()
    assert owner == f"pid {os.getpid()} on {platform.node()}\n"


def test_log_append_read_and_truncate(tmp_path):
    path = tmp_path / "log.csv"
    for epoch in (1, 2, 3):
        append_log(path, {"epoch": epoch, "loss": 1.0 / epoch})
    assert [row["epoch"] for row in read_log(path)] == ["1", "2", "3"]
    truncate_log(path, 2)
    assert [row["epoch"] for row in read_log(path)] == ["1", "2"]


def test_summary_never_overwrites_another_profile(tmp_path):
    config = load_config("smoke", results_root=str(tmp_path))
    path = write_summary(config, {"teammate0": {}}, 1.0, torch.device("cpu"))
    summary = json.loads(path.read_text())
    assert summary["config"]["profile"] == "smoke" and summary["config_hash"] == config.hash()
    assert {"device", "torch", "git_commit", "date", "wall_time_s"} <= set(summary)
    summary["config"]["profile"] = "preview"  # a file of another profile in this place
    path.write_text(json.dumps(summary))
    with pytest.raises(RuntimeError, match="another profile"):
        write_summary(config, {}, 1.0, torch.device("cpu"))
    assert json.loads(path.read_text())["config"]["profile"] == "preview"


@pytest.fixture
def package_copy(tmp_path) -> Path:
    """A copy of the coop_utils sources, outside any git checkout."""
    source = Path(__file__).resolve().parents[1] / "coop_utils"
    return Path(
        shutil.copytree(
            source, tmp_path / "coop_utils", ignore=shutil.ignore_patterns("__pycache__")
        )
    )


def test_code_digest_is_stable_and_follows_the_training_modules(package_copy):
    digest, dirty = code_digest(package_copy)
    assert len(digest) == 16 and int(digest, 16) >= 0 and dirty is False  # not a checkout
    assert code_digest(package_copy) == (digest, False)
    for other in ("book.py", "plots.py"):
        (package_copy / other).write_text("# changed\n")
    (package_copy / "notes.txt").write_text("not a module")
    assert code_digest(package_copy)[0] == digest
    models = package_copy / "models.py"
    models.write_text(models.read_text() + "\n# a comment\n")
    changed = code_digest(package_copy)[0]
    assert changed != digest
    models.rename(package_copy / "models_renamed.py")  # a module the list no longer names
    assert code_digest(package_copy)[0] not in (digest, changed)


def test_code_digest_reports_uncommitted_changes_to_the_training_modules(package_copy):
    def git(*args):
        identity = ["-c", "user.name=test", "-c", "user.email=test@example.com"]
        subprocess.run(["git", *identity, *args], cwd=package_copy, check=True, capture_output=True)

    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "sources")
    assert code_digest(package_copy)[1] is False
    (package_copy / "plots.py").write_text("# changed\n")
    assert code_digest(package_copy)[1] is False
    (package_copy / TRAINING_MODULES[0]).write_text("# changed\n")
    assert code_digest(package_copy)[1] is True


def test_git_commit_names_the_checked_out_commit():
    package = Path(__file__).resolve().parents[1] / "coop_utils"
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=package, capture_output=True, text=True)
    if head.returncode != 0:
        assert git_commit() == "unknown"
    else:
        assert len(git_commit()) >= 7 and head.stdout.startswith(git_commit())


def test_a_benchmark_record_names_the_device_it_ran_on(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    gpu = json.loads(write_benchmark(tmp_path / "gpu.json", "gpu", {}, device="cuda").read_text())
    cpu = json.loads(write_benchmark(tmp_path / "cpu.json", "cpu", {"x": 1}).read_text())
    assert gpu["device"] == "NVIDIA H100 80GB HBM3"
    assert "(CPU," in cpu["device"] and cpu["results"] == {"x": 1}
