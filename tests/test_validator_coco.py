"""Validator on the real COCO photos (coco_permissive_seg) with the synth3 checkpoint, the COCO annotation
file as ground truth, the saved results JSON, the CLI, plots, and `val()` with no arguments after training."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from yoloseg.data import build_dataset, check_data_yaml
from yoloseg.engine.validator import assign_image_ids
from yoloseg.metrics import coco_evaluate
from yoloseg.metrics.segment import SegmentEvaluator, polygons_to_rle

SHARED = Path(__file__).resolve().parents[2] / "shared"
DATA = SHARED / "data/coco_permissive_seg"
COCO_VAL = DATA / "annotations/instances_val.json"
SYNTH3 = SHARED / "fixtures/ultralytics/yolo11n-seg-synth3-e100.pt"
ONE = pytest.approx(1.0, abs=1e-12)

needs_data = pytest.mark.skipif(not COCO_VAL.is_file(), reason="coco_permissive_seg not available")
needs_model = pytest.mark.skipif(not SYNTH3.is_file(), reason="synth3 fixture not available")


@needs_data
def test_ground_truth_from_yolo_labels_equals_the_coco_file():
    """The GT the validator builds from the YOLO labels, scored against the COCO file's own annotations
    (as detections): every instance found, same image ids, class i <-> category id i + 1."""
    data = check_data_yaml(str(DATA / "data.yaml"))
    ds = build_dataset(data, "val", {"imgsz": 320, "batch": 4}, augment=False)
    ids = assign_image_ids(ds.im_files)
    coco = json.loads(COCO_VAL.read_text())
    assert sorted(ids.values()) == sorted(im["id"] for im in coco["images"])
    ev = SegmentEvaluator(data["names"])
    for lab in ds.labels:
        h, w = lab["shape"]
        polys = [np.asarray(s, np.float64) * (w, h) for s in lab["segments"]]
        ev.add_ground_truth(ids[lab["im_file"]], (h, w), lab["cls"], polys, Path(lab["im_file"]).name)
    assert not ev.problems
    assert len(ev.annotations) == len(coco["annotations"])
    size = {im["id"]: (im["height"], im["width"]) for im in coco["images"]}
    for a in coco["annotations"]:
        x, y, bw, bh = a["bbox"]
        rle = polygons_to_rle(a["segmentation"], *size[a["image_id"]])
        ev.add_predictions(a["image_id"], [[x, y, x + bw, y + bh]], [1.0], [a["category_id"] - 1], [rle])
    m = ev.evaluate()
    assert m.box.map == ONE and m.seg.map == ONE


@pytest.mark.slow
@needs_data
@needs_model
def test_synth3_on_real_photos_saved_json_equals_reported(tmp_path):
    """Numbers are near 0 (a 3-class toy model on COCO photos): this checks the plumbing. With the COCO
    file as ground truth the reported stats equal coco_evaluate on predictions.json exactly."""
    from yoloseg import YOLO

    spec = yaml.safe_load((DATA / "data.yaml").read_text())
    spec.update(path=str(DATA), coco_gt="annotations/instances_val.json")
    data_yaml = tmp_path / "data.yaml"
    data_yaml.write_text(yaml.safe_dump(spec))
    m = YOLO(str(SYNTH3)).val(data=str(data_yaml), imgsz=320, batch=10, workers=0, save_json=True, plots=True,
                              project=str(tmp_path / "runs"), verbose=False)
    assert m.save_dir == tmp_path / "runs" / "val"
    pred = m.save_dir / "predictions.json"
    results = json.loads(pred.read_text())
    assert results and {"image_id", "category_id", "bbox", "score", "segmentation"} <= set(results[0])
    assert {r["category_id"] for r in results} <= {1, 2, 3}  # classes 0..2 -> category ids 1..3
    for iou_type, metric in (("bbox", m.box), ("segm", m.seg)):
        again = coco_evaluate(str(COCO_VAL), str(pred), iou_type)
        assert list(again.stats) == metric.stats
        assert metric.map == max(again.stats[0], 0.0) and metric.map50 == max(again.stats[1], 0.0)
    assert m.n_images == 20 and m.nt_per_class.sum() == 127
    assert m.box.maps.shape == (80,) and m.seg.maps.shape == (80,)
    for k, v in m.results_dict.items():
        assert np.isfinite(v), k
    assert all(v > 0 for v in m.speed.values())
    names = ["BoxPR_curve.png", "MaskPR_curve.png", "BoxF1_curve.png", "MaskF1_curve.png", "confusion_matrix.png",
             "confusion_matrix_normalized.png", "val_batch0_labels.jpg", "val_batch0_pred.jpg"]
    for n in names:
        img = cv2.imread(str(m.save_dir / n))
        assert img is not None and min(img.shape[:2]) > 200, n
    cm = m.confusion_matrix.matrix
    assert cm.shape == (81, 81) and cm[80].sum() + np.trace(cm[:80, :80]) >= 0
    assert cm[:, :80].sum() == 127  # every ground-truth instance lands in some row


@needs_model
def test_cli_val_runs(tmp_path):
    from click.testing import CliRunner

    from yoloseg.cli import cli
    from yoloseg.data.synthetic import generate_synthetic_shapes

    data_yaml = generate_synthetic_shapes(tmp_path / "ds", n_train=1, n_val=3, imgsz=96, seed=5)
    res = CliRunner().invoke(cli, ["val", f"model={SYNTH3}", f"data={data_yaml}", "imgsz=96", "batch=2",
                                   "workers=0", "plots=false", f"project={tmp_path / 'runs'}", "save_json=true"],
                             prog_name="yoloseg")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "runs" / "val" / "predictions.json").is_file()


@pytest.mark.slow
def test_val_without_arguments_after_training(tmp_path):
    from yoloseg import YOLO
    from yoloseg.data.synthetic import generate_synthetic_shapes

    data_yaml = generate_synthetic_shapes(tmp_path / "ds", n_train=4, n_val=2, imgsz=64, seed=2)
    model = YOLO("yolo11n-seg.yaml")
    model.train(data=str(data_yaml), epochs=1, imgsz=64, batch=4, workers=0, project=str(tmp_path / "runs"),
                plots=False, verbose=False)
    best = YOLO(str(tmp_path / "runs" / "train" / "weights" / "best.pt"))
    m = best.val(project=str(tmp_path / "runs"), plots=False, verbose=False)  # data and imgsz from the checkpoint
    assert m.n_images == 2
    assert set(m.results_dict) >= {"metrics/mAP50-95(M)", "metrics/precision(B)", "fitness"}


@needs_model
def test_exported_onnx_validates_like_the_checkpoint(tmp_path):
    pytest.importorskip("onnxruntime")
    import shutil

    from yoloseg import YOLO
    from yoloseg.data.synthetic import generate_synthetic_shapes

    data_yaml = generate_synthetic_shapes(tmp_path / "ds", n_train=1, n_val=4, imgsz=128, seed=4)
    pt = tmp_path / "synth3.pt"
    shutil.copy(SYNTH3, pt)
    kw = dict(data=str(data_yaml), imgsz=128, batch=2, workers=0, plots=False, verbose=False)
    ref = YOLO(str(pt)).val(**kw)
    onnx = YOLO(str(pt)).export(format="onnx", imgsz=128, dynamic=True)
    got = YOLO(onnx).val(**kw)
    assert got.box.map == pytest.approx(ref.box.map, abs=1e-3)
    assert got.seg.map == pytest.approx(ref.seg.map, abs=1e-3)
