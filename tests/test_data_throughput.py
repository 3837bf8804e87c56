"""benchmarks/data_throughput.py: how it times the drawing of batches."""

import sys
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
import data_throughput  # noqa: E402


def test_the_batches_are_timed_after_the_first_on_the_thread_count_set() -> None:
    threads, drawn = torch.get_num_threads(), []

    def batches():
        while True:
            drawn.append(torch.get_num_threads())
            time.sleep(0.5 if len(drawn) == 1 else 0.01)  # the first: the workers start
            yield torch.zeros(1)

    assert 0.1 <= data_throughput.seconds_for_batches(batches(), 10) < 0.4
    assert len(drawn) >= 1 + 10 and set(drawn) == {threads}
