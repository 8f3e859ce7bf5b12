"""Data tools speed: `yoloseg check`, `convert yolo2coco` and `convert masks` against the training label scan.

Data: a synthetic-shapes set of YOLOSEG_BENCH_N images (default 1000; 80 % train, 20 % val, 320x320, 1-4
instances each), generated once into YOLOSEG_BENCH_DIR (default: a pytest temporary folder), or the data YAML
named by YOLOSEG_BENCH_DATA. References measured in the same run:

- check and yolo2coco: the label scan that training runs on the same files (`scan_labels(cache=False)`), what
  both tools build on;
- convert masks: cv2.findContours (RETR_CCOMP, outer borders and holes) on each instance of each mask image,
  tracing only, nothing joined or written.

Run: `.venv/bin/pytest bench/bench_data_tools.py --benchmark-only` (YOLOSEG_BENCH_N=5000 for the large case).
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from yoloseg.data.augment_polygons import Polygons, rasterize_overlap
from yoloseg.data.check import check_dataset
from yoloseg.data.coco_export import yolo_to_coco
from yoloseg.data.labels import check_image, parse_label_file, scan_labels
from yoloseg.data.masks import masks_to_yolo
from yoloseg.data.yaml import check_data_yaml, img2label_paths, list_image_files


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    if os.environ.get("YOLOSEG_BENCH_DATA"):
        return Path(os.environ["YOLOSEG_BENCH_DATA"])
    from yoloseg.data.synthetic import ensure_synthetic_shapes

    n = int(os.environ.get("YOLOSEG_BENCH_N", "1000"))
    root = Path(os.environ.get("YOLOSEG_BENCH_DIR") or tmp_path_factory.mktemp("synth"))
    return ensure_synthetic_shapes(root, n_train=n - n // 5, n_val=n // 5)


@pytest.fixture(scope="module")
def masks(data, tmp_path_factory):
    """Instance-id PNGs of the train split rendered from its labels, and the class mapping."""
    out = tmp_path_factory.mktemp("masks")
    cfg = check_data_yaml(data)
    lines = []
    for f in list_image_files(cfg["train"]):
        (h, w), _, _ = check_image(f)
        cls, polys, _, _ = parse_label_file(img2label_paths([f])[0], cfg["nc"])
        ids = rasterize_overlap(Polygons.from_list(polys, scale=(w, h)), (h, w), ratio=1)
        cv2.imwrite(str(out / f"{Path(f).stem}.png"), ids.astype(np.uint16))
        lines.append(f"{Path(f).stem}: {{{', '.join(f'{k + 1}: {c}' for k, c in enumerate(cls))}}}")
    (out / "classes.yaml").write_text("\n".join(lines) + "\n")
    return out


def _scan(data):
    cfg = check_data_yaml(data)
    for split in ("train", "val"):
        scan_labels(list_image_files(cfg[split]), cfg["nc"], cache=False)


@pytest.mark.parametrize("name", ["training_scan", "check"])
def test_check(benchmark, data, name):
    fn = (lambda: _scan(data)) if name == "training_scan" else (lambda: check_dataset(data))
    benchmark.pedantic(fn, rounds=3, warmup_rounds=1)


def test_yolo2coco(benchmark, data, tmp_path):
    def run():
        for s in ("train", "val"):
            yolo_to_coco(data, s, tmp_path / f"{s}.json", verbose=False)

    benchmark.pedantic(run, rounds=3, warmup_rounds=1)


def _trace_reference(folder: Path):
    for p in sorted(folder.glob("*.png")):
        img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        for v in np.unique(img)[1:]:
            cv2.findContours((img == v).astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)


@pytest.mark.parametrize("name", ["findContours_reference", "convert_masks"])
def test_convert_masks(benchmark, masks, tmp_path, name):
    if name == "convert_masks":
        fn = lambda: masks_to_yolo(masks, tmp_path / "labels", "instance", masks / "classes.yaml", verbose=False)  # noqa: E731
    else:
        fn = lambda: _trace_reference(masks)  # noqa: E731
    benchmark.pedantic(fn, rounds=3, warmup_rounds=1)
