"""Data YAML resolution: folders, .txt lists, lists of both, relative paths, names, downloads."""

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from yoloseg.data.yaml import check_data_yaml, img2label_paths, list_image_files


def _img(path: Path, size=(32, 48)):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((*size, 3), 127, np.uint8))


def _write_yaml(path: Path, content: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(content))
    return path


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "ds"
    for split, n in (("train", 3), ("val", 2)):
        for i in range(n):
            _img(root / "images" / split / f"{split}{i}.jpg")
    return root


def test_folders_relative_path_resolves_against_yaml_folder(tree, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path.parent)  # cwd must not matter
    y = _write_yaml(tree / "cfg" / "data.yaml", {"path": "..", "train": "images/train", "val": "images/val",
                                                  "names": ["a", "b"]})
    d = check_data_yaml(y)
    assert d["path"] == str(tree.resolve())
    assert d["train"] == str((tree / "images" / "train").resolve())
    assert d["val"] == str((tree / "images" / "val").resolve())
    assert d["names"] == {0: "a", 1: "b"} and d["nc"] == 2
    assert d["test"] is None
    assert len(list_image_files(d["train"])) == 3


def test_missing_path_key_means_yaml_folder(tree):
    y = _write_yaml(tree / "data.yaml", {"train": "images/train", "val": "images/val", "names": {0: "x"}})
    d = check_data_yaml(str(y))
    assert d["path"] == str(tree.resolve())


def test_txt_lists_and_lists_of_sources(tree):
    (tree / "train.txt").write_text("./images/train/train0.jpg\nimages/train/train1.jpg\n\n")
    (tree / "extra").mkdir()
    (tree / "extra" / "more.txt").write_text(f"{tree / 'images' / 'val' / 'val0.jpg'}\n../images/train/train2.jpg\n")
    y = _write_yaml(tree / "data.yaml", {"path": str(tree), "train": ["train.txt", "extra/more.txt", "images/val"],
                                         "val": "images/val/val1.jpg", "names": {0: "x", 1: "y"}, "nc": 2})
    d = check_data_yaml(y)
    files = list_image_files(d["train"])
    names = sorted(Path(f).name for f in files)
    # relative lines of a list resolve against the list's folder; duplicates collapse
    assert names == ["train0.jpg", "train1.jpg", "train2.jpg", "val0.jpg", "val1.jpg"]
    assert list_image_files(d["val"]) == [str((tree / "images" / "val" / "val1.jpg").resolve())]


def test_names_validation(tree):
    base = {"path": str(tree), "train": "images/train", "val": "images/val"}
    with pytest.raises(ValueError, match="nc=3 but 2 names"):
        check_data_yaml(_write_yaml(tree / "a.yaml", {**base, "names": ["a", "b"], "nc": 3}))
    with pytest.raises(ValueError, match="0..1"):
        check_data_yaml(_write_yaml(tree / "b.yaml", {**base, "names": {0: "a", 2: "b"}}))
    d = check_data_yaml(_write_yaml(tree / "c.yaml", {**base, "nc": 2}))
    assert d["names"] == {0: "class0", 1: "class1"}


def test_missing_split_and_missing_file_errors(tree, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        check_data_yaml(tmp_path / "nope.yaml")
    y = _write_yaml(tree / "d.yaml", {"path": str(tree), "train": "images/none", "val": "images/val", "names": ["a"]})
    with pytest.raises(FileNotFoundError, match="no 'download' key"):
        check_data_yaml(y)
    with pytest.raises(ValueError, match="missing required key 'val'"):
        check_data_yaml(_write_yaml(tree / "e.yaml", {"train": "images/train", "names": ["a"]}))


def test_download_offline_error_names_yaml_and_url(tree, monkeypatch):
    url = "https://example.invalid/some-set.zip"
    y = _write_yaml(tree / "dl.yaml", {"path": "../gone", "train": "images/train", "val": "images/val",
                                       "names": ["a"], "download": url})
    monkeypatch.setenv("YOLOSEG_OFFLINE", "1")
    with pytest.raises(FileNotFoundError) as e:
        check_data_yaml(y)
    assert str(y) in str(e.value) and url in str(e.value) and "OFFLINE" in str(e.value)


def test_download_failure_is_a_clear_error(tree, monkeypatch):
    # a local port with nothing listening: the attempt fails at once without touching any network
    url = "http://127.0.0.1:9/some-set.zip"
    y = _write_yaml(tree / "dl.yaml", {"path": "../gone", "train": "images/train", "val": "images/val",
                                       "names": ["a"], "download": url})
    monkeypatch.delenv("YOLOSEG_OFFLINE", raising=False)
    with pytest.raises(FileNotFoundError) as e:
        check_data_yaml(y)
    assert str(y) in str(e.value) and url in str(e.value) and "failed" in str(e.value)


def test_img2label_paths_swaps_last_images_component():
    sep = os.sep
    p = f"{sep}data{sep}images{sep}set{sep}images{sep}train{sep}a.b.JPG"
    assert img2label_paths([p]) == [f"{sep}data{sep}images{sep}set{sep}labels{sep}train{sep}a.b.txt"]


def test_synthetic_name_resolves_to_generated_set(tmp_path, monkeypatch):
    monkeypatch.setenv("YOLOSEG_DATA_DIR", str(tmp_path))
    d = check_data_yaml("synthetic-shapes")
    assert d["names"] == {0: "ellipse", 1: "triangle", 2: "rectangle"}
    assert Path(d["yaml_file"]).parent.parent == tmp_path
    assert len(list_image_files(d["train"])) > 0 and len(list_image_files(d["val"])) > 0
    assert check_data_yaml("synthetic-shapes.yaml")["train"] == d["train"]
    assert d["train_defaults"]["imgsz"] == 320  # the images are 320 px


def test_packaged_yaml_with_download_resolves_into_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("YOLOSEG_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("YOLOSEG_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="coco8-seg.zip"):
        check_data_yaml("coco8-seg.yaml")
    for split in ("train", "val"):
        _img(tmp_path / "coco8-seg" / "images" / split / "a.jpg")
    d = check_data_yaml("coco8-seg")
    assert d["train"] == str(tmp_path / "coco8-seg" / "images" / "train") and d["nc"] == 80
