"""Run validity by behaviour: every committed run stands while today's code trains it alike.

The behaviour digest (``coop_utils/behaviour.py``) trains each configuration for a few steps on
generated data in the real on-disk format and hashes what it made. What it must do:
- every committed summary's digest is today's code's (else one line per run, with the command
  that trains it again);
- a docstring, a comment, a renaming or a reordering that keeps the arithmetic leaves it as it
  was, although the byte-level code digest (the old rule) moves;
- a change to what training does moves it: a loss weight, the sampling of the scaling factors,
  the augmentation, the decoding of the images.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from coop_utils import datasets, loaders, losses, systems
from coop_utils.behaviour import behaviour_digest
from coop_utils.runs import (
    behaviour_digests,
    code_digest,
    config_from_dict,
    digest_key,
    retrain_command,
)

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results"
COOPERATIVE = RESULTS / "preview" / "tiny-imagenet" / "cooperative.json"


def committed_summaries() -> dict[str, dict]:
    """Every results summary in the repository (a JSON file with a config and metrics)."""
    found = {}
    for path in sorted(RESULTS.glob("**/*.json")):
        content = json.loads(path.read_text())
        if isinstance(content, dict) and {"config", "metrics"} <= content.keys():
            found[path.relative_to(REPO).as_posix()] = content
    return found


def test_every_committed_run_was_trained_by_code_that_behaves_as_today():
    summaries = committed_summaries()
    assert len(summaries) >= 33
    # Only the regime pilot's early runs predate the digest; they record how the preview
    # regime was chosen and are never read as results of the campaign.
    undigested = sorted(name for name, s in summaries.items() if not s.get("behaviour_digest"))
    assert all(name.startswith("results/pilot/") for name in undigested), undigested
    checked = {
        name: config_from_dict(s["config"])
        for name, s in summaries.items()
        if s.get("behaviour_digest")
    }
    today = behaviour_digests(checked.values(), cache=False)
    stale = [
        f"{name}: recorded {summaries[name]['behaviour_digest']}, today "
        f"{today[digest_key(config)]}; retrain: {retrain_command(config)}"
        for name, config in checked.items()
        if summaries[name]["behaviour_digest"] != today[digest_key(config)]
    ]
    assert not stale, (
        f"{len(stale)} committed runs would train otherwise with today's code:\n" + "\n".join(stale)
    )


def test_the_retrain_command_names_what_the_profile_does_not(tmp_path):
    summaries = committed_summaries()
    control = config_from_dict(
        summaries["results/compute-matched/preview/tiny-imagenet/independent-seed1.json"]["config"]
    )
    assert retrain_command(control) == (
        "python -m coop_utils train --profile preview --dataset tiny-imagenet --method "
        "independent --seed 1 --set epochs=18 --set results_root=results/compute-matched"
    )
    ablation = config_from_dict(
        summaries["results/preview/tiny-imagenet/cooperative-no-leader-seed2.json"]["config"]
    )
    assert retrain_command(ablation).endswith("--variant no-leader --seed 2")


@pytest.fixture(scope="module")
def cooperative():
    """The committed cooperative run's configuration, and a data cache shared by the digests
    of this module (the images are generated and decoded once)."""
    return config_from_dict(json.loads(COOPERATIVE.read_text())["config"])


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("behaviour-cache")


@pytest.fixture(scope="module")
def baseline(cooperative, shared_cache, tmp_path_factory):
    return behaviour_digest(cooperative, tmp_path_factory.mktemp("baseline"), shared_cache)


def test_the_digest_is_repeatable_in_one_process(cooperative, shared_cache, baseline, tmp_path):
    assert behaviour_digest(cooperative, tmp_path, shared_cache) == baseline


def test_a_scale_key_shares_the_digest_and_a_method_key_does_not(cooperative):
    assert digest_key(cooperative.replace(epochs=48, seed=2, variant="x")) == digest_key(
        cooperative
    )
    assert digest_key(cooperative.replace(temperature=3.0)) != digest_key(cooperative)


def _moved(cooperative, work, cache, baseline) -> bool:
    return behaviour_digest(cooperative, work, cache) != baseline


def test_a_loss_weight_moves_the_digest(cooperative, shared_cache, baseline, tmp_path, monkeypatch):
    def no_t_squared(student, teacher, temperature=4.0):
        log_student = torch.log_softmax(student / temperature, dim=-1)
        log_teacher = torch.log_softmax(teacher.detach() / temperature, dim=-1)
        return torch.nn.functional.kl_div(
            log_student, log_teacher, reduction="batchmean", log_target=True
        )

    monkeypatch.setattr(losses, "kd_loss", no_t_squared)  # the T^2 factor dropped
    assert _moved(cooperative, tmp_path, shared_cache, baseline)


def test_the_sampling_of_scaling_factors_moves_the_digest(
    cooperative, shared_cache, baseline, tmp_path, monkeypatch
):
    def deepest_first(self, generator):
        pool, count = sorted(self.config.sampled_factors, reverse=True), 2
        torch.randperm(len(pool), generator=generator)  # the same draws, another choice
        return [pool[:count] for _ in self.teammates]

    monkeypatch.setattr(systems.CooperativeSystem, "_draw_factors", deepest_first)
    assert _moved(cooperative, tmp_path, shared_cache, baseline)


def test_the_augmentation_moves_the_digest(
    cooperative, shared_cache, baseline, tmp_path, monkeypatch
):
    original, calls = loaders.crop_and_flip, []

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs).roll(1, dims=-1)  # shifted one pixel further

    monkeypatch.setattr(loaders, "crop_and_flip", counted)
    assert _moved(cooperative, tmp_path, shared_cache, baseline)
    assert calls, "the training batches go through crop_and_flip"


def test_the_image_decoding_moves_the_digest(cooperative, baseline, tmp_path, monkeypatch):
    original = datasets.decode_jpeg

    def mirrored(encoded, mode):  # every image decoded left-right mirrored
        return [image.flip(-1) for image in original(encoded, mode=mode)]

    monkeypatch.setattr(datasets, "decode_jpeg", mirrored)
    # A fresh cache: the images are decoded again, by the changed decoder.
    assert _moved(cooperative, tmp_path / "run", tmp_path / "cache", baseline)


def test_a_docstring_comment_renaming_and_reordering_keep_the_digest_the_old_rule_did_not(
    tmp_path,
):
    """Edited sources that keep the arithmetic: the committed digest still matches (so nothing
    needs recording), while the byte-level code digest, the old rule, calls the run stale."""
    copy = tmp_path / "checkout"
    shutil.copytree(
        REPO / "coop_utils", copy / "coop_utils", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copytree(REPO / "params", copy / "params")
    source = copy / "coop_utils" / "losses.py"
    text = source.read_text()
    edits = {
        # a docstring
        '"""``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, batch mean; teacher '
        'detached."""': '"""Hinton\'s distillation loss: ``T^2 * KL(teacher_T || student_T)``, '
        'averaged over the batch; the teacher is detached."""',
        # a renaming, a comment and a reordering of two independent lines
        "    log_student = F.log_softmax(student / temperature, dim=-1)\n"
        "    log_teacher = F.log_softmax(teacher.detach() / temperature, dim=-1)\n"
        '    kl = F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True)\n'
        "    return temperature**2 * kl\n": "    # the teacher first: it takes no gradient\n"
        "    teacher_log_p = F.log_softmax(teacher.detach() / temperature, dim=-1)\n"
        "    student_log_p = F.log_softmax(student / temperature, dim=-1)\n"
        "    divergence = F.kl_div(\n"
        '        student_log_p, teacher_log_p, reduction="batchmean", log_target=True\n'
        "    )\n"
        "    return temperature**2 * divergence\n",
    }
    for old, new in edits.items():
        assert old in text, old
        text = text.replace(old, new)
    source.write_text(text)
    assert code_digest(copy / "coop_utils")[0] != code_digest()[0]  # the old rule: stale

    env = {**os.environ, "PYTHONPATH": str(copy)}
    done = subprocess.run(
        [sys.executable, "-m", "coop_utils.behaviour", str(COOPERATIVE)],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    printed = done.stdout.split()[0]
    assert printed == json.loads(COOPERATIVE.read_text())["behaviour_digest"]
