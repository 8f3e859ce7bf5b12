"""Validator end to end: geometry with a model that predicts the ground truth, NaN outputs, bad labels, the
trainer's calling convention, mask decoding against a pure-torch oracle."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from yoloseg.data import build_dataloader, build_dataset, check_data_yaml
from yoloseg.data.synthetic import generate_synthetic_shapes
from yoloseg.engine.validator import Validator, assign_image_ids, masks_to_original
from yoloseg.metrics.segment import SegmentMetrics

ONE = pytest.approx(1.0, abs=1e-12)  # COCO divides by (tp + fp + eps): a perfect AP is 1 - 2e-16


class GroundTruthModel(torch.nn.Module):
    """Replays the loader's batches: boxes and classes of the labels, masks from the label masks (each
    instance one prototype channel of +-1), so every detection is a ground-truth instance."""

    def __init__(self, batches, nc=3, nan_anchors=0):
        super().__init__()
        self.batches = list(batches)
        self.nc, self.names, self.stride = nc, {i: str(i) for i in range(nc)}, torch.tensor([8.0, 16.0, 32.0])
        self.nan_anchors = nan_anchors
        self.calls = 0

    def forward(self, x):
        batch = self.batches[self.calls]
        self.calls += 1
        b, _, h, w = x.shape
        assert tuple(batch["img"].shape[-2:]) == (h, w)
        n_anchor = 32 + self.nan_anchors
        pred = torch.zeros(b, 4 + self.nc + 32, n_anchor)
        protos = -torch.ones(b, 32, h // 4, w // 4)
        bidx = batch["batch_idx"].long()
        for i in range(b):
            sel = torch.nonzero(bidx == i).squeeze(1)
            for k, j in enumerate(sel.tolist()):
                pred[i, :4, k] = batch["bboxes"][j] * torch.tensor([w, h, w, h])
                pred[i, 4 + int(batch["cls"][j]), k] = 0.9 - 0.01 * k
                pred[i, 4 + self.nc + k, k] = 1.0
                protos[i, k] = batch["masks"][i].float().eq(k + 1).float() * 2 - 1
            if self.nan_anchors:
                pred[i, :, 32:] = float("nan")
                pred[i, 4, 32] = 0.99
                pred[i, :4, 33] = torch.tensor([10.0, 10.0, 5.0, 5.0])
                pred[i, 5, 33] = 0.95
                pred[i, 4 + self.nc :, 33] = float("nan")
        return pred, protos


@pytest.fixture(scope="module")
def synth_yaml(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "ds"
    return generate_synthetic_shapes(root, n_train=1, n_val=6, imgsz=160, seed=3, max_instances=4)


def _loader(yaml_path, imgsz=160, batch=4):
    data = check_data_yaml(str(yaml_path))
    cfg = SimpleNamespace(imgsz=imgsz, batch=batch)
    ds = build_dataset(data, "val", cfg, augment=False, batch=batch, stride=32)
    return build_dataloader(ds, batch, workers=0, shuffle=False)


def _cfg(**kw):
    base = dict(conf=0.001, iou=0.7, max_det=300, plots=False, save_json=False, verbose=False)
    base.update(kw)
    return SimpleNamespace(**base)


def test_ground_truth_model_scores_one(synth_yaml):
    loader = _loader(synth_yaml, imgsz=160, batch=4)
    model = GroundTruthModel(loader)
    m = Validator(_cfg(), task=None, dataloader=loader)(model=model)
    assert isinstance(m, SegmentMetrics)
    assert m.n_images == 6 and m.nt_per_class.sum() > 6
    assert m.box.map == ONE and m.box.mp == 1.0 and m.box.mr == 1.0
    assert m.seg.map50 == ONE and m.seg.map > 0.5  # masks rebuilt from quarter-resolution label masks
    assert m.fitness == pytest.approx(0.1 + 0.9 + 0.1 * m.seg.map50 + 0.9 * m.seg.map)
    assert set(SegmentMetrics.KEYS) <= set(m.results_dict)
    assert set(m.speed) == {"preprocess", "inference", "postprocess"}


def test_rect_and_square_letterbox_give_the_same_boxes(synth_yaml):
    # 160-px images validated at 224 (scaleup off: padded, not resized) and at 96 (shrunk)
    for imgsz in (224, 96):
        loader = _loader(synth_yaml, imgsz=imgsz, batch=3)
        m = Validator(_cfg(), dataloader=loader)(model=GroundTruthModel(loader))
        assert m.box.map == ONE, imgsz
        assert m.seg.map50 == ONE, imgsz


def test_nan_predictions_are_ignored_and_reported(synth_yaml):
    loader = _loader(synth_yaml, batch=4)
    v = Validator(_cfg(), dataloader=loader)
    m = v(model=GroundTruthModel(loader, nan_anchors=2))
    assert v.n_nonfinite > 0
    assert any("NaN" in msg for _, msg in v.problems)
    assert m.box.map == ONE


def test_trainer_calling_convention_restores_train_mode(synth_yaml):
    from yoloseg.checkpoints import load_checkpoint

    ckpt = Path(__file__).resolve().parents[2] / "shared/fixtures/ultralytics/yolo11n-seg-synth3-e100.pt"
    if not ckpt.is_file():
        pytest.skip("synth3 fixture missing")
    model, _ = load_checkpoint(str(ckpt))
    model.train()
    loader = _loader(synth_yaml, imgsz=96, batch=4)
    v = Validator(SimpleNamespace(**{**vars(_cfg()), "mode": "val", "imgsz": 96, "batch": 4}), model=None,
                  task=None, dataloader=loader)
    m1 = v(model=model)
    assert model.training  # state restored
    m2 = v(model=model)  # the same validator every epoch
    assert m1.results_dict == m2.results_dict
    assert 0.0 <= m1.box.map <= 1.0 and m1.seg.map50 >= 0.0
    assert isinstance(m1.fitness, float)


def test_bad_labels_never_crash(tmp_path):
    root = tmp_path / "bad"
    generate_synthetic_shapes(root, n_train=1, n_val=4, imgsz=96, seed=1, max_instances=2)
    labels = sorted((root / "labels" / "val").glob("*.txt"))
    labels[0].write_text("")  # empty label file: background image
    labels[1].write_text("0 0.1 0.1 0.5 0.5\n"  # 2 points
                         "7 0.1 0.1 0.5 0.1 0.5 0.5\n"  # unknown class
                         "1 -0.5 0.1 1.8 0.1 0.5 0.9\n"  # far outside [0, 1]
                         "2 0.2 0.2 0.6 0.2 0.6 0.6 0.2 0.6\n")  # the one good instance
    labels[2].write_text("1 -0.005 0.1 0.5 0.1 0.5 0.5\n")  # slightly outside: clipped
    loader = _loader(root / "data.yaml", imgsz=96, batch=2)
    m = Validator(_cfg(), dataloader=loader)(model=GroundTruthModel(loader))
    assert m.n_images == 4
    assert m.box.map == ONE


@pytest.mark.parametrize("compiled", [True, False], ids=["kernel", "numpy"])
def test_masks_to_original_matches_interpolate_oracle(compiled, monkeypatch):
    import yoloseg.engine.val_masks as val_masks_module

    if not compiled:
        monkeypatch.setattr(val_masks_module, "_compiled_crops", lambda *t: False)
    torch.manual_seed(0)
    protos = torch.randn(32, 28, 40)
    coeffs = torch.randn(20, 32) * 0.4
    H, W = 112, 160  # input; original 150x200 letterboxed at gain 0.7 (105x140), padding 3 top / 10 left
    h0, w0, gain, top, left = 150, 200, 0.7, 3, 10
    xy = torch.rand(20, 2) * torch.tensor([w0, h0])
    wh = torch.rand(20, 2) * 120
    boxes = torch.cat([xy, (xy + wh).clamp(max=torch.tensor([w0, h0]))], 1)
    boxes[0] = torch.tensor([0.0, 0.0, w0, h0])
    boxes[1] = torch.tensor([30.0, 20.0, 30.0, 90.0])  # zero width: an empty mask
    rles = masks_to_original(protos, coeffs, boxes, (H, W), ((gain, gain), (left, top)), (h0, w0))
    from yoloseg.metrics import rle

    got = torch.from_numpy(rle.decode(rles)).bool()
    logits = (coeffs @ protos.reshape(32, -1)).reshape(1, 20, 28, 40)
    up = F.interpolate(logits, size=(H, W), mode="bilinear", align_corners=False)
    up = up[:, :, top : top + 105, left : left + 140]
    up = F.interpolate(up, size=(h0, w0), mode="bilinear", align_corners=False)[0]
    cols, rows = torch.arange(w0).float(), torch.arange(h0).float()
    keep = ((rows[None] >= boxes[:, 1:2]) & (rows[None] < boxes[:, 3:4]))[:, :, None] & (
        (cols[None] >= boxes[:, 0:1]) & (cols[None] < boxes[:, 2:3]))[:, None, :]
    want = (up > 0) & keep
    near_zero = up.abs() < 1e-4  # float32 summation order may flip these
    assert ((got != want) & ~near_zero).sum() == 0
    assert want.sum() > 1000 and not got[1].any() and rles[1]["size"] == [h0, w0]


def test_image_ids():
    assert assign_image_ids(["/a/000000030213.jpg", "/a/12.jpg"]) == {"/a/000000030213.jpg": 30213, "/a/12.jpg": 12}
    ids = assign_image_ids(["/b/x.jpg", "/a/y.jpg", "/a/1.jpg"])
    assert sorted(ids.values()) == [1, 2, 3] and ids["/a/1.jpg"] == 1


def test_val_without_data_is_a_clear_error():
    with pytest.raises(ValueError, match="data"):
        Validator(SimpleNamespace(data=None, verbose=False), model=GroundTruthModel([]))()


@pytest.mark.parametrize("compiled", [True, False], ids=["kernel", "numpy"])
def test_save_txt_writes_the_predictions_as_label_files(synth_yaml, tmp_path, compiled, monkeypatch):
    """Predictions equal to the ground truth: each saved polygon covers its label polygon (IoU > 0.8;
    the masks are rebuilt from quarter-resolution label masks)."""
    import cv2
    import numpy as np

    import yoloseg.engine.val_masks as val_masks_module

    if not compiled:
        monkeypatch.setattr(val_masks_module, "_compiled_crops", lambda *t: False)
    loader = _loader(synth_yaml, imgsz=160, batch=4)
    cfg = _cfg(data=str(synth_yaml), imgsz=160, batch=4, save_txt=True, save_conf=True, project=str(tmp_path),
               name="v", exist_ok=False, split="val", device="cpu", half=False)
    v = Validator(cfg)
    v(model=GroundTruthModel(loader))
    labels_dir = tmp_path / "v" / "labels"
    files = sorted(labels_dir.glob("*.txt"))
    assert len(files) == 6
    gt_dir = Path(synth_yaml).parent / "labels" / "val"
    ious = []
    for f in files:
        got = [ln.split() for ln in f.read_text().splitlines()]
        want = [ln.split() for ln in (gt_dir / f.name).read_text().splitlines()]
        assert len(got) == len(want)
        for g in got:
            c, pts, conf = int(g[0]), np.array(g[1:-1], float).reshape(-1, 2), float(g[-1])
            assert 0 < conf <= 1
            canvas_g = np.zeros((160, 160), np.uint8)
            cv2.fillPoly(canvas_g, [np.round(pts * 160).astype(np.int32)], 1)
            best = 0.0
            for w in want:
                if int(w[0]) != c:
                    continue
                canvas_w = np.zeros((160, 160), np.uint8)
                cv2.fillPoly(canvas_w, [np.round(np.array(w[1:], float).reshape(-1, 2) * 160).astype(np.int32)], 1)
                best = max(best, (canvas_g & canvas_w).sum() / max((canvas_g | canvas_w).sum(), 1))
            ious.append(best)
    assert len(ious) > 6 and min(ious) > 0.8
