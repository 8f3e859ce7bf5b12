"""`yoloseg convert coco`: COCO instances JSON -> YOLO-seg labels + data.yaml.

Oracle: ../shared/data/coco_permissive_seg ships the SAME polygons as COCO JSON and as YOLO label files
(category_id = class index + 1); converting each JSON must give back every shipped label file. The
hand-made cases check geometry against OpenCV rasterization and run-lengths counted here with numpy.
"""

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from yoloseg.cli import cli
from yoloseg.data.convert import COCO80_IDS, coco_to_yolo

SHARED = Path(os.environ.get("YOLOSEG_SHARED", Path(__file__).resolve().parents[2] / "shared"))
COCO = SHARED / "data" / "coco_permissive_seg"
needs_coco = pytest.mark.skipif(not (COCO / "annotations" / "instances_val.json").is_file(),
                                reason="coco_permissive_seg not available")


def _read_labels(folder: Path) -> dict:
    """{relative stem: [(cls, (K, 2) coords), ...]} parsed with plain Python."""
    out = {}
    for f in sorted(folder.rglob("*.txt")):
        rows = []
        for line in f.read_text().splitlines():
            v = line.split()
            rows.append((int(v[0]), np.array([float(x) for x in v[1:]]).reshape(-1, 2)))
        out[str(f.relative_to(folder).with_suffix(""))] = rows
    return out


