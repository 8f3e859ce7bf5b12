"""Seed inputs of the fuzz corpus, written in the field layout the targets read (targets.Data).

``python tests/fuzz/seeds.py`` (re)writes them into tests/fuzz/corpus/<target>/seed-<name>; the fuzzer
adds what it finds beside them. The first two are the calls that used to kill the process.
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import numpy as np

CORPUS = Path(__file__).resolve().parent / "corpus"


def u32(v: int) -> bytes:
    return struct.pack("<I", v)


def f32(*vals) -> bytes:
    return np.asarray(vals, np.float32).tobytes()


def pick(value: int, lo: int) -> bytes:  # the u32 that Data.int(lo, hi) maps to value
    return u32(value - lo)


def _grid(n):
    i = np.arange(n, dtype=np.float32)
    x, y = (i % 25) * 10, (i // 25) * 10
    boxes = np.stack([x, y, x + 15, y + 15], 1)
    scores = np.random.default_rng(0).random(n).astype(np.float32)
    return boxes, scores


def nms_minus_inf() -> bytes:
    """torch.ops.yoloseg.nms with one -inf coordinate among 500 boxes (was SIGABRT)."""
    boxes, scores = _grid(500)
    boxes[123, 2] = -np.inf
    return pick(500, 0) + boxes.tobytes() + scores.tobytes() + f32(0.5)


def process_mask_nan() -> bytes:
    """torch.ops.yoloseg.process_mask with a NaN box coordinate (was SIGSEGV)."""
    protos = np.random.default_rng(1).standard_normal((4, 12, 12)).astype(np.float32)
    coeffs = np.ones((1, 4), np.float32)
    return (pick(1, 0) + pick(4, 0) + pick(12, 0) + pick(12, 0) + pick(1, 0) + protos.tobytes() + coeffs.tobytes()
            + f32(np.nan, 0, 10, 10) + pick(64, -2) + pick(64, -2))


def nms_plain() -> bytes:
    boxes, scores = _grid(300)
    return pick(300, 0) + boxes.tobytes() + scores.tobytes() + f32(0.5)


def masks_plain() -> bytes:
    protos = np.random.default_rng(2).standard_normal((4, 12, 12)).astype(np.float32)
    coeffs = np.random.default_rng(3).standard_normal((2, 4)).astype(np.float32)
    return (pick(1, 0) + pick(4, 0) + pick(12, 0) + pick(12, 0) + pick(2, 0) + protos.tobytes() + coeffs.tobytes()
            + f32(1, 1, 30, 40, 0, 0, 64, 64) + pick(48, -2) + pick(48, -2))


def c_decode_plain() -> bytes:
    protos = np.random.default_rng(4).standard_normal((4, 12, 12)).astype(np.float32)
    coeffs = np.random.default_rng(5).standard_normal((2, 4)).astype(np.float32)
    head = b"".join(pick(v, lo) for v, lo in [(4, 0), (12, 0), (12, 0), (2, 0), (48, -2), (48, -2), (1, -1),
                                             (0, -2), (0, -2), (12, -1), (12, -1)])
    return head + protos.tobytes() + coeffs.tobytes() + pick(1, 0) + f32(1, 1, 30, 40, 0, 0, 48, 48) + pick(2, -1)


def coco_json() -> bytes:
    doc = {
        "images": [{"id": 1, "file_name": "a.jpg", "height": 20, "width": 30}],
        "categories": [{"id": 3, "name": "x"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 3, "iscrowd": 0, "area": 50, "bbox": [1, 1, 10, 5],
             "segmentation": [[1, 1, 11, 1, 11, 6, 1, 6]]},
            {"id": 2, "image_id": 1, "category_id": 3, "iscrowd": 1, "area": 4, "bbox": [0, 0, 2, 2],
             "segmentation": {"size": [20, 30], "counts": [0, 2, 18, 2, 578]}},
        ],
    }
    return json.dumps(doc).encode()


def coco_eval_pair() -> bytes:
    gt = coco_json()
    dt = json.dumps([{"image_id": 1, "category_id": 3, "score": 0.9, "bbox": [1, 1, 10, 5],
                      "segmentation": {"size": [20, 30], "counts": "0:2"}}]).encode()
    return pick(1, 0) + pick(len(gt), 0) + gt + dt


SEEDS = {
    "op_nms": {"minus-inf-box": nms_minus_inf(), "plain": nms_plain()},
    "op_batched_nms": {"plain": nms_plain() + np.arange(300, dtype=np.int64).tobytes()},
    "op_process_mask": {"nan-box": process_mask_nan(), "plain": masks_plain()},
    "op_process_mask_native": {"plain": masks_plain()[4:]},
    "c_nms": {"minus-inf-box": nms_minus_inf(), "plain": nms_plain()},
    "c_decode_masks": {"plain": c_decode_plain()},
    "c_decode_mask_crops": {"plain": c_decode_plain()},
    "c_coco_evaluate_json": {"plain": coco_eval_pair()},
    "coco_json": {"plain": coco_json(), "truncated": coco_json()[:90]},
    "label_file": {
        "plain": b"0 0.1 0.1 0.5 0.1 0.5 0.5\n1 0.2 0.2 0.3 0.2 0.3 0.3\n",
        "bad-values": b"0 nan 0.1 0.5 0.1 0.5 0.5\n0 inf 0 1 0 1 1\ninf 0 0 1 0 1 1\nnan 0 0 1 0 1 1\n"
                      b"-1 0 0 1 0 1 1\n80 0 0 1 0 1 1\n0 1e30 0 1 0 1 1\n0 0.1 0.1 0.5\n0 0.1 0.2 0.3\n",
    },
    "data_yaml": {"plain": b"path: .\ntrain: images\nval: images\nnames: [a, b]\n", "odd": b"names: {x: 1}\nnc: -3\n"},
    "image_decode": {"empty": b"", "jpeg-head": b"\xff\xd8\xff\xe0" + bytes(40), "png-head": b"\x89PNG\r\n\x1a\n"},
    "video_decode": {"empty": b"", "junk": b"\x00\x00\x00\x18ftypmp42" + bytes(64)},
    "checkpoint": {"empty-zip": pick(0, 0) + b"", "pickle-int": pick(0, 0) + b"\x80\x02K\x05.",
                   "odd-opcode": pick(0, 0) + b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00lsq\x00\x85R.",
                   "raw": pick(1, 0) + b"PK\x03\x04" + bytes(30)},
}


def write_seeds(corpus: Path = CORPUS) -> int:
    from targets import TARGETS  # noqa: PLC0415  (run as a script from this folder)

    count = 0
    for name in TARGETS:
        folder = corpus / name
        folder.mkdir(parents=True, exist_ok=True)
        seeds = SEEDS.get(name) or {"zeros": bytes(64)}
        for label, data in seeds.items():
            (folder / f"seed-{label}").write_bytes(data)
            count += 1
    return count


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    print(f"{write_seeds()} seeds written under {CORPUS}")
