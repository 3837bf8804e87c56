"""benchmarks/code_equivalence.py: the same code trains the same run; changed code does not."""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from code_equivalence import copy_checkout, runs_to_check, train  # noqa: E402


def test_every_method_and_variant_of_the_campaign_is_checked_in_the_campaign_order():
    checked = runs_to_check()
    assert checked[0] == ("tiny-imagenet", "cooperative", "")
    methods = {method for _, method, _ in checked}
    assert methods == {"cooperative", "independent", "byot", "branchynet"}
    variants = {variant for _, _, variant in checked}
    assert {"shared-bn", "no-sfsl", "one-teammate", "no-mutual", "no-leader"} <= variants
    assert checked.index(("tiny-imagenet", "cooperative", "shared-bn")) > 0  # after its base
    assert len(checked) == len(set(checked))


def test_a_change_that_alters_training_is_caught_and_the_same_code_agrees(tmp_path):
    same = copy_checkout(tmp_path / "same")
    changed = copy_checkout(tmp_path / "changed")
    systems = changed / "coop_utils" / "systems.py"
    source = systems.read_text()
    loss = "F.cross_entropy(net(images, s=factors[0]), labels)"
    assert loss in source
    systems.write_text(source.replace(loss, f"1.001 * {loss}"))  # a 0.1 % larger loss

    first = train(same, tmp_path / "run-1", "tiny-imagenet", "independent", "")
    again = train(same, tmp_path / "run-2", "tiny-imagenet", "independent", "")
    other = train(changed, tmp_path / "run-3", "tiny-imagenet", "independent", "")

    assert first == again  # fresh data, folders and process: bit for bit the same
    assert other["state"] != first["state"]
    assert other["code_digest"] != first["code_digest"]
    assert other["data_fingerprint"] == first["data_fingerprint"]