def _write_json(path: Path, images, annotations, categories=None) -> Path:
    cats = categories if categories is not None else [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": cats}))
    return path


def _ann(aid, seg, image_id=1, cat=1, **kw):
    return {"id": aid, "image_id": image_id, "category_id": cat, "segmentation": seg, "iscrowd": 0, **kw}


def _fill(poly_px, h, w):
    m = np.zeros((h, w), np.uint8)
    cv2.fillPoly(m, [np.round(np.asarray(poly_px)).astype(np.int32).reshape(-1, 1, 2)], 1)
    return m


def _shoelace(p):
    x, y = p[:, 0], p[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


# ---------------------------------------------------------------------------------------------- oracle
@needs_coco
@pytest.mark.parametrize("split", ["val", "train"])
def test_reproduces_every_shipped_label_file(tmp_path, split):
    res = coco_to_yolo(COCO / "annotations" / f"instances_{split}.json", tmp_path, verbose=False)
    got, want = _read_labels(tmp_path / "labels" / split), _read_labels(COCO / "labels" / split)
    assert sorted(got) == sorted(want)
    for stem, rows in want.items():
        assert len(got[stem]) == len(rows), stem
        for (c0, p0), (c1, p1) in zip(got[stem], rows):
            assert c0 == c1, stem
            assert p0.shape == p1.shape, stem
            assert np.abs(p0 - p1).max() <= 1e-6, stem
    assert res.n_images == len(want) and res.n_instances == sum(len(r) for r in want.values())
    assert not res.skipped and not res.warnings
    # same number format as the shipped files: 6 decimals
    name = next(iter(want)) + ".txt"
    first = (tmp_path / "labels" / split / name).read_text().split("\n")[0].split()
    assert all(len(t.split(".")[1]) == 6 for t in first[1:])


@needs_coco
@pytest.mark.parametrize("mode", ["copy", "link"])
def test_converted_set_loads_in_yoloseg_data(tmp_path, mode):
    from yoloseg.data import check_data_yaml, scan_labels
    from yoloseg.data.yaml import list_image_files

    full = json.loads((COCO / "annotations" / "instances_val.json").read_text())
    images = full["images"][:3]
    ids = {im["id"] for im in images}
    anns = [a for a in full["annotations"] if a["image_id"] in ids]
    src = _write_json(tmp_path / "instances_val.json", images, anns, full["categories"])
    out = tmp_path / "set"
    coco_to_yolo(src, out, "val", images=mode, images_dir=COCO / "images" / "val", verbose=False)
    data = check_data_yaml(out / "data.yaml")
    assert data["nc"] == 80 and data["names"][0] == "person" and data["names"][79] == "toothbrush"
    assert data["val"] == str(out / "images" / "val")
    files = list_image_files(data["val"])
    assert sorted(Path(f).name for f in files) == sorted(im["file_name"] for im in images)
    ls = scan_labels(files, data["nc"], cache=False)
    assert ls.n_corrupt == 0 and ls.n_instances == len(anns) and not ls.report
    want = {Path(f).stem: [a["category_id"] - 1 for a in anns if a["image_id"] == im["id"]]
            for f, im in zip(sorted(files), sorted(images, key=lambda i: i["file_name"]))}
    assert {Path(f).stem: c.tolist() for f, c in zip(ls.im_files, ls.cls)} == want
    if mode == "link":
        assert all(Path(f).is_symlink() for f in files)


# ---------------------------------------------------------------------------------------------- geometry
def test_multi_part_polygon_is_joined_and_covers_every_part(tmp_path):
    h, w = 80, 100
    a = [10, 10, 30, 10, 30, 30, 10, 30]  # 400 px^2
    b = [60, 40, 60, 70, 90, 70, 90, 40]  # 900 px^2, opposite orientation
    src = _write_json(tmp_path / "j.json", [{"id": 1, "file_name": "x.jpg", "width": w, "height": h}],
                      [_ann(7, [a, b], cat=2)])
    res = coco_to_yolo(src, tmp_path / "o", "val", verbose=False)
    rows = _read_labels(tmp_path / "o" / "labels" / "val")["x"]
    assert len(rows) == 1 and rows[0][0] == 1
    poly = rows[0][1] * [w, h]
    assert len(poly) == 4 + 4 + 2  # both parts plus the two ends of the bridge walked there and back
    assert _shoelace(poly) == pytest.approx(400 + 900)  # parts oriented alike: the areas add up
    joined = _fill(poly, h, w)
    parts = _fill(np.reshape(a, (-1, 2)), h, w) | _fill(np.reshape(b, (-1, 2)), h, w)
    assert (joined >= parts).all()  # covers both parts
    assert (joined & ~parts).sum() <= 60  # the bridge adds at most its rasterized line
    assert res.n_instances == 1 and not res.skipped


def test_bad_part_of_a_multi_part_polygon_is_dropped_with_a_warning(tmp_path):
    sq = [10, 10, 30, 10, 30, 30, 10, 30]
    src = _write_json(tmp_path / "j.json", [{"id": 1, "file_name": "x.jpg", "width": 40, "height": 40}],
                      [_ann(4, [sq, [1, 1, 2, 2]]), _ann(5, [[0, 0, 5, 5, 9, 9], sq])])
    res = coco_to_yolo(src, tmp_path / "o", "val", verbose=False)
    rows = _read_labels(tmp_path / "o" / "labels" / "val")["x"]
    assert res.n_instances == 2 and not res.skipped
    for _, poly in rows:
        np.testing.assert_allclose(poly * 40, np.reshape(sq, (-1, 2)))
    assert any("annotation 4: a part was dropped (polygon with < 3 points)" in m for m in res.warnings)
    assert any("annotation 5: a part was dropped (zero-area part)" in m for m in res.warnings)


def test_non_crowd_rle_is_traced(tmp_path):
    h, w = 60, 50
    mask = np.zeros((h, w), np.uint8)
    mask[10:30, 5:25] = 1
    mask[40:55, 30:45] = 1  # a second blob: both parts end up in one joined polygon
    flat = mask.flatten(order="F")  # COCO runs: column-major, starting with background
    edges = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
    counts = runs if flat[0] == 0 else [0] + runs
    src = _write_json(tmp_path / "j.json", [{"id": 1, "file_name": "r.png", "width": w, "height": h}],
                      [_ann(3, {"size": [h, w], "counts": counts})])
    res = coco_to_yolo(src, tmp_path / "o", "val", verbose=False)
    rows = _read_labels(tmp_path / "o" / "labels" / "val")["r"]
    assert len(rows) == 1 and res.n_instances == 1
    traced = _fill(rows[0][1] * [w, h], h, w)
    assert (traced >= mask).all()  # contour through boundary pixel centres, filled with its edges
    assert (traced & ~mask).sum() <= 20  # plus the bridge between the blobs (about 11 px long)


def test_crowd_rle_skipped_by_default_and_included_on_request(tmp_path):
    from yoloseg.metrics import rle

    h, w = 40, 40
    mask = np.zeros((h, w), np.uint8)
    mask[5:20, 8:30] = 1
    crowd = _ann(9, rle.encode(mask)[0], iscrowd=1)
    poly = _ann(10, [[1, 1, 10, 1, 10, 10]])
    src = _write_json(tmp_path / "j.json", [{"id": 1, "file_name": "c.jpg", "width": w, "height": h}],
                      [crowd, poly])
    res = coco_to_yolo(src, tmp_path / "a", "val", verbose=False)
    assert res.skipped == {"crowd": 1} and res.n_instances == 1
    assert any("1 crowd annotation(s) skipped" in m for m in res.warnings)
    res = coco_to_yolo(src, tmp_path / "b", "val", include_crowd=True, verbose=False)
    assert not res.skipped and res.n_instances == 2
    rows = _read_labels(tmp_path / "b" / "labels" / "val")["c"]
    assert (_fill(rows[0][1] * [w, h], h, w) == mask).all()


# ---------------------------------------------------------------------------------------------- bad input
def test_bad_annotations_are_skipped_counted_and_named(tmp_path, capsys):
    images = [{"id": 1, "file_name": "ok.jpg", "width": 100, "height": 50},
              {"id": 2, "file_name": "nosize.jpg"},
              {"id": 3, "file_name": "empty.jpg", "width": 10, "height": 10}]
    sq = [[10, 10, 20, 10, 20, 20, 10, 20]]
    anns = [
        _ann(1, sq),
        _ann(2, sq, image_id=99),  # unknown image
        _ann(3, sq, cat=5),  # unknown category
        _ann(4, [[1, 1, 5, 5]]),  # 2 points
        _ann(5, [[0, 0, 10, 10, 20, 20]]),  # collinear: zero area
        _ann(6, [[-5, -5, 120, -5, 120, 60]]),  # outside the image: clipped, kept
        _ann(7, sq, image_id=2),  # image without width/height
        _ann(8, None),  # no segmentation
        _ann(9, {"size": [10, 10], "counts": [3, 4]}),  # RLE of another size
        _ann(10, {"size": [50, 100], "counts": "!!!###"}),  # garbage compressed RLE
    ]
    src = _write_json(tmp_path / "bad.json", images, anns)
    res = coco_to_yolo(src, tmp_path / "o", "val")
    assert dict(res.skipped) == {
        "unknown image id": 1, "unknown category id": 1, "polygon with < 3 points": 1, "zero area": 1,
        "image without width/height": 1, "no segmentation": 1, "RLE size differs from the image size": 1,
        "invalid RLE": 1,
    }
    assert res.n_instances == 2 and res.n_clipped == 1 and res.n_images == 2 and res.n_empty == 1
    assert res.n_images_skipped == 1
    labels = tmp_path / "o" / "labels" / "val"
    assert sorted(p.name for p in labels.iterdir()) == ["empty.txt", "ok.txt"]  # no size: no label file
    assert (labels / "empty.txt").read_text() == ""
    lines = (labels / "ok.txt").read_text().splitlines()
    assert lines[1] == "0 0.000000 0.000000 1.000000 0.000000 1.000000 1.000000"
    err = capsys.readouterr().err
    for aid in (2, 3, 4, 5, 6, 7, 8, 9, 10):
        assert f"bad.json: annotation {aid}:" in err
    assert "bad.json: image 2 (nosize.jpg)" in err
    summary = [ln for ln in err.splitlines() if ln.startswith("bad.json -> ")]
    assert len(summary) == 1 and "2 label files (1 empty), 2 instances, 1 clipped" in summary[0]
    assert "1 unknown category id" in summary[0] and "1 invalid RLE" in summary[0]


def test_empty_image_gets_an_empty_label_file_and_split_name_from_json(tmp_path):
    src = _write_json(tmp_path / "instances_train2017.json",
                      [{"id": 5, "file_name": "sub/e.jpg", "width": 10, "height": 10}], [])
    res = coco_to_yolo(src, tmp_path / "o", verbose=False)
    assert res.split == "train2017"
    assert (tmp_path / "o" / "labels" / "train2017" / "sub" / "e.txt").read_text() == ""
    import yaml

    data = yaml.safe_load((tmp_path / "o" / "data.yaml").read_text())
    assert data["path"] == "." and data["train"] == data["val"] == "images/train2017"
    assert data["names"] == {0: "a", 1: "b"} and data["nc"] == 2


@pytest.mark.parametrize("content,match", [
    (None, "does not exist"),
    ("{not json", "not valid JSON"),
    ("[1, 2]", "must hold a JSON object"),
    ('{"images": [], "categories": []}', "'annotations'"),
    ('{"images": [], "annotations": [], "categories": []}', "'categories' is empty"),
    ('{"images": [], "annotations": [], "categories": [{"id": 1}, {"id": 1}]}', "appears twice"),
])
def test_bad_files_raise_clear_errors(tmp_path, content, match):
    path = tmp_path / "instances_x.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises((ValueError, FileNotFoundError), match=match) as e:
        coco_to_yolo(path, tmp_path / "o", verbose=False)
    assert "instances_x.json" in str(e.value)
    assert not (tmp_path / "o" / "labels").exists()


def test_refuses_to_overwrite_unless_asked(tmp_path):
    images = [{"id": 1, "file_name": "a.jpg", "width": 10, "height": 10}]
    src = _write_json(tmp_path / "j.json", images, [_ann(1, [[1, 1, 5, 1, 5, 5]])])
    out = tmp_path / "o"
    (out / "labels" / "val").mkdir(parents=True)
    (out / "labels" / "val" / "stale.txt").write_text("0 0 0 1 0 1 1\n")
    with pytest.raises(FileExistsError, match="labels folder .* not empty.*--overwrite"):
        coco_to_yolo(src, out, "val", verbose=False)
    coco_to_yolo(src, out, "val", overwrite=True, verbose=False)
    assert sorted(p.name for p in (out / "labels" / "val").iterdir()) == ["a.txt"]


def test_data_yaml_collects_splits_and_refuses_other_names(tmp_path):
    import yaml

    im = [{"id": 1, "file_name": "a.jpg", "width": 10, "height": 10}]
    out = tmp_path / "o"
    coco_to_yolo(_write_json(tmp_path / "instances_val.json", im, []), out, verbose=False)
    coco_to_yolo(_write_json(tmp_path / "instances_train.json", im, []), out, verbose=False)
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert (data["train"], data["val"]) == ("images/train", "images/val")
    other = _write_json(tmp_path / "instances_test.json", im, [], [{"id": 1, "name": "zebra"}])
    with pytest.raises(ValueError, match="other class names"):
        coco_to_yolo(other, out, verbose=False)
    assert not (out / "labels" / "test").exists()  # checked before anything is written


def test_class_mappings(tmp_path):
    cats = [{"id": 90, "name": "toothbrush"}, {"id": 1, "name": "person"}, {"id": 13, "name": "stop sign"}]
    im = [{"id": 1, "file_name": "a.jpg", "width": 10, "height": 10}]
    sq = [[1, 1, 5, 1, 5, 5]]
    src = _write_json(tmp_path / "j.json", im, [_ann(1, sq, cat=90), _ann(2, sq, cat=1), _ann(3, sq, cat=13)],
                      cats)
    res = coco_to_yolo(src, tmp_path / "s", "val", verbose=False)
    assert res.names == {0: "person", 1: "stop sign", 2: "toothbrush"}
    assert [r[0] for r in _read_labels(tmp_path / "s" / "labels" / "val")["a"]] == [2, 0, 1]
    res = coco_to_yolo(src, tmp_path / "c", "val", classes="coco80", verbose=False)
    assert len(COCO80_IDS) == 80 and len(res.names) == 80
    assert (res.names[0], res.names[11], res.names[79]) == ("person", "stop sign", "toothbrush")
    assert [r[0] for r in _read_labels(tmp_path / "c" / "labels" / "val")["a"]] == [79, 0, 11]
    bad = _write_json(tmp_path / "k.json", im, [], [{"id": 12, "name": "x"}])
    with pytest.raises(ValueError, match=r"coco80.*\[12\]"):
        coco_to_yolo(bad, tmp_path / "k", "val", classes="coco80", verbose=False)


# ---------------------------------------------------------------------------------------------- CLI
@pytest.fixture
def run(monkeypatch):
    monkeypatch.delenv("YOLOSEG_DEBUG", raising=False)
    runner = CliRunner()
    return lambda *args: runner.invoke(cli, [str(a) for a in args], prog_name="yoloseg")


def _one_line_error(result, code):
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    errors = [ln for ln in result.output.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1, result.output
    return errors[0]


@needs_coco
def test_cli_converts_both_splits(run, tmp_path):
    from yoloseg.data import check_data_yaml

    ann = COCO / "annotations"
    r = run("convert", "coco", ann / "instances_train.json", ann / "instances_val.json", "--out", tmp_path,
            "--link-images")
    assert r.exit_code == 0, r.output
    assert "instances_val.json -> " in r.output and "127 instances" in r.output and "456 instances" in r.output
    assert f"data: {tmp_path / 'data.yaml'}" in r.output
    for split in ("train", "val"):
        shipped = sorted(p.name for p in (COCO / "labels" / split).iterdir())
        assert sorted(p.name for p in (tmp_path / "labels" / split).iterdir()) == shipped
        assert len(list((tmp_path / "images" / split).iterdir())) == len(shipped)
    data = check_data_yaml(tmp_path / "data.yaml")
    assert data["train"].endswith("images/train") and data["val"].endswith("images/val")


def test_cli_errors_are_one_line(run, tmp_path):
    assert "Error: COCO annotations:" in _one_line_error(run("convert", "coco", tmp_path / "no.json", "-o",
                                                             tmp_path / "o"), 1)
    (tmp_path / "bad.json").write_text("{")
    assert "not valid JSON" in _one_line_error(run("convert", "coco", tmp_path / "bad.json", "-o", tmp_path), 1)
    src = _write_json(tmp_path / "instances_val.json", [{"id": 1, "file_name": "a.jpg", "width": 9,
                                                         "height": 9}], [])
    assert run("convert", "coco", src, "-o", tmp_path / "o").exit_code == 0
    assert "--overwrite" in _one_line_error(run("convert", "coco", src, "-o", tmp_path / "o"), 1)
    assert run("convert", "coco", src, "-o", tmp_path / "o", "--overwrite").exit_code == 0
    assert "one of" in _one_line_error(run("convert", "coco", src, "-o", tmp_path / "p", "--copy-images",
                                           "--link-images"), 2)
    assert "single" in _one_line_error(run("convert", "coco", src, src, "-o", tmp_path / "p", "--split", "v"), 2)
    assert "not found next to it" in _one_line_error(run("convert", "coco", src, "-o", tmp_path / "p",
                                                         "--copy-images"), 1)
    assert "coco80" in run("convert", "coco", "--help").output
    assert "convert" in run("--help").output


def test_cli_copies_images_from_a_given_folder(run, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "a.png"), np.full((9, 9, 3), 200, np.uint8))
    src = _write_json(tmp_path / "j.json", [{"id": 1, "file_name": "a.png", "width": 9, "height": 9}],
                      [_ann(1, [[1, 1, 7, 1, 7, 7]])])
    r = run("convert", "coco", src, "-o", tmp_path / "o", "--split", "val", "--copy-images", "--images", photos)
    assert r.exit_code == 0, r.output
    copied = tmp_path / "o" / "images" / "val" / "a.png"
    assert copied.is_file() and not copied.is_symlink()
    assert copied.read_bytes() == (photos / "a.png").read_bytes()
    shutil.rmtree(photos)  # a copy, not a link: still readable
    assert cv2.imread(str(copied)) is not None
