"""Predict speed: the whole per-image postprocess, yoloseg.ops vs the pure-torch yoloseg.ops.reference.

Case: the trained fixture model yolo11n-seg-synth3-e100 on coffee.png (600x400 -> 448x640 input) at
conf=0.001, iou=0.7, max_det=300: 300 detections with masks. "Postprocess" is everything after the
forward pass that a user gets in Results: NMS, mask decoding at the input size, the empty-mask
filter, box scaling to the original image, and the polygons of every mask ("largest" contour,
mapped to original pixels). Both paths run the same code (`segment_postprocess`) and differ only
in the kernel module they are given. Inference is the fused model's forward on the same input.

Timed with 1 thread and with torch's default thread count. The A/B ratio is the median over
interleaved runs (A B A B ...), which holds up on a busy machine better than separate medians.

    pytest bench/bench_predict.py --benchmark-only -s      # pytest-benchmark tables + ratio report
    python bench/bench_predict.py [--rounds 7]             # the ratio report only

Targets (issue 3): postprocess <= 0.15x the reference path, and < 25% of inference time.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
COFFEE = SHARED / "images" / "coffee.png"
SYNTH3 = SHARED / "ultralytics" / "yolo11n-seg-synth3-e100.pt"
CONF, IOU, MAX_DET = 0.001, 0.7, 300


def setup_case():
    """(fused model, input x, (pred, protos), orig_shape) for coffee.png with the synth3 model."""
    import cv2

    from yoloseg.checkpoints import load_checkpoint
    from yoloseg.data.letterbox import LetterBox

    model = load_checkpoint(SYNTH3)[0].fuse().eval()
    img = cv2.imread(str(COFFEE))
    lb, _ = LetterBox(640, auto=True, stride=32)(img)
    x = torch.from_numpy(lb[..., ::-1].copy()).permute(2, 0, 1)[None].float() / 255
    with torch.inference_mode():
        preds = model(x)
    return model, x, (preds[0].clone(), preds[1].clone()), img.shape[:2]


def whole_postprocess(preds, input_shape, orig_shape, ops):
    """NMS + masks + box scaling + polygons for one image; returns (boxes, masks, polygons)."""
    from yoloseg.engine.predictor import segment_postprocess
    from yoloseg.engine.results import Masks, polygons_to_image
    from yoloseg.ops import reference

    (out,) = segment_postprocess(
        preds, input_shape, [orig_shape], conf=CONF, iou=IOU, max_det=MAX_DET, retina_masks=False, ops=ops,
        crops=ops is not reference,  # what the predictor asks for: masks kept as box crops
    )
    masks = out["masks"]
    if masks is None:
        return out["boxes"], masks, []
    if ops is not reference:  # what Results.masks.xy runs: traced from the crops, one flat mapping pass
        return out["boxes"], masks, Masks(masks, orig_shape, "largest", out["mask_boxes"]).xy
    polys = ops.masks_to_polygons(masks, strategy="largest")
    return out["boxes"], masks, polygons_to_image(polys, masks.shape[1:], orig_shape)


def _time(fn, reps=1):
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps * 1e3


def ratio_report(rounds: int = 5, thread_counts=(1, None)) -> list[dict]:
    """Interleaved timings (ms) and ratios for each thread count; prints a table and returns rows."""
    from yoloseg import ops
    from yoloseg.ops import reference

    model, x, preds, orig = setup_case()
    shape = tuple(x.shape[-2:])
    default_threads = torch.get_num_threads()
    rows = []
    try:
        for nt in thread_counts:
            torch.set_num_threads(nt or default_threads)
            with torch.inference_mode():
                n_det = len(whole_postprocess(preds, shape, orig, ops)[0])
                whole_postprocess(preds, shape, orig, reference)  # warm-up both paths
                model(x)
                ours, ref, inf = [], [], []
                for _ in range(rounds):
                    ours.append(_time(lambda: whole_postprocess(preds, shape, orig, ops)))
                    ref.append(_time(lambda: whole_postprocess(preds, shape, orig, reference)))
                    inf.append(_time(lambda: model(x)))
            ratios = [a / b for a, b in zip(ours, ref)]
            shares = [a / c for a, c in zip(ours, inf)]
            rows.append(
                dict(
                    threads=torch.get_num_threads(), detections=n_det,
                    ours_ms=statistics.median(ours), reference_ms=statistics.median(ref),
                    inference_ms=statistics.median(inf), ratio=statistics.median(ratios),
                    share_of_inference=statistics.median(shares),
                )
            )
    finally:
        torch.set_num_threads(default_threads)
    print(f"\npostprocess per image, coffee.png 448x640, synth3, conf={CONF} ({rounds} interleaved rounds, medians)")
    print(f"{'threads':>7} {'dets':>5} {'ours ms':>9} {'ref ms':>9} {'ratio':>7} {'infer ms':>9} {'post/infer':>10}")
    for r in rows:
        print(
            f"{r['threads']:>7} {r['detections']:>5} {r['ours_ms']:>9.1f} {r['reference_ms']:>9.1f} "
            f"{r['ratio']:>7.3f} {r['inference_ms']:>9.1f} {r['share_of_inference']:>10.3f}"
        )
    print("targets: ratio <= 0.15, post/infer < 0.25")
    return rows


# ------------------------------------------------------------------------------------------- pytest
pytestmark = pytest.mark.skipif(not (COFFEE.exists() and SYNTH3.exists()), reason="no shared fixtures")


@pytest.fixture(scope="module")
def case():
    return setup_case()


@pytest.fixture(params=[1, None], ids=["1thread", "default_threads"])
def threads(request):
    n = torch.get_num_threads()
    torch.set_num_threads(request.param or n)
    yield torch.get_num_threads()
    torch.set_num_threads(n)


@pytest.mark.parametrize("path", ["ours", "reference"])
def test_postprocess(benchmark, case, threads, path):
    from yoloseg import ops
    from yoloseg.ops import reference

    _, x, preds, orig = case
    mod = ops if path == "ours" else reference
    benchmark.extra_info.update(threads=threads, path=path)
    with torch.inference_mode():
        boxes, masks, polys = benchmark.pedantic(
            whole_postprocess, args=(preds, tuple(x.shape[-2:]), orig, mod), rounds=5, iterations=1, warmup_rounds=1
        )
    assert len(boxes) == len(masks) == len(polys) == 300


def test_inference(benchmark, case, threads):
    model, x, _, _ = case
    benchmark.extra_info.update(threads=threads)
    with torch.inference_mode():
        benchmark.pedantic(model, args=(x,), rounds=5, iterations=1, warmup_rounds=1)


def test_ratio_report():
    rows = ratio_report(rounds=5)
    assert all(r["detections"] == 300 for r in rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    ratio_report(rounds=args.rounds)


if __name__ == "__main__":
    main()
