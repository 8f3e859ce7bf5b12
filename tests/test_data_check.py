"""`yoloseg check`: the per-split report, every planted defect found once, fixes, plots, exit codes.

Oracle: ../shared/data/coco_permissive_seg is clean (its SOURCE.md gives the image, instance and class counts
per split); a copy with one defect of each kind planted must report exactly those, each once, in the file
where it was planted, and nothing else.
"""

import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from yoloseg.cli import cli
from yoloseg.data.check import FIXES, check_dataset, format_report

SHARED = Path(os.environ.get("YOLOSEG_SHARED", Path(__file__).resolve().parents[2] / "shared"))
COCO = SHARED / "data" / "coco_permissive_seg"
needs_coco = pytest.mark.skipif(not (COCO / "data.yaml").is_file(), reason="coco_permissive_seg not available")


@needs_coco
def test_clean_set_report():
    res = check_dataset(COCO / "data.yaml")
    assert res.ok and res.problems == []
    tr, va = res.splits["train"], res.splits["val"]
    assert (tr.n_images, tr.n_usable, tr.n_instances, len(tr.instances), tr.n_empty) == (54, 54, 456, 62, 0)
    assert (va.n_images, va.n_usable, va.n_instances, len(va.instances), va.n_empty) == (20, 20, 127, 39, 0)
    text = format_report(res)
    assert "train: 54 images (54 usable), 456 instances in 62 classes" in text and "person 76" in text


def _copy_set(tmp_path: Path) -> Path:
    root = tmp_path / "set"
    shutil.copytree(COCO, root, ignore=shutil.ignore_patterns("*.cache", "annotations", "ATTRIBUTION.tsv"))
    return root


def _append(path: Path, line: str) -> None:
    with open(path, "a") as f:
        f.write(line + "\n")


