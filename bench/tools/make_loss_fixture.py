"""Write the segmentation-loss parity fixture into tests/fixtures/loss/.

Development tooling only: it needs the side-by-side peers environment with ultralytics installed and is
never imported by yoloseg or by its tests. Run it with

    YOLO_OFFLINE=1 YOLO_AUTOINSTALL=0 YOLO_CONFIG_DIR=$(mktemp -d) \
        ../peers-venv/bin/python bench/tools/make_loss_fixture.py   (a venv with ultralytics; see bench/README.md)

What it stores
- ``seg_loss.npz``: the raw train-mode head outputs of a randomly initialised yolo11n-seg (nc=3, seed 0) on a
  batch of two 128x160 noise images, rounded to float16 (the reference losses are computed from the rounded
  values, so nothing is lost), plus one set of targets per case and the gradients of the total loss of the
  ``overlap`` case with respect to the three prediction tensors (float32; the protos gradient in float16).
- ``seg_loss.json``: the reference loss items (box, seg, cls, dfl after the gains) and total per case, the
  hyperparameters, the strides and the library versions that produced them.

The reference is ultralytics' own segmentation criterion evaluated with one thread in float32.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
OUT_DIR = ROOT / "tests" / "fixtures" / "loss"
NC = 3
IMG_HW = (128, 160)
BATCH = 2
HYP = {"box": 7.5, "cls": 0.5, "dfl": 1.5}


def ellipse_mask(h: int, w: int, box_xyxy: np.ndarray, fill: float = 0.9) -> np.ndarray:
    """Boolean (h, w) ellipse inscribed in a pixel box, sampled at pixel centres."""
    x1, y1, x2, y2 = box_xyxy
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    rx, ry = max((x2 - x1) / 2 * fill, 0.6), max((y2 - y1) / 2 * fill, 0.6)
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0


def make_targets(boxes_per_image: list[np.ndarray], classes: list[np.ndarray], mask_hw: tuple[int, int]):
    """Targets in the training batch layout from per-image pixel xyxy boxes.

    Returns batch_idx (M,), cls (M, 1), bboxes (M, 4) normalized xywh, instance masks (M, h, w) at mask_hw and
    overlap index masks (B, h, w) where value j + 1 marks the image's j-th instance (later instances drawn on
    top of earlier ones).
    """
    H, W = IMG_HW
    mh, mw = mask_hw
    sx, sy = mw / W, mh / H
    bidx, cls, xywhn, inst, overlap = [], [], [], [], []
    for i, (boxes, c) in enumerate(zip(boxes_per_image, classes)):
        ov = np.zeros((mh, mw), np.int32)
        for j, b in enumerate(boxes):
            m = ellipse_mask(mh, mw, b * np.array([sx, sy, sx, sy]))
            inst.append(m)
            ov[m] = j + 1
            x1, y1, x2, y2 = b
            xywhn.append([(x1 + x2) / 2 / W, (y1 + y2) / 2 / H, (x2 - x1) / W, (y2 - y1) / H])
            bidx.append(i)
            cls.append(c[j])
        overlap.append(ov)
    m = len(bidx)
    return {
        "batch_idx": np.asarray(bidx, np.float32).reshape(m),
        "cls": np.asarray(cls, np.float32).reshape(m, 1),
        "bboxes": np.asarray(xywhn, np.float32).reshape(m, 4),
        "masks_instance": np.asarray(inst, np.uint8).reshape(m, mh, mw),
        "masks_overlap": np.stack(overlap).astype(np.int32),
    }


def scene_boxes():
    """Pixel xyxy boxes: overlapping objects, a tiny one (< 16 px sides), one touching the border."""
    img0 = np.array(
        [
            [10, 12, 70, 90],
            [40, 30, 120, 110],
            [50, 40, 62, 50],  # tiny: sides below the assigner's minimum size
            [100, 5, 158, 60],
            [0, 70, 45, 127],
            [20, 20, 140, 120],  # large, encloses several others
            [85, 80, 115, 100],
            [128, 90, 150, 126],
        ],
        np.float32,
    )
    img1 = np.array([[30, 20, 90, 80], [60, 50, 150, 120], [5, 5, 25, 30]], np.float32)
    return [img0, img1], [np.array([0, 1, 2, 0, 1, 2, 0, 1]), np.array([2, 0, 1])]


def crowd_boxes(n: int, seed: int) -> np.ndarray:
    """n random pixel xyxy boxes with sides of 3 to 40 px, inside the image."""
    H, W = IMG_HW
    rng = np.random.default_rng(seed)
    wh = rng.uniform(3, 40, size=(n, 2))
    x1 = rng.uniform(0, W - wh[:, 0])
    y1 = rng.uniform(0, H - wh[:, 1])
    return np.stack([x1, y1, x1 + wh[:, 0], y1 + wh[:, 1]], 1).astype(np.float32)


def main() -> int:
    from ultralytics import __version__ as ul_version
    from ultralytics.cfg import get_cfg
    from ultralytics.utils.loss import v8SegmentationLoss

    torch.set_num_threads(1)
    from ultralytics.nn.tasks import SegmentationModel

    torch.manual_seed(0)
    model = SegmentationModel("yolo11n-seg.yaml", nc=NC, verbose=False)
    model.train()
    gen = torch.Generator().manual_seed(0)
    img = torch.rand(BATCH, 3, *IMG_HW, generator=gen)
    with torch.no_grad():
        out = model(img)
    head = model.model[-1]
    reg_max, nm = head.reg_max, head.nm
    bs = img.shape[0]
    # The training dict carries the neck features under "feats"; rebuild the per-level head outputs
    # (B, 4*reg_max + nc, Hi, Wi) that yoloseg's loss consumes, and round everything to float16.
    sizes = [f.shape[2:] for f in out["feats"]]
    boxes = out["boxes"].half().float()
    scores = out["scores"].half().float()
    coeffs = out["mask_coefficient"].half().float()
    protos = out["proto"].half().float()
    levels, start = [], 0
    for h, w in sizes:
        n = h * w
        lv = torch.cat((boxes[..., start : start + n], scores[..., start : start + n]), 1)
        levels.append(lv.view(bs, 4 * reg_max + NC, h, w))
        start += n
    mask_hw = tuple(protos.shape[2:])

    boxes_px, classes = scene_boxes()
    full = make_targets(boxes_px, classes, mask_hw)
    only0 = make_targets([boxes_px[0], np.zeros((0, 4), np.float32)], [classes[0], np.zeros(0)], mask_hw)
    hires = make_targets(boxes_px, classes, IMG_HW)  # masks at input resolution: protos get upsampled

    nothing = make_targets([np.zeros((0, 4), np.float32)] * 2, [np.zeros(0)] * 2, mask_hw)
    cases = {
        "overlap": dict(t=full, overlap=True),
        "no_overlap": dict(t=full, overlap=False),
        "empty_image": dict(t=only0, overlap=True),
        "no_targets": dict(t=nothing, overlap=True),
        "hires_masks_no_overlap": dict(t=hires, overlap=False),
        # feats times 4 (exact in float): peakier distance bins and scores, a different assignment
        "overlap_sharp": dict(t=full, overlap=True, feat_scale=4.0),
        # 300 instances in one image: index masks beyond uint8 and heavy assignment conflicts
        "crowd_overlap": dict(
            t=make_targets([crowd_boxes(300, 1), crowd_boxes(5, 2)], [np.arange(300) % NC, np.arange(5) % NC], mask_hw),
            overlap=True,
        ),
    }

    arrays = {f"feat{i}": lv.half().numpy() for i, lv in enumerate(levels)}
    arrays["coeffs"] = coeffs.half().numpy()
    arrays["protos"] = protos.half().numpy()
    meta = {
        "producer": {"ultralytics": ul_version, "torch": torch.__version__, "threads": 1},
        "model": "yolo11n-seg.yaml",
        "nc": NC,
        "reg_max": reg_max,
        "nm": nm,
        "stride": head.stride.tolist(),
        "img_hw": list(IMG_HW),
        "hyp": HYP,
        "items_order": ["box", "seg", "cls", "dfl"],
        "cases": {},
    }

    for name, case in cases.items():
        t = case["t"]
        args = get_cfg(overrides={**HYP, "overlap_mask": case["overlap"]})
        model.args = args
        crit = v8SegmentationLoss(model)
        masks = t["masks_overlap"] if case["overlap"] else t["masks_instance"]
        batch = {
            "batch_idx": torch.from_numpy(t["batch_idx"]),
            "cls": torch.from_numpy(t["cls"]),
            "bboxes": torch.from_numpy(t["bboxes"]),
            "masks": torch.from_numpy(masks),
        }
        scale = case.get("feat_scale", 1.0)
        lv = [(x * scale).requires_grad_(True) for x in levels]
        co = coeffs.clone().requires_grad_(True)
        pr = protos.clone().requires_grad_(True)
        flat = torch.cat([x.view(bs, 4 * reg_max + NC, -1) for x in lv], 2)
        preds = {
            "boxes": flat[:, : 4 * reg_max],
            "scores": flat[:, 4 * reg_max :],
            "feats": lv,
            "mask_coefficient": co,
            "proto": pr,
        }
        loss_vec, items = crit(preds, batch)
        total = loss_vec.sum()
        vals = list(items.values())  # box, seg, cls, dfl, semantic
        names = list(items.keys())
        assert names[:4] == ["box_loss", "seg_loss", "cls_loss", "dfl_loss"], names
        meta["cases"][name] = {
            "overlap_mask": case["overlap"],
            "feat_scale": scale,
            "items": [float(v) for v in vals[:4]],
            "total": float(total.detach()),
            "dropped_item": {names[4]: float(vals[4])} if len(vals) > 4 else {},
            "n_targets": int(len(t["batch_idx"])),
        }
        for k in ("batch_idx", "cls", "bboxes"):
            arrays[f"{name}/{k}"] = t[k]
        arrays[f"{name}/masks"] = masks
        if name == "overlap":
            total.backward()
            for i, x in enumerate(lv):
                arrays[f"{name}/grad_feat{i}"] = x.grad.numpy().astype(np.float32)
            arrays[f"{name}/grad_coeffs"] = co.grad.numpy().astype(np.float32)
            # float16 keeps the file small; compare it with a float16-sized tolerance
            arrays[f"{name}/grad_protos"] = pr.grad.numpy().astype(np.float16)
        print(name, meta["cases"][name])

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT_DIR / "seg_loss.npz", **arrays)
    (OUT_DIR / "seg_loss.json").write_text(json.dumps(meta, indent=2) + "\n")
    print("wrote", OUT_DIR, (OUT_DIR / "seg_loss.npz").stat().st_size, "bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
