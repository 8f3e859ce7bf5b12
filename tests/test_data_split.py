"""`yoloseg split`: stratified train/val split of a folder of labelled images, lists or moved folders."""

from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from yoloseg.cli import cli
from yoloseg.data.check import check_dataset
from yoloseg.data.split import split_dataset, stratified_split
from yoloseg.data.yaml import check_data_yaml, list_image_files

SQUARE = "0.1 0.1 0.4 0.1 0.4 0.4 0.1 0.4"


def _folder(tmp_path: Path, classes: list) -> Path:
    """images/ + labels/ with image i holding one instance of each class in classes[i]."""
    root = tmp_path / "set"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i, cs in enumerate(classes):
        cv2.imwrite(str(root / "images" / f"im{i:04d}.png"), np.full((16, 16, 3), i, np.uint8))
        if cs is not None:
            (root / "labels" / f"im{i:04d}.txt").write_text("".join(f"{c} {SQUARE}\n" for c in cs))
    return root


def test_stratified_rare_classes_in_both_splits():
    rng = np.random.default_rng(1)
    classes = [{0} for _ in range(80)] + [{0, 1} for _ in range(12)] + [{2}, {2}, {3}, {3}, {3}, {4}]
    classes += [set() for _ in range(6)] + [{int(c)} for c in rng.integers(5, 9, 40)]
    for seed in range(5):
        val = stratified_split(classes, 0.2, seed)
        assert abs(int(val.sum()) - round(0.2 * len(classes))) == 0
        for c in range(9):
            with_c = [i for i, cs in enumerate(classes) if c in cs]
            if len(with_c) >= 2:
                assert val[with_c].any() and (~val[with_c]).any(), (seed, c)
        n1 = sum(1 for i, cs in enumerate(classes) if 1 in cs and val[i])
        assert 1 <= n1 <= 4  # about 20% of 12
    assert np.array_equal(stratified_split(classes, 0.2, 3), stratified_split(classes, 0.2, 3))
    assert not np.array_equal(stratified_split(classes, 0.2, 3), stratified_split(classes, 0.2, 4))


def test_split_lists_and_data_yaml(tmp_path):
    root = _folder(tmp_path, [[0]] * 20 + [[1], [1]] + [[0, 2], [2]] + [None, []])
    (root / "labels" / "stray.txt").write_text(f"0 {SQUARE}\n")
    (root / "images" / "bad.png").write_bytes(b"junk")
    (root / "classes.txt").write_text("cat\ndog\nbird\n")
    r = CliRunner().invoke(cli, ["split", f"data={root / 'images'}", "val=0.25", "seed=0"])
    assert r.exit_code == 0, r.output
    for s in ("stray.txt: label file without an image", "bad.png: corrupt image", "im0024.png: no label file"):
        assert s in r.output, s
    cfg = check_data_yaml(root / "data.yaml")
    assert cfg["names"] == {0: "cat", 1: "dog", 2: "bird"}
    train = list_image_files(cfg["train"])
    val = list_image_files(cfg["val"])
    assert len(train) + len(val) == 26 and not set(train) & set(val)
    assert len(val) == round(0.25 * 26)
    assert str(root / "images" / "bad.png") not in train + val
    for c in (1, 2):  # each in two images: one per split
        def has(f):
            lab = Path(f.replace("/images/", "/labels/")).with_suffix(".txt")
            return lab.is_file() and any(ln.split()[0] == str(c) for ln in lab.read_text().splitlines())

        assert any(map(has, train)) and any(map(has, val)), c
    res = check_dataset(root / "data.yaml")
    assert res.ok and res.splits["val"].n_images == len(val)


def test_split_move(tmp_path):
    root = _folder(tmp_path, [[0]] * 8 + [[1], [1]])
    res = split_dataset(root / "images", val=0.2, seed=1, move=True, verbose=False)
    assert sorted(p.name for p in (root / "images").iterdir()) == ["train", "val"]
    n_val = len(list((root / "images" / "val").glob("*.png")))
    assert n_val == 2 == len(list((root / "labels" / "val").glob("*.txt"))) == len(res.val)
    assert len(list((root / "labels" / "train").glob("*.txt"))) == 8
    check = check_dataset(root / "data.yaml")
    assert check.ok and check.problems == []
    assert set(check.splits["val"].instances) == {0, 1} and set(check.splits["train"].instances) == {0, 1}


def test_split_bad_input(tmp_path):
    r = CliRunner().invoke(cli, ["split", f"data={tmp_path / 'nope'}"])
    assert r.exit_code == 1 and "is not a folder" in r.output
    root = _folder(tmp_path, [[0], [0], [1]])
    for bad in ("val=1.5", "val=0"):
        r = CliRunner().invoke(cli, ["split", f"data={root / 'images'}", bad])
        assert r.exit_code == 1 and "val must be a fraction" in r.output, bad
    (root / "data.yaml").write_text("names: [a\n")
    r = CliRunner().invoke(cli, ["split", f"data={root / 'images'}"])
    assert r.exit_code == 1 and "line 2" in r.output and "Traceback" not in r.output
    (root / "data.yaml").write_text("names: [a]\n")
    r = CliRunner().invoke(cli, ["split", f"data={root / 'images'}"])
    assert r.exit_code == 0 and "class id 1 is not among the 1 names" in r.output
    (root / "images").rename(root / "pics")
    with pytest.raises(ValueError, match="folder named 'images'"):
        split_dataset(root / "pics", move=True, verbose=False)
    assert len(list((root / "pics").iterdir())) == 3  # nothing moved
