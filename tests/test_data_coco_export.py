"""`yoloseg convert yolo2coco`: YOLO-seg labels -> COCO instances JSON.

Oracles: pycocotools evaluating the exported ground truth against itself gives AP 1.0 (boxes and masks);
`convert coco` of the export gives back the shipped label files byte for byte; the shipped
annotations/instances_*.json hold the same polygons in pixels (category_id = class + 1).
"""

import contextlib
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from yoloseg.cli import cli
from yoloseg.data.coco_export import yolo_to_coco
from yoloseg.data.convert import coco_to_yolo

SHARED = Path(os.environ.get("YOLOSEG_SHARED", Path(__file__).resolve().parents[2] / "shared"))
COCO = SHARED / "data" / "coco_permissive_seg"
needs_coco = pytest.mark.skipif(not (COCO / "data.yaml").is_file(), reason="coco_permissive_seg not available")


@needs_coco
@pytest.mark.parametrize("split", ["train", "val"])
def test_round_trip_reproduces_label_files(tmp_path, split):
    out = tmp_path / f"instances_{split}.json"
    res = yolo_to_coco(COCO / "data.yaml", split, out, verbose=False)
    assert res.problems == []
    coco_to_yolo(out, tmp_path / "back", split, verbose=False)
    shipped = sorted((COCO / "labels" / split).glob("*.txt"))
    back = sorted((tmp_path / "back" / "labels" / split).glob("*.txt"))
    assert [p.name for p in back] == [p.name for p in shipped]
    for a, b in zip(shipped, back):
        assert a.read_bytes() == b.read_bytes(), a.name


@needs_coco
def test_export_matches_shipped_json():
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "val.json"
        yolo_to_coco(COCO / "data.yaml", "val", out, verbose=False)
        doc = json.loads(out.read_text())
    ref = json.loads((COCO / "annotations" / "instances_val.json").read_text())
    assert {(i["id"], i["file_name"], i["width"], i["height"]) for i in doc["images"]} == {
        (i["id"], i["file_name"], i["width"], i["height"]) for i in ref["images"]}
    assert [c["name"] for c in doc["categories"]] == [c["name"] for c in ref["categories"]]
    assert len(doc["annotations"]) == len(ref["annotations"]) == 127
    key = lambda a: (a["image_id"], a["category_id"], round(a["bbox"][0], 1), round(a["bbox"][1], 1))  # noqa: E731
    for a, b in zip(sorted(doc["annotations"], key=key), sorted(ref["annotations"], key=key)):
        assert a["category_id"] == b["category_id"] and a["image_id"] == b["image_id"]
        pa, pb = np.array(a["segmentation"][0]), np.array(b["segmentation"][0])
        assert pa.shape == pb.shape and np.abs(pa - pb).max() < 0.01
        xy = pa.reshape(-1, 2)
        shoelace = 0.5 * abs(np.dot(xy[:, 0], np.roll(xy[:, 1], -1)) - np.dot(xy[:, 1], np.roll(xy[:, 0], -1)))
        assert a["area"] == pytest.approx(shoelace, abs=1e-4)
        assert a["bbox"] == pytest.approx([*xy.min(0), *(xy.max(0) - xy.min(0))], abs=1e-5)
        assert a["iscrowd"] == 0


@needs_coco
def test_pycocotools_gt_against_itself_is_ap_1(tmp_path):
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO as PyCOCO
    from pycocotools.cocoeval import COCOeval

    out = tmp_path / "val.json"
    yolo_to_coco(COCO / "data.yaml", "val", out, verbose=False)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = PyCOCO(str(out))
        dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "segmentation": a["segmentation"],
                 "bbox": a["bbox"], "score": 1.0} for a in gt.dataset["annotations"]]
        for iou_type in ("bbox", "segm"):
            ev = COCOeval(gt, gt.loadRes(dets), iou_type)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
            assert ev.stats[0] == pytest.approx(1.0) and ev.stats[1] == pytest.approx(1.0), iou_type


def test_bad_labels_reported_and_left_out(tmp_path):
    import cv2

    root = tmp_path / "set"
    (root / "images" / "val").mkdir(parents=True)
    (root / "labels" / "val").mkdir(parents=True)
    for stem in ("a", "b"):
        cv2.imwrite(str(root / "images" / "val" / f"{stem}.png"), np.zeros((20, 40, 3), np.uint8))
    (root / "images" / "val" / "c.png").write_bytes(b"not an image")
    (root / "labels" / "val" / "a.txt").write_text("0 0.1 0.1 0.5 0.1 0.5 0.5\n7 0.1 0.1 0.5 0.1 0.5 0.5\n")
    (root / "labels" / "val" / "b.txt").write_text("1 0 0 1 0 1 1 0 1\n1 0.1 0.2\n")
    (root / "data.yaml").write_text("path: .\ntrain: images/val\nval: images/val\nnames: [x, y]\n")
    r = CliRunner().invoke(cli, ["convert", "yolo2coco", f"data={root / 'data.yaml'}", "split=val",
                                 "-o", str(tmp_path / "out.json")])
    assert r.exit_code == 0, r.output
    assert "unknown class id 7" in r.output and "c.png" in r.output and "Traceback" not in r.output
    doc = json.loads((tmp_path / "out.json").read_text())
    assert [i["file_name"] for i in doc["images"]] == ["a.png", "b.png"]
    assert [(a["category_id"], a["area"], a["bbox"]) for a in doc["annotations"]] == [
        (1, 64.0, [4.0, 2.0, 16.0, 8.0]), (2, 800.0, [0.0, 0.0, 40.0, 20.0])]
    assert [c["name"] for c in doc["categories"]] == ["x", "y"]
    r = CliRunner().invoke(cli, ["convert", "yolo2coco", f"data={root / 'data.yaml'}", "split=tset"])
    assert r.exit_code == 1 and "split must be one of" in r.output
