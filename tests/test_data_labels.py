"""Label scan: every failure kind reported per file, the summary counts, and the cache life cycle."""

import logging
import os
import stat
from pathlib import Path

import cv2
import numpy as np
import pytest

from yoloseg.data.labels import scan_labels

SQUARE = "0.1 0.1 0.4 0.1 0.4 0.4 0.1 0.4"


def _jpg(path: Path, size=(40, 60)) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (*size, 3), dtype=np.uint8))
    path.write_bytes(buf.tobytes())
    return buf.tobytes()


def _label(root: Path, stem: str, text: str | None):
    p = root / "labels" / "train" / f"{stem}.txt"
    p.parent.mkdir(parents=True, exist_ok=True)
    if text is not None:
        p.write_text(text)


@pytest.fixture
def bad_set(tmp_path):
    """One image per failure kind; returns (root, image files)."""
    root = tmp_path / "bad"
    img = root / "images" / "train"
    cases = {
        "good": f"0 {SQUARE}\n1 0.5 0.5 0.9 0.5 0.7 0.9\n",
        "twopoints": f"0 0.1 0.1 0.5 0.5\n1 {SQUARE}\n",
        "clipped": "0 -0.004 0.1 0.4 0.1 0.4 1.006\n",
        "farout": f"0 0.1 0.1 1.5 0.1 0.4 0.4\n2 {SQUARE}\n",
        "badcls": f"7 {SQUARE}\n1.5 {SQUARE}\n-1 {SQUARE}\n2 {SQUARE}\n",
        "dups": f"1 {SQUARE}\n1 {SQUARE}\n1   {SQUARE}\n0 {SQUARE}\n",
        "oddcoords": "0 0.1 0.1 0.4 0.1 0.4\n",
        "empty": "",
        "nolabel": None,
    }
    for stem, text in cases.items():
        _jpg(img / f"{stem}.jpg")
        _label(root, stem, text)
    (img / "zero.jpg").write_bytes(b"")
    _label(root, "zero", f"0 {SQUARE}\n")
    (img / "garbage.jpg").write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(300))
    _label(root, "garbage", f"0 {SQUARE}\n")
    (img / "notimage.png").write_bytes(b"this is text, not a png")
    files = sorted(str(p) for p in img.iterdir())
    return root, files


def _msgs(ls, stem):
    return [m for f, m in ls.report if Path(f).stem == stem]


def test_every_failure_kind_is_reported_per_file(bad_set, caplog):
    root, files = bad_set
    with caplog.at_level(logging.INFO, logger="yoloseg.data"):
        ls = scan_labels(files, nc=3)
    by_stem = {Path(f).stem: i for i, f in enumerate(ls.im_files)}
    # corrupt images are skipped and counted
    assert ls.n_corrupt == 3
    assert not {"zero", "garbage", "notimage"} & set(by_stem)
    assert any("0 bytes" in m for m in _msgs(ls, "zero"))
    assert any("cannot be decoded" in m for m in _msgs(ls, "garbage"))
    assert any("cannot be decoded" in m for m in _msgs(ls, "notimage"))
    # the instance-level problems
    assert _msgs(ls, "good") == []
    assert len(ls.cls[by_stem["good"]]) == 2
    assert any("2 points (< 3)" in m for m in _msgs(ls, "twopoints"))
    assert list(ls.cls[by_stem["twopoints"]]) == [1]
    assert any("slightly outside" in m and "clipped" in m for m in _msgs(ls, "clipped"))
    seg = ls.segments[by_stem["clipped"]][0]
    assert seg.min() == 0.0 and seg.max() == 1.0 and np.isclose(seg[0, 1], 0.1)
    # far outside: clipped and kept too (one stray vertex does not cost the instance)
    assert any("far outside" in m and "clipped" in m for m in _msgs(ls, "farout"))
    assert list(ls.cls[by_stem["farout"]]) == [0, 2]
    far = ls.segments[by_stem["farout"]][0]
    assert far.max() == 1.0 and np.isclose(far[1, 0], 1.0) and np.isclose(far[0, 0], 0.1)
    bad = _msgs(ls, "badcls")
    assert sum("unknown class id" in m for m in bad) == 3
    assert list(ls.cls[by_stem["badcls"]]) == [2]
    assert any("2 duplicate line(s) removed" in m for m in _msgs(ls, "dups"))
    assert sorted(ls.cls[by_stem["dups"]]) == [0, 1]
    assert any("odd number of coordinates" in m for m in _msgs(ls, "oddcoords"))
    # backgrounds: empty file, missing file, and a file whose only instance was dropped
    assert any("empty label file" in m for m in _msgs(ls, "empty"))
    assert any("no label file" in m for m in _msgs(ls, "nolabel"))
    assert len(ls.cls[by_stem["empty"]]) == len(ls.cls[by_stem["nolabel"]]) == 0
    assert ls.n_background == 3  # empty, nolabel, oddcoords
    assert len(ls.im_files) == 9
    # warnings: twopoints 1, clipped 1, farout 1, badcls 3, dups 1, oddcoords 1
    assert ls.n_warnings == 8
    assert ls.summary().startswith("9 images, 3 backgrounds, 3 corrupt skipped, 8 warnings")
    log = caplog.text
    assert "9 images, 3 backgrounds, 3 corrupt skipped, 8 warnings" in log
    assert "garbage.jpg" in log and "badcls.jpg" in log  # per-file list is logged
    assert ls.shapes[by_stem["good"]].tolist() == [40, 60]


