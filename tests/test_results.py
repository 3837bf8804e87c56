"""The one reader of ``results/``: the committed results as one tidy frame, summaries that are not
summaries refused by name, and the queries the verdict and the book share."""

import json

import pytest
import torch
from test_verdict import base, flops, summaries, timed_campaign

from coop_utils import book, chapters, results
from coop_utils.config import campaign, load_config
from coop_utils.runs import digest_key, results_path

COMMITTED = book.REPO_ROOT / "results"


@pytest.fixture(scope="module")
def committed():
    return results.load(COMMITTED)


def test_the_committed_results_are_one_row_per_summary_network_and_depth(committed):
    frame = committed.frame
    assert list(frame.columns) == list(results.COLUMNS)
    files = results.summaries(frame)
    campaign_files = results.campaign_rows(frame, "preview", "tiny-imagenet")["path"].unique()
    assert len(campaign_files) == len(campaign("preview")) == 30
    by_root = files.groupby("root")["path"].nunique()
    assert by_root["preview"] == 30 and by_root["compute-matched"] == 3 and by_root["pilot"] >= 4
    assert len(files) == by_root.sum()
    # the campaigns' folders: the converged campaign's fills up seed by seed
    assert {"preview", "compute-matched", "pilot"} <= set(by_root.index)
    assert set(by_root.index) <= {"preview", "compute-matched", "pilot", "converged"}
    assert by_root.get("converged", 0) <= len(results.planned_configs("preview", "converged"))
    assert not frame.duplicated(["path", "network", "s"]).any()
    # every network of every summary at every scaling factor it records
    cooperative = frame[frame["path"] == "preview/tiny-imagenet/cooperative.json"]
    assert set(cooperative["network"]) == {"teammate0", "teammate1", "leader", "teammate_mean"}
    assert len(cooperative) == 3 * 9 + 1  # the Leader runs at full depth only
    recorded = json.loads((COMMITTED / "preview/tiny-imagenet/cooperative.json").read_text())
    row = cooperative.query("network == 'teammate0' and s == 0.2").iloc[0]
    assert row["top1"] == recorded["metrics"]["teammate0"]["0.2"]["top1"]
    assert row["active_blocks"] == 3 and row["depth"] == pytest.approx(1 / 3)
    assert row["wall_time_s"] == recorded["wall_time_s"]
    assert row["behaviour_digest"] == recorded["behaviour_digest"]
    assert row["run"] == row["method"] == "cooperative" and row["variant"] == ""
    assert row["seed"] == 0 and row["epochs"] == 6 and row["device"] == recorded["device"]
    assert row["test_images"] == 50 * 50  # 50 classes, 50 test images each
    assert row["training_flops"] == recorded["training_flops"]
    assert frame["training_flops"].notna().all()  # every committed summary counts its compute


def test_seed_files_are_seeds_of_one_run(committed):
    frame = committed.frame
    control = frame[frame["root"] == "compute-matched"]
    assert set(control["run"]) == {"independent"} and set(control["seed"]) == {0, 1, 2}
    assert set(control["epochs"]) == {18} and set(control["profile"]) == {"preview"}
    seeds = results.campaign_rows(frame, "preview").groupby("run")["seed"].nunique()
    assert seeds["cooperative"] == 3 and seeds["cooperative-first-gating"] == 1
    assert "cooperative-seed1" not in seeds


def test_logs_benchmarks_weights_and_samples_are_located(committed):
    log = committed.logs["preview/tiny-imagenet/cooperative.json"]
    assert [row["epoch"] for row in log] == [str(epoch) for epoch in range(1, 7)]
    assert {"depth_cost", "train_step"} <= set(committed.benchmarks)
    assert committed.weights("preview", "tiny-imagenet", "cooperative", "teammate0").is_file()
    assert committed.samples("preview", "tiny-imagenet").is_file()


def test_no_results_record_nothing(tmp_path):
    found = results.load(tmp_path / "absent")
    assert found.frame.empty and list(found.frame.columns) == list(results.COLUMNS)
    assert found.logs == {} and found.benchmarks == {}


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"config": {}}', "no 'metrics' object"),
        ('{"config": {}, "metrics": {"teammate0": {"deep": {"top1": 1}}}}', "not a scaling"),
        ('{"config": {}, "metrics": {"teammate0": {"1": {"flops": 1}}}}', "s=1 has no top1"),
    ],
)
def test_a_file_that_is_not_a_summary_is_named_in_one_line(tmp_path, content, why):
    path = tmp_path / "preview" / "cifar100" / "cooperative.json"
    path.parent.mkdir(parents=True)
    path.write_text(content)
    with pytest.raises(results.SummaryError) as error:
        results.load(tmp_path)
    message = str(error.value)
    assert message.startswith(f"{path}: not a result summary: ") and why in message
    assert "\n" not in message


def test_a_benchmark_record_that_is_not_json_is_named(tmp_path):
    path = tmp_path / "benchmarks" / "train_step.json"
    path.parent.mkdir()
    path.write_text("{cut short")
    with pytest.raises(results.SummaryError, match=f"^{path}: not a benchmark record: not JSON"):
        results.load(tmp_path)


