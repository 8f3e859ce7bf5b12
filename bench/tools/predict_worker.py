"""One side of bench/bench_cpp_pipeline.py: timed predict calls in a fresh process, per-stage milliseconds as JSON.

    python predict_worker.py yoloseg MODEL.torchscript IMAGE --configs 0.25:1,0.001:2 --iters 20
    python predict_worker.py ultralytics MODEL.pt IMAGE ...     # run with the peers' Python

For each conf:threads pair: torch.set_num_threads(threads), two warm-up calls, then `iters` calls of
`YOLO(model).predict(image_array, conf=..., iou=0.7, retina_masks=True)`; prints one JSON line with the
Results.speed stages of every call (preprocess = letterbox, inference, postprocess) and the detection count.
The image is decoded once, before timing, as the C++ side does. Imports nothing from the other library.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("impl", choices=["yoloseg", "ultralytics"])
    ap.add_argument("model")
    ap.add_argument("image")
    ap.add_argument("--configs", required=True, help="conf:threads,...")
    ap.add_argument("--iters", type=int, default=20)
    args = ap.parse_args()
    if args.impl == "ultralytics":
        os.environ.update(YOLO_OFFLINE="1", YOLO_AUTOINSTALL="0", YOLO_CONFIG_DIR=tempfile.mkdtemp())
    import cv2
    import torch

    if args.impl == "ultralytics":
        from ultralytics import YOLO
    else:
        from yoloseg import YOLO
    model = YOLO(args.model)
    img = cv2.imread(args.image)
    for item in args.configs.split(","):
        conf, threads = item.split(":")
        torch.set_num_threads(int(threads))
        kw = dict(conf=float(conf), iou=0.7, retina_masks=True, verbose=False, imgsz=640)
        for _ in range(2):
            model.predict(img, **kw)
        stages = {"preprocess": [], "inference": [], "postprocess": []}
        n = 0
        for _ in range(args.iters):
            (r,) = model.predict(img, **kw)
            for k in stages:
                stages[k].append(float(r.speed[k]))
            n = len(r.boxes) if r.boxes is not None else 0
        print(json.dumps({"conf": float(conf), "threads": torch.get_num_threads(), "detections": n, **stages}),
              flush=True)


if __name__ == "__main__":
    main()
