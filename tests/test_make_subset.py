"""benchmarks/make_subset.py: a class subset of Tiny ImageNet that the loader reads."""

import sys
from pathlib import Path

import pytest
import torch

from coop_utils.datasets import GENERATED_MARKER, load_dataset
from coop_utils.generated import make_fake_tiny_imagenet

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from make_subset import main, make_subset  # noqa: E402


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated Tiny ImageNet of 6 classes: 5 training and 2 validation images each."""
    root = tmp_path_factory.mktemp("source")
    return make_fake_tiny_imagenet(root, images_per_class=5, val_per_class=2, num_classes=6)


def test_the_subset_loads_as_the_first_classes_of_the_source(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "subset" / "tiny-imagenet-200"
    assert make_subset(source, out, classes=4, train_per_class=3) == (12, 8)
    train = load_dataset("tiny-imagenet", "train", root=out.parent, download=False)
    test = load_dataset("tiny-imagenet", "test", root=out.parent, download=False)
    full_train = load_dataset("tiny-imagenet", "train", root=source.parent, download=False)
    full_test = load_dataset("tiny-imagenet", "test", root=source.parent, download=False)
    assert train.classes == full_train.classes[:4] and train.class_counts().tolist() == [3] * 4
    first_three = torch.cat([torch.arange(3) + 5 * label for label in range(4)])
    assert torch.equal(train.images, full_train.images[first_three])
    in_subset = full_test.labels < 4
    assert torch.equal(test.images, full_test.images[in_subset])
    assert torch.equal(test.labels, full_test.labels[in_subset])
    assert train.generated and (out / GENERATED_MARKER).is_file()  # still generated data


def test_the_subset_cuts_the_text_files_and_links_the_images(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "tiny-imagenet-200"
    make_subset(source, out, classes=2)
    wnids = (source / "wnids.txt").read_text().split()
    assert (out / "wnids.txt").read_text().split() == wnids[:2]
    assert (out / "words.txt").read_text() == (source / "words.txt").read_text()
    annotations = (out / "val" / "val_annotations.txt").read_text().splitlines()
    assert len(annotations) == 4 and {line.split("\t")[1] for line in annotations} == set(wnids[:2])
    boxes = (out / "train" / wnids[0] / f"{wnids[0]}_boxes.txt").read_text().splitlines()
    assert len(boxes) == 5 and not (out / "train" / wnids[2]).exists()
    image = Path("train", wnids[0], "images", f"{wnids[0]}_0.JPEG")
    assert (out / image).stat().st_ino == (source / image).stat().st_ino  # a hard link


def test_bad_requests_are_refused_in_one_line_before_any_work(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "tiny-imagenet-200"
    for arguments, message in [
        (["--classes", "7"], "--classes must be from 1 to 6"),
        (["--classes", "2", "--train-per-class", "0"], "--train-per-class must be at least 1"),
        (["--classes", "2", "--source", str(tmp_path / "nothing")], "missing"),
    ]:
        argv = ["--source", str(source), "--out", str(out), *arguments]
        assert main(argv) == 2
        error = capsys.readouterr().err
        assert message in error and error.count("\n") == 1
        assert not out.exists()
    out.mkdir()
    assert main(["--source", str(source), "--out", str(out), "--classes", "2"]) == 2
    assert "exists" in capsys.readouterr().err and list(out.iterdir()) == []