def _plant(root: Path) -> dict:
    """One defect of each kind; returns {(file, kind)} expected, each exactly once."""
    lab, img = root / "labels" / "train", root / "images" / "train"
    stems = sorted(p.stem for p in img.glob("*.jpg"))
    s = iter(stems)
    want = {}

    def label(kind, line):
        f = lab / f"{next(s)}.txt"
        _append(f, line)
        want[(str(f), kind)] = 1

    label("degenerate", "0 0.1 0.1 0.2 0.2")  # 2 points
    label("degenerate", "0 0.1 0.1 0.2 0.2 0.3 0.3")  # collinear: zero area
    label("degenerate", "0 0.1 0.1 0.2 0.2 0.3")  # odd coordinate count
    label("clipped", "1 -0.005 0.1 0.5 0.1 0.5 0.5")  # slightly outside: clipped
    label("outside", "1 10 10 200 10 200 300")  # pixel coordinates
    label("class", "99 0.1 0.1 0.5 0.1 0.5 0.5")  # unknown class id
    label("malformed", "1 0.1 abc 0.5 0.1 0.5 0.5")
    f = lab / f"{next(s)}.txt"  # a repeated line
    first = f.read_text().splitlines()[0]
    _append(f, first)
    want[(str(f), "duplicate")] = 1
    stem = next(s)  # an image without a label file
    (lab / f"{stem}.txt").unlink()
    want[(str(img / f"{stem}.jpg"), "no_label")] = 1
    stem = next(s)  # a copy of an image under another name (with its label)
    shutil.copyfile(img / f"{stem}.jpg", img / "copy_of_image.jpg")
    shutil.copyfile(lab / f"{stem}.txt", lab / "copy_of_image.txt")
    want[(str(img / "copy_of_image.jpg"), "duplicate_image")] = 1
    vimg = root / "images" / "val"  # the same image in train and val
    shutil.copyfile(img / f"{stem}.jpg", vimg / "from_train.jpg")
    shutil.copyfile(lab / f"{stem}.txt", root / "labels" / "val" / "from_train.txt")
    want[(str(vimg / "from_train.jpg"), "duplicate_image")] = 1
    (img / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" * 10)  # corrupt image
    want[(str(img / "broken.jpg"), "image")] = 1
    (lab / "orphan.txt").write_text("0 0.1 0.1 0.5 0.1 0.5 0.5\n")  # label file without an image
    want[(str(lab / "orphan.txt"), "orphan_label")] = 1
    (lab / f"{next(s)}.txt").write_text("")  # an empty label file: counted, not a problem
    return want


@needs_coco
def test_planted_defects_each_reported_once(tmp_path):
    root = _copy_set(tmp_path)
    want = _plant(root)
    res = check_dataset(root / "data.yaml")
    got = {}
    for p in res.problems:
        got[(p.file, p.kind)] = got.get((p.file, p.kind), 0) + 1
    assert got == want
    tr = res.splits["train"]
    assert res.ok  # problems, but both splits usable
    assert tr.n_images == 56 and tr.n_usable == 55 and tr.n_duplicate_images == 1
    assert tr.n_empty == 2  # the emptied file and the image without label file
    assert res.splits["val"].n_duplicate_images == 1 and "(in train)" in res.splits["val"].problems[0].message
    # the CLI lists every problem with its fix and exits 0
    r = CliRunner().invoke(cli, ["check", f"data={root / 'data.yaml'}"])
    assert r.exit_code == 0, r.output
    for (f, kind) in want:
        assert f in r.output
        assert FIXES[kind] in r.output
    assert "Traceback" not in r.output


@needs_coco
def test_fix_rewrites_fixable_files_with_backup(tmp_path):
    root = _copy_set(tmp_path)
    _plant(root)
    before = {p: p.read_bytes() for p in (root / "labels" / "train").glob("*.txt")}
    res = check_dataset(root / "data.yaml", fix=True)
    fixed = sorted(Path(f) for f in res.splits["train"].fixed)
    assert len(fixed) == 5  # 3 degenerate, 1 clipped, 1 repeated line; class/outside/malformed are not fixable
    for f in fixed:
        assert Path(f"{f}.bak").read_bytes() == before[f]
    unchanged = [p for p in before if p not in fixed]
    assert all(p.read_bytes() == before[p] for p in unchanged)
    again = check_dataset(root / "data.yaml")
    kinds = {p.kind for p in again.problems}
    assert not kinds & {"degenerate", "clipped", "duplicate"}
    assert {"class", "outside", "malformed"} <= kinds  # kept for the user to decide
    clipped = [f for f in fixed if "-0.005" in before[f].decode()][0]
    last = clipped.read_text().splitlines()[-1].split()
    assert last[0] == "1" and float(last[1]) == 0.0


def _tiny_set(tmp_path: Path, train_lines: dict, val_lines: dict | None = None) -> Path:
    root = tmp_path / "tiny"
    for split, lines in (("train", train_lines), ("val", val_lines if val_lines is not None else train_lines)):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for stem, text in lines.items():
            cv2.imwrite(str(root / "images" / split / f"{stem}.png"), np.full((40, 60, 3), 255, np.uint8))
            (root / "labels" / split / f"{stem}.txt").write_text(text)
    (root / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\nnames: [a, b]\n")
    return root


def test_unusable_split_exits_1(tmp_path):
    root = _tiny_set(tmp_path, {"x": "0 0.1 0.1 0.5 0.1 0.5 0.5\n"}, {"y": "", "z": "5 0.1 0.1 0.5 0.1 0.5 0.5\n"})
    r = CliRunner().invoke(cli, ["check", f"data={root / 'data.yaml'}"])
    assert r.exit_code == 1
    assert "UNUSABLE" in r.output and "val" in r.output and "Traceback" not in r.output
    res = check_dataset(root / "data.yaml")
    assert res.splits["train"].unusable is None and "no usable instance" in res.splits["val"].unusable


def test_bad_yaml_names_the_position(tmp_path):
    y = tmp_path / "data.yaml"
    y.write_text("path: .\ntrain: images\n  val: [oops\n")
    r = CliRunner().invoke(cli, ["check", f"data={y}"])
    assert r.exit_code == 1 and "line 3" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(cli, ["check", f"data={y}", "plot=true"])
    assert r.exit_code == 2 and "did you mean 'plots'" in r.output


def test_plots_overlay_and_label_stats(tmp_path):
    # one square of class 1 in the right half of a white image
    root = _tiny_set(tmp_path, {"x": "1 0.6 0.2 0.9 0.2 0.9 0.8 0.6 0.8\n"})
    res = check_dataset(root / "data.yaml", plots=True, save_dir=tmp_path / "run")
    files = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert files == ["labels_train.jpg", "labels_val.jpg", "overlays_train.jpg", "overlays_val.jpg"]
    ov = cv2.imread(str(tmp_path / "run" / "overlays_train.jpg"))
    # the 60x40 image fills one 480-px tile: 8x scale; inside the square tinted, left half white
    inside, outside = ov[int(0.5 * 320), int(0.75 * 480)], ov[int(0.5 * 320), int(0.2 * 480)]
    assert outside.min() > 235 and inside.min() < 200
    st = cv2.imread(str(tmp_path / "run" / "labels_train.jpg"))
    assert st.shape == (1120, 1600, 3) and (st < 128).any()
    assert res.save_dir == str(tmp_path / "run")