def test_crlf_and_byte_order_mark_are_accepted(tmp_path):
    _jpg(tmp_path / "images" / "train" / "a.jpg")
    (tmp_path / "labels" / "train").mkdir(parents=True)
    (tmp_path / "labels" / "train" / "a.txt").write_bytes(f"\ufeff0 {SQUARE}\r\n1 {SQUARE}\r\n".encode())
    ls = scan_labels([str(tmp_path / "images" / "train" / "a.jpg")], nc=2, cache=False)
    assert ls.n_warnings == 0 and ls.cls[0].tolist() == [0, 1]


def test_truncated_jpeg_is_reported(tmp_path):
    data = _jpg(tmp_path / "images" / "train" / "full.jpg", size=(64, 64))
    cut = tmp_path / "images" / "train" / "cut.jpg"
    cut.write_bytes(data[: len(data) * 2 // 3])
    ls = scan_labels([str(cut), str(tmp_path / "images" / "train" / "full.jpg")], nc=1, cache=False)
    msgs = [m for f, m in ls.report if f == str(cut)]
    assert any("truncated" in m or "corrupt" in m for m in msgs)


def test_cache_is_reused_and_invalidated(bad_set):
    root, files = bad_set
    cache = root / "labels" / "train.cache"
    first = scan_labels(files, nc=3)
    assert cache.is_file() and not first.from_cache
    second = scan_labels(files, nc=3)
    assert second.from_cache
    assert second.im_files == first.im_files and second.report == first.report
    assert second.summary() == first.summary()
    for a, b in zip(first.segments, second.segments):
        assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
    # a different class count changes validity: rescan
    assert not scan_labels(files, nc=8).from_cache
    scan_labels(files, nc=3)
    # editing one label file (size + mtime) invalidates the cache
    lb = root / "labels" / "train" / "good.txt"
    lb.write_text(lb.read_text() + f"2 {SQUARE}\n")
    third = scan_labels(files, nc=3)
    assert not third.from_cache
    assert len(third.cls[third.im_files.index(files[[Path(f).stem for f in files].index("good")])]) == 3
    assert scan_labels(files, nc=3).from_cache
    # adding an image (a label file appearing) invalidates it too
    (root / "labels" / "train" / "nolabel.txt").write_text(f"0 {SQUARE}\n")
    assert not scan_labels(files, nc=3).from_cache


def test_corrupt_cache_file_is_ignored(bad_set):
    root, files = bad_set
    scan_labels(files, nc=3)
    (root / "labels" / "train.cache").write_bytes(b"not a cache")
    ls = scan_labels(files, nc=3)
    assert not ls.from_cache and len(ls.im_files) == 9


def test_read_only_folder_skips_cache_with_warning(bad_set, caplog):
    root, files = bad_set
    labels = root / "labels"
    mode = labels.stat().st_mode
    labels.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP)
    try:
        with caplog.at_level(logging.WARNING, logger="yoloseg.data"):
            ls = scan_labels(files, nc=3)
    finally:
        labels.chmod(mode)
    assert len(ls.im_files) == 9
    assert not (labels / "train.cache").exists()
    assert "label cache not saved" in caplog.text and "read-only" in caplog.text
