"""The data set on real photos, checked against the same polygons in COCO JSON (an independent oracle).

Uses ../shared/data/coco_permissive_seg (skipped when absent): every label box, mapped back to original
pixels through ``ratio_pad``, must match an annotation's ``bbox``; every instance mask must match the COCO
polygons filled at full resolution and letterboxed by OpenCV.
"""

import json
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest

from yoloseg.data import build_dataset, check_data_yaml

ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco_permissive_seg"
pytestmark = pytest.mark.skipif(not (ROOT / "data.yaml").is_file(), reason="coco_permissive_seg not available")


def _coco_by_file(split):
    coco = json.loads((ROOT / "annotations" / f"instances_{split}.json").read_text())
    files = {im["id"]: im["file_name"] for im in coco["images"]}
    anns = defaultdict(list)
    for a in coco["annotations"]:
        anns[files[a["image_id"]]].append(a)
    return anns


def test_val_boxes_and_masks_match_coco_json():
    data = check_data_yaml(ROOT / "data.yaml")
    ds = build_dataset(data, "val", {"imgsz": 320, "batch": 1, "overlap_mask": False}, rect=False)
    anns = _coco_by_file("val")
    n_checked = n_masks = 0
    for i in range(len(ds)):
        s = ds[i]
        name = Path(s["im_file"]).name
        h0, w0 = s["ori_shape"]
        (gh, gw), (px, py) = s["ratio_pad"]
        H, W = s["img"].shape[1:]
        truth = anns[name]
        assert len(s["cls"]) == len(truth), name
        xywh = s["bboxes"].numpy() * [W, H, W, H]
        boxes = np.stack([xywh[:, 0] - xywh[:, 2] / 2, xywh[:, 1] - xywh[:, 3] / 2,
                          xywh[:, 0] + xywh[:, 2] / 2, xywh[:, 1] + xywh[:, 3] / 2], 1)
        orig = (boxes - [px, py, px, py]) / [gw, gh, gw, gh]
        used = set()
        for k, (box, c) in enumerate(zip(orig, s["cls"].numpy()[:, 0])):
            cands = [(np.abs(box - [a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                                    a["bbox"][1] + a["bbox"][3]]).max(), j)
                     for j, a in enumerate(truth) if a["category_id"] == int(c) + 1 and j not in used]
            err, j = min(cands)
            assert err <= 2.0, (name, k, box, truth[j]["bbox"])
            used.add(j)
            n_checked += 1
            # mask oracle: COCO polygons at full resolution, resized + padded by OpenCV, averaged to 1/4
            full = np.zeros((h0, w0), np.uint8)
            for part in truth[j]["segmentation"]:
                pts = np.asarray(part, np.float64).reshape(-1, 2) - 0.5
                cv2.fillPoly(full, [np.round(pts * 16).astype(np.int32)], 255, shift=4)
            rh, rw = s["resized_shape"]
            img = cv2.resize(full, (rw, rh), interpolation=cv2.INTER_AREA).astype(np.float32)
            img = cv2.copyMakeBorder(img, py, H - rh - py, px, W - rw - px, cv2.BORDER_CONSTANT, value=0)
            ref = cv2.resize(img, (W // 4, H // 4), interpolation=cv2.INTER_AREA) >= 127.5
            got = s["masks"][k].numpy().astype(bool)
            if ref.sum() >= 40:  # small objects are a handful of mask pixels: IoU is too coarse there
                iou = (ref & got).sum() / (ref | got).sum()
                assert iou > 0.8, (name, k, iou)
                n_masks += 1
    assert n_checked == sum(len(v) for v in anns.values())
    assert n_masks > 30