def test_a_seed_counts_once():
    found = summaries(seeds=2)
    found["cooperative-seed7"] = found["cooperative-seed1"]  # config seed 1 under another name
    with pytest.raises(ValueError, match="both seed 1 of 'cooperative'"):
        results.frame_of(found)


def test_summaries_in_memory_are_framed_like_files(tmp_path):
    found = summaries(seeds=2)
    for name, summary in found.items():
        path = tmp_path / "preview" / "cifar100" / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(summary))
    read = results.load(tmp_path).frame
    framed = results.frame_of(found)
    order = ["path", "network", "s"]
    read, framed = (f.sort_values(order, ignore_index=True) for f in (read, framed))
    assert read.equals(framed)
    cooperative = framed[framed["run"] == "cooperative"]
    assert set(cooperative["file"]) == {"cooperative", "cooperative-seed1"}
    assert set(cooperative["seed"]) == {0, 1} and "cooperative-seed1" not in set(framed["run"])


def test_the_campaign_table_gives_seed_ranges_and_counts_training_once():
    runs = summaries(seeds=3, shift=lambda name, seed: seed * (name == "cooperative"))
    timed_campaign(runs)
    table = results.campaign_table(results.frame_of(runs))
    full = base(flops(9))
    assert table.loc["cooperative", "seeds"] == 3
    assert table.loc["cooperative", "top-1 at full depth (%)"] == pytest.approx(full + 1, abs=0.05)
    assert table.loc["cooperative", "seed range (pts)"] == 2.0
    assert table.loc["independent", "seed range (pts)"] == 0.0
    assert table.loc["cooperative", "training (h)"] == 1.5
    assert table.loc["cooperative-shared-bn", "training (h)"] == 0.0  # counted once, above
    assert table.loc["byot", "training (h)"] == 0.3
    assert table.loc["cooperative", "per seed (h)"] == 0.5
    assert table.loc["cooperative-shared-bn", "per seed (h)"] == 0.0


def test_campaign_state_reads_each_planned_runs_summary(tmp_path, monkeypatch):
    """Each campaign run's summary: recorded by this config and behaviour, by code that trains
    it otherwise, with another config, or not at all; the book counts a summary of the config
    by any code."""
    planned = results.campaign_state("preview", tmp_path)
    configs = [config for config, _ in planned]
    root = str(tmp_path)
    assert configs == [load_config("preview", results_root=root, **o) for o in campaign("preview")]
    assert {state for _, state in planned} == {"to run"}
    today = {digest_key(config): f"today-{digest_key(config)}" for config in configs}
    monkeypatch.setattr(results, "behaviour_digests", lambda planned: today)
    digest = today[digest_key(configs[0])]

    def write(config, **recorded):
        summary = {"config": config.to_dict(), "metrics": {"teammate0": {"1": {"top1": 1.0}}}}
        results_path(config).parent.mkdir(parents=True, exist_ok=True)
        results_path(config).write_text(json.dumps(summary | recorded))

    write(configs[0], config_hash=configs[0].hash(), behaviour_digest=digest)
    write(configs[1], config_hash=configs[1].hash(), behaviour_digest="other")
    write(configs[2], config_hash=configs[1].hash(), behaviour_digest=digest)  # another config
    write(configs[3], config_hash=configs[3].hash())  # no behaviour digest recorded
    states = [state for _, state in results.campaign_state("preview", tmp_path, behaviour=True)]
    otherwise = "recorded by code that trains it otherwise"
    assert states[:5] == [
        "recorded",
        f"{otherwise} (other -> {today[digest_key(configs[1])]})",
        "recorded with another config",
        f"{otherwise} (no digest -> {today[digest_key(configs[3])]})",
        "to run",
    ]
    assert set(states[4:]) == {"to run"}
    without = [state for _, state in results.campaign_state("preview", tmp_path)]
    assert without[:4] == ["recorded", "recorded", "recorded with another config", "recorded"]
    line, missing = chapters.campaign_progress(results.load(tmp_path))
    assert line == f"3 of {len(configs)} preview campaign runs recorded so far"
    assert missing == [results_path(config).stem for config in configs[2:3] + configs[4:]]
    for config in configs:  # the whole campaign, by whatever code: no "so far" any more
        write(config, config_hash=config.hash())
    line, missing = chapters.campaign_progress(results.load(tmp_path))
    assert (line, missing) == (f"all {len(configs)} preview campaign runs recorded", [])
    assert results.campaign_state("smoke") == []  # no campaign list


def test_one_cpu_thread_reads_as_one_thread_in_old_summaries_and_new():
    from coop_utils.runs import device_name

    found = summaries(seeds=1)
    for summary in found.values():
        summary["device"] = "AMD EPYC (CPU, 1 threads)"  # as summaries said before
    assert set(results.frame_of(found)["device"]) == {"AMD EPYC (CPU, 1 thread)"}
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert device_name(torch.device("cpu")).endswith("(CPU, 1 thread)")
        torch.set_num_threads(2)
        assert device_name(torch.device("cpu")).endswith("(CPU, 2 threads)")
    finally:
        torch.set_num_threads(threads)
