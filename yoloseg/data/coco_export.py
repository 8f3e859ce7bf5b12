"""Export one split of a YOLO-seg data set as a COCO instances JSON (``yoloseg convert yolo2coco``).

The labels go through the training scan's checks (:func:`yoloseg.data.check.inspect_file`): instances the
training would drop are left out and reported per file; unreadable images are left out. For each image:
``id`` (the file stem when every stem is a distinct number, as in COCO, else 1, 2, ... in file order),
``file_name`` relative to the split's image folder (for a ``.txt`` list: to the data set root), ``width``/``height`` from the image. For each instance:
``segmentation`` one polygon in pixels (normalized coordinates times the image size; a multi-part label
polygon stays one polygon, its links add no area), ``area`` from the polygon (shoelace formula), ``bbox``
``[x, y, w, h]`` of the polygon, ``iscrowd`` 0, ``category_id`` class index + 1. ``categories`` lists every
class of ``names`` (id = index + 1), so `yoloseg convert coco` with its default ``classes="sorted"`` maps
them back to the same indices.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from yoloseg.data.yaml import SPLITS, check_data_yaml, img2label_paths, list_image_files
from yoloseg.utils.files import atomic_write_bytes, remove_partials

__all__ = ["ExportResult", "yolo_to_coco"]


@dataclass
class ExportResult:
    json_file: str
    n_images: int = 0
    n_annotations: int = 0
    problems: list = field(default_factory=list)

    def summary(self) -> str:
        return (f"{self.json_file}: {self.n_images} images, {self.n_annotations} annotations, "
                f"{len(self.problems)} problems (instances or images left out)")


def _pixels(poly: np.ndarray, w: int, h: int) -> np.ndarray:
    # float32 labels carry ~7 digits: rounding to the 6 decimals of a label file gives the written value back
    norm = np.round(poly.astype(np.float64), 6)
    return np.round(norm * (w, h), 6)


def _area(p: np.ndarray) -> float:
    x, y = p[:, 0], p[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _image_ids(im_files) -> list:
    stems = [Path(f).stem for f in im_files]
    if all(s.isdigit() for s in stems) and len({int(s) for s in stems}) == len(stems):
        return [int(s) for s in stems]
    return list(range(1, len(im_files) + 1))


def _file_name(im_file: str, roots: list) -> str:
    for r in roots:
        try:
            return Path(im_file).relative_to(r).as_posix()
        except ValueError:
            continue
    return Path(im_file).name


def yolo_to_coco(data, split: str = "val", out=None, workers: int | None = None, verbose: bool = True) -> ExportResult:
    """Write split ``split`` of the data YAML ``data`` as COCO instances JSON to ``out`` (default
    ``instances_<split>.json`` in the current folder). See the module docstring."""
    from yoloseg.data.check import _map, inspect_file

    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    cfg = check_data_yaml(data)
    if cfg.get(split) is None:
        raise ValueError(f"data YAML {cfg['yaml_file']} has no '{split}' split")
    names, nc = cfg["names"], cfg["nc"]
    out = Path(out if out is not None else f"instances_{split}.json").expanduser()
    im_files = list_image_files(cfg[split], what=f"{split} images")
    if not im_files:
        raise FileNotFoundError(f"{split} images: none found in {cfg[split]}")
    roots = [Path(p) for p in (cfg[split] if isinstance(cfg[split], list) else [cfg[split]]) if Path(p).is_dir()]
    roots.append(Path(cfg["path"]))
    items = _map(inspect_file, [(f, lb, nc) for f, lb in zip(im_files, img2label_paths(im_files))],
                 f"yolo2coco {split}", workers)
    res = ExportResult(str(out))
    images, anns = [], []
    for iid, it in zip(_image_ids(im_files), items):
        res.problems.extend(p for p in it.problems if p.kind not in ("no_label", "clipped", "truncated"))
        if it.shape is None:
            continue
        h, w = it.shape
        images.append({"id": iid, "file_name": _file_name(it.im_file, roots), "width": w, "height": h})
        for c, poly in zip(it.cls, it.polys):
            px = _pixels(poly, w, h)
            lo, hi = px.min(0), px.max(0)
            anns.append({
                "id": len(anns) + 1, "image_id": iid, "category_id": int(c) + 1,
                "segmentation": [px.ravel().tolist()], "area": round(_area(px), 6),
                "bbox": [float(lo[0]), float(lo[1]), round(float(hi[0] - lo[0]), 6), round(float(hi[1] - lo[1]), 6)],
                "iscrowd": 0,
            })
    doc = {
        "info": {"description": f"{Path(cfg['yaml_file']).name} split {split}, exported by yoloseg convert yolo2coco"},
        "images": images,
        "annotations": anns,
        "categories": [{"id": i + 1, "name": n, "supercategory": ""} for i, n in sorted(names.items())],
    }
    res.n_images, res.n_annotations = len(images), len(anns)
    remove_partials(Path(out).parent, [Path(out).name])  # left by an interrupted run
    atomic_write_bytes(out, json.dumps(doc, separators=(",", ":")).encode("utf-8"))
    if verbose:
        for p in res.problems[:20]:
            print(f"WARNING {p}", file=sys.stderr)
        if len(res.problems) > 20:
            print(f"WARNING ... and {len(res.problems) - 20} more", file=sys.stderr)
        print(res.summary(), file=sys.stderr)
    return res
