"""Mask decoding and polygon speed: yoloseg's C++ kernels vs the pure-torch reference.

300 detections with smooth prototypes (like a trained model's) and boxes of 5..50 % of the image
side at random places:
- process_mask: 160x160 protos -> 640x640 network input;
- process_mask_native: protos of a 640x640 letterbox of a 1080x810 (h x w) photo -> 1080x810;
- val masks: 300 masks decoded at a 480x640 original and RLE-encoded, kernel crops vs the numpy path;
- masks_to_polygons: the 300 masks of the 640x640 case and the 300 real masks of the trained
  synth3 fixture ("largest" and "all"), with and without the `boxes` hint, and traced from the packed
  crops of `decode_mask_crops` (what predict runs).
1 thread and the default thread count.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from yoloseg import ops
from yoloseg.ops import reference

N = 300
FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "ultralytics"


def detections(n, proto_hw, out_hw, seed=0):
    g = torch.Generator().manual_seed(seed)
    mh, mw = proto_hw
    h, w = out_hw
    protos = F.interpolate(torch.randn(1, 32, 12, 12, generator=g), size=(mh, mw), mode="bilinear")[0]
    coeffs = torch.randn(n, 32, generator=g)
    centre = torch.rand(n, 2, generator=g) * torch.tensor([w, h])
    side = (torch.rand(n, 2, generator=g) * 0.45 + 0.05) * torch.tensor([w, h])
    boxes = torch.cat([centre - side / 2, centre + side / 2], 1)
    return protos, coeffs, ops.clip_boxes(boxes, out_hw)


def impl(name):
    return ops if name == "yoloseg" else reference


def rounds(name):
    return 3 if name == "reference" else 10


@pytest.mark.parametrize("name", ["yoloseg", "reference"])
def test_process_mask_640(benchmark, threads, name):
    benchmark.group = f"process_mask 300 -> 640x640 threads={threads}"
    protos, coeffs, boxes = detections(N, (160, 160), (640, 640))
    fn = impl(name).process_mask
    benchmark.pedantic(fn, (protos, coeffs, boxes, (640, 640)), rounds=rounds(name), warmup_rounds=1)


@pytest.mark.parametrize("name", ["yoloseg", "reference"])
def test_process_mask_native_1080x810(benchmark, threads, name):
    benchmark.group = f"process_mask_native 300 -> 1080x810 threads={threads}"
    protos, coeffs, boxes = detections(N, (160, 160), (1080, 810))
    fn = impl(name).process_mask_native
    benchmark.pedantic(fn, (protos, coeffs, boxes, (1080, 810)), rounds=rounds(name), warmup_rounds=1)


def fixture_detections():
    """The 300 real detections of the trained synth3 fixture (448x640 input), if present."""
    path = FIXTURES / "yolo11n-seg-synth3-e100-predict.npz"
    if not path.exists():
        pytest.skip(f"fixture {path} not available")
    z = np.load(path)
    det, proto = torch.from_numpy(z["nms_out"]), torch.from_numpy(z["proto"][0])
    return proto, det[:, 6:], det[:, :4]


@pytest.mark.parametrize("source", ["synthetic640", "fixture448x640"])
@pytest.mark.parametrize("strategy", ["largest", "all"])
@pytest.mark.parametrize("name", ["yoloseg-crops", "yoloseg+boxes", "yoloseg", "reference"])
def test_masks_to_polygons(benchmark, threads, name, strategy, source):
    benchmark.group = f"masks_to_polygons 300 {source} {strategy} threads={threads}"
    if source == "synthetic640":
        protos, coeffs, boxes = detections(N, (160, 160), (640, 640))
    else:
        protos, coeffs, boxes = fixture_detections()
    shape = (protos.shape[1] * 4, protos.shape[2] * 4)
    if name == "yoloseg-crops":  # what predict runs: traced from the packed crops the decoder wrote
        from yoloseg.ops.mask_crops import decode_mask_crops

        crops = decode_mask_crops(protos, coeffs, boxes, shape)
        benchmark.pedantic(crops.polygons_flat, (strategy,), rounds=10, warmup_rounds=1)
        return
    masks = ops.process_mask(protos, coeffs, boxes, shape)
    if name == "yoloseg+boxes":  # the caller passes the boxes the masks were cropped to
        benchmark.pedantic(ops.masks_to_polygons, (masks, strategy, boxes), rounds=10, warmup_rounds=1)
    else:
        fn = impl(name).masks_to_polygons
        benchmark.pedantic(fn, (masks, strategy), rounds=rounds(name), warmup_rounds=1)


@pytest.mark.parametrize("path", ["kernel-crops", "numpy"])
def test_val_masks_to_original_rle(benchmark, threads, path, monkeypatch):
    """What val does per image: 300 masks of a 480x640 photo (letterboxed to 480x640 input) decoded at the
    original size and RLE-encoded. kernel-crops: the mask kernel into box crops, encoded from the crops;
    numpy: the portable path (the two resizes composed per axis in numpy, box windows encoded)."""
    import yoloseg.engine.val_masks as val_masks_module

    benchmark.group = f"val masks_to_original 300 -> 480x640 RLE threads={threads}"
    if path == "numpy":
        monkeypatch.setattr(val_masks_module, "_compiled_crops", lambda *t: False)
    protos, coeffs, boxes = detections(N, (120, 160), (480, 640))
    args = (protos, coeffs, boxes, (480, 640), ((1.0, 1.0), (0, 0)), (480, 640))
    benchmark.pedantic(val_masks_module.masks_to_original, args, rounds=10, warmup_rounds=1)
