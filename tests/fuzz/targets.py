"""Fuzz targets: one function per door that takes outside input, each turning raw bytes into a call.

A target returns normally or raises one of the exceptions listed for it in ``CLEAN`` (a clear refusal:
ValueError naming the argument, and for file readers the errors they document). Anything else, and
any crash of the process, is a finding. ``bench/fuzz.py`` runs the targets under atheris
(coverage-guided); ``tests/test_fuzz_corpus.py`` replays the checked-in corpus ``tests/fuzz/corpus/<target>/``
in the normal test run. Inputs are read with ``Data`` (fixed-width fields, so a corpus file keeps its
meaning without atheris).
"""

from __future__ import annotations

import struct
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch

import yoloseg.ops  # noqa: F401  registers torch.ops.yoloseg.*
from yoloseg import _C as C
from yoloseg.checkpoints import UnsafeCheckpointError

_TMP = Path(tempfile.mkdtemp(prefix="yoloseg-fuzz-"))


class Data:
    """Little-endian fields read off the front of the input; past the end every read gives zeros."""

    def __init__(self, data: bytes):
        self.b, self.i = data, 0

    def take(self, n: int) -> bytes:
        out = self.b[self.i:self.i + n]
        self.i += n
        return out + bytes(n - len(out))

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def int(self, lo: int, hi: int) -> int:
        return lo + self.u32() % (hi - lo + 1)

    def i64(self) -> int:
        return struct.unpack("<q", self.take(8))[0]

    def f32(self) -> float:
        return struct.unpack("<f", self.take(4))[0]

    def f32s(self, n: int) -> np.ndarray:
        return np.frombuffer(self.take(4 * n), np.float32).copy()

    def i64s(self, n: int) -> np.ndarray:
        return np.frombuffer(self.take(8 * n), np.int64).copy()

    def i32s(self, n: int) -> np.ndarray:
        return np.frombuffer(self.take(4 * n), np.int32).copy()

    def u8s(self, n: int) -> np.ndarray:
        return np.frombuffer(self.take(n), np.uint8).copy()

    def rest(self) -> bytes:
        out = self.b[self.i:]
        self.i = len(self.b)
        return out


# ------------------------------------------------------------------------------------------ _C bindings


def c_nms(data: bytes):
    d = Data(data)
    n = d.int(0, 1024)
    boxes, scores = d.f32s(4 * n).reshape(n, 4), d.f32s(n)
    C.nms(boxes, scores, d.f32(), d.int(-1, 3), d.int(-2, 4))


def c_batched_nms(data: bytes):
    d = Data(data)
    n = d.int(0, 1024)
    boxes, scores = d.f32s(4 * n).reshape(n, 4), d.f32s(n)
    idxs = d.i64s(n) if d.int(0, 1) else d.i64s(n) % 4
    C.batched_nms(boxes, scores, idxs, d.f32(), d.int(-1, 3), d.int(-2, 4))


def _decode_args(d: Data):
    nm, mh, mw, n = d.int(0, 4), d.int(0, 12), d.int(0, 12), d.int(0, 4)
    out_h, out_w, f = d.int(-2, 48), d.int(-2, 48), d.int(-1, 5)
    top, left, ch, cw = d.int(-2, 12), d.int(-2, 12), d.int(-1, 48), d.int(-1, 48)
    protos = d.f32s(nm * mh * mw).reshape(nm, mh, mw)
    coeffs = d.f32s(n * nm).reshape(n, nm)
    boxes = (d.f32s(4 * n) if d.int(0, 1) else np.abs(d.f32s(4 * n)) % 64).reshape(n, 4)
    return protos, coeffs, boxes, out_h, out_w, f, top, left, ch, cw, d.int(-1, 3)


def c_decode_masks(data: bytes):
    C.decode_masks(*_decode_args(Data(data)))


def c_decode_mask_crops(data: bytes):
    C.decode_mask_crops(*_decode_args(Data(data)))


def c_resample_taps(data: bytes):
    d = Data(data)
    small = d.int(0, 1)
    args = [d.int(-2, 64) if small else d.i64() for _ in range(5)]
    C.resample_taps(*args)


def c_mask_windows(data: bytes):
    d = Data(data)
    n, h, w = d.int(0, 4), d.int(0, 24), d.int(0, 24)
    masks = d.u8s(n * h * w).reshape(n, h, w)
    C.mask_windows(masks, d.int(-1, 3))
    C.mask_windows_within(masks, d.i64s(4 * n).reshape(n, 4) % 40 - 8 if d.int(0, 1) else d.i64s(4 * n).reshape(n, 4),
                          d.int(-1, 3))


def c_closest_vertices(data: bytes):
    d = Data(data)
    n, m = d.int(0, 8), d.int(0, 8)
    C.closest_vertices(d.i32s(2 * n).reshape(n, 2), d.i32s(2 * m).reshape(m, 2))


def c_mask_polygons(data: bytes):
    d = Data(data)
    n, h, w = d.int(0, 3), d.int(0, 24), d.int(0, 24)
    strategy = ("largest", "all", "other")[d.int(0, 2)]
    windows = d.i64s(4 * n).reshape(n, 4)
    if d.int(0, 1):
        windows = windows % 32 - 4
    masks = (d.u8s(n * h * w) % 3).reshape(n, h, w)
    C.mask_polygons(masks, windows, strategy, d.int(-1, 3))


def c_crop_polygons(data: bytes):
    d = Data(data)
    n, size = d.int(0, 3), d.int(0, 400)
    regions, offsets, windows = d.i64s(4 * n).reshape(n, 4), d.i64s(n), d.i64s(4 * n).reshape(n, 4)
    if d.int(0, 1):
        regions, offsets, windows = regions % 24, offsets % 400, windows % 30 - 3
    crops = d.u8s(size) % 2
    C.crop_polygons(crops, regions, offsets, windows, ("largest", "all")[d.int(0, 1)], d.int(-1, 3))


def c_rle_encode(data: bytes):
    d = Data(data)
    n, h, w = d.int(0, 3), d.int(0, 24), d.int(0, 24)
    masks = d.u8s(n * h * w).reshape(n, h, w)
    if d.int(0, 1):
        masks = masks.transpose(0, 2, 1)  # strided input
    C.rle_encode(masks)


def c_rle_encode_windows(data: bytes):
    d = Data(data)
    n, size = d.int(0, 3), d.int(0, 200)
    regions, offsets = d.i64s(4 * n).reshape(n, 4), d.i64s(n)
    h, w = (d.int(0, 20), d.int(0, 20)) if d.int(0, 1) else (d.i64() & (2**64 - 1), d.i64() & (2**64 - 1))
    if d.int(0, 1):
        regions, offsets = regions % 22, offsets % 200
    C.rle_encode_windows(d.u8s(size), regions, offsets, h, w, d.int(-1, 3))


def _rle(d: Data):
    kind = d.int(0, 3)
    h, w = (d.int(0, 12), d.int(0, 12)) if d.int(0, 3) else (d.i64(), d.i64())
    if kind == 0:
        counts = d.take(d.int(0, 40)).decode("latin-1")
    elif kind == 1:
        counts = d.take(d.int(0, 40))
    elif kind == 2:
        counts = [int(v) for v in d.i64s(d.int(0, 8)) % 20]
    else:
        counts = [int(v) for v in d.i64s(d.int(0, 8))]
    return {"size": [h, w], "counts": counts}


def c_rle_dicts(data: bytes):
    """rle_decode, rle_area, rle_to_bbox, rle_counts, rle_merge and rle_iou on fuzzed RLE dicts."""
    d = Data(data)
    rles = [_rle(d) for _ in range(d.int(0, 3))]
    fn = d.int(0, 5)
    if fn == 0:
        C.rle_decode(rles)
    elif fn == 1:
        C.rle_area(rles)
    elif fn == 2:
        C.rle_to_bbox(rles)
    elif fn == 3:
        C.rle_counts(rles)
    elif fn == 4:
        C.rle_merge(rles, bool(d.int(0, 1)))
    else:
        C.rle_iou(rles, rles, d.u8s(d.int(0, 3)))


def c_rle_from_polygons(data: bytes):
    d = Data(data)
    h, w = (d.int(0, 40), d.int(0, 40)) if d.int(0, 1) else (d.i64() & (2**64 - 1), d.i64() & (2**64 - 1))
    polys = [d.f32s(d.int(0, 12)).astype(np.float64) if d.int(0, 1) else np.abs(d.f32s(d.int(0, 12))) % 50
             for _ in range(d.int(0, 3))]
    C.rle_from_polygons(polys, h, w)


def c_rle_from_boxes(data: bytes):
    d = Data(data)
    h, w, n = d.int(0, 40), d.int(0, 40), d.int(0, 3)
    boxes = d.f32s(4 * n).astype(np.float64).reshape(n, 4)
    if d.int(0, 1):
        boxes = np.abs(boxes) % 50
    C.rle_from_boxes(boxes, h, w)


def c_box_iou_xywh(data: bytes):
    d = Data(data)
    nd, ng = d.int(0, 4), d.int(0, 4)
    C.box_iou_xywh(d.f32s(4 * nd).reshape(nd, 4), d.f32s(4 * ng).reshape(ng, 4), d.u8s(d.int(0, 5)))


def c_coco_evaluate_json(data: bytes):
    d = Data(data)
    segm = bool(d.int(0, 1))
    split = d.int(0, 4096)
    text = d.rest()
    gt, dt = text[:split], text[split:]
    C.coco_evaluate_json(gt, dt, "segm" if segm else "bbox", np.array([0.5, 0.75]), np.linspace(0, 1, 11),
                         [1, 10, 100], np.array([[0, 1e10], [0, 1024], [1024, 1e10]]), 2)


# ------------------------------------------------------------------------------------------ torch ops


def _tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


def op_nms(data: bytes):
    d = Data(data)
    n = d.int(0, 1024)
    torch.ops.yoloseg.nms(_tensor(d.f32s(4 * n).reshape(n, 4)), _tensor(d.f32s(n)), d.f32())


def op_batched_nms(data: bytes):
    d = Data(data)
    n = d.int(0, 1024)
    boxes, scores = _tensor(d.f32s(4 * n).reshape(n, 4)), _tensor(d.f32s(n))
    torch.ops.yoloseg.batched_nms(boxes, scores, _tensor(d.i64s(n) % 5), d.f32())


def _mask_op_args(d: Data):
    nm, mh, mw, n = d.int(0, 4), d.int(0, 12), d.int(0, 12), d.int(0, 4)
    protos = _tensor(d.f32s(nm * mh * mw).reshape(nm, mh, mw))
    coeffs = _tensor(d.f32s(n * nm).reshape(n, nm))
    boxes = _tensor(d.f32s(4 * n).reshape(n, 4))
    return protos, coeffs, boxes, d.int(-2, 64), d.int(-2, 64)


def op_process_mask(data: bytes):
    d = Data(data)
    upsample = bool(d.int(0, 1))
    torch.ops.yoloseg.process_mask(*_mask_op_args(d), upsample)


def op_process_mask_native(data: bytes):
    torch.ops.yoloseg.process_mask_native(*_mask_op_args(Data(data)))


# ------------------------------------------------------------------------------------------ file readers


def _write(name: str, data: bytes) -> Path:
    path = _TMP / name
    path.write_bytes(data)
    return path


def coco_json(data: bytes):
    """The COCO instances reader of `yoloseg convert` (load, class map, image index, annotations)."""
    from yoloseg.data import convert

    path = _write("instances_fuzz.json", data)
    res = convert.ConvertResult(json_file=str(path), split="fuzz", labels_dir=str(_TMP / "labels"), names={})
    warnings = []
    d = convert._load_json(path)
    cat_index, _ = convert._class_map(d["categories"], "sorted", path)
    ims = convert._index_images(d["images"], res, warnings.append)
    convert._convert_annotations(d["annotations"], ims, cat_index, True, res, warnings.append)


def label_file(data: bytes):
    from yoloseg.data.labels import parse_label_file

    path = _write("fuzz.txt", data)
    classes, polys, msgs, _ = parse_label_file(str(path), 80)
    assert len(classes) == len(polys)
    for p in polys:  # every kept instance is finite and inside the image
        assert p.ndim == 2 and p.shape[1] == 2 and len(p) >= 3
        assert np.isfinite(p).all() and p.min() >= 0 and p.max() <= 1


def data_yaml(data: bytes):
    from yoloseg.data.yaml import check_data_yaml

    check_data_yaml(_write("fuzz.yaml", data))


def image_decode(data: bytes):
    from yoloseg.data.labels import check_image
    from yoloseg.data.sources import read_image

    path = _write("fuzz.jpg", data)
    shape, problem, _ = check_image(str(path))
    assert (shape is None) != (problem is None)
    read_image(path)


def video_decode(data: bytes):
    from yoloseg.data.sources import load_sources

    path = _write("fuzz.mp4", data)
    for _ in zip(range(3), load_sources(str(path))):
        pass


def checkpoint(data: bytes):
    """load_checkpoint on the bytes as given, and as the data.pkl of a torch zip archive."""
    from yoloseg.checkpoints import load_checkpoint

    d = Data(data)
    if d.int(0, 1):
        path = _write("fuzz.pt", d.rest())
    else:
        path = _TMP / "fuzz_zip.pt"
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("archive/data.pkl", d.rest())
            z.writestr("archive/version", "3\n")
            z.writestr("archive/byteorder", "little")
    load_checkpoint(path)


TARGETS = {f.__name__: f for f in (
    c_nms, c_batched_nms, c_decode_masks, c_decode_mask_crops, c_resample_taps, c_mask_windows, c_closest_vertices,
    c_mask_polygons, c_crop_polygons, c_rle_encode, c_rle_encode_windows, c_rle_dicts, c_rle_from_polygons,
    c_rle_from_boxes, c_box_iou_xywh, c_coco_evaluate_json, op_nms, op_batched_nms, op_process_mask,
    op_process_mask_native, coco_json, label_file, data_yaml, image_decode, video_decode, checkpoint,
)}

# What each target may raise: a clear refusal. TypeError is the pybind11/torch answer to an argument of the
# wrong Python type (the targets pass the right types, so it does not occur in practice).
_KERNEL = (ValueError, MemoryError)
CLEAN = {name: _KERNEL for name in TARGETS}
CLEAN.update({
    "coco_json": (ValueError, FileNotFoundError),
    "data_yaml": (ValueError, FileNotFoundError),
    "image_decode": (ValueError, FileNotFoundError),
    "video_decode": (ValueError, FileNotFoundError),
    "checkpoint": (ValueError, FileNotFoundError, UnsafeCheckpointError),
})


def run(name: str, data: bytes) -> None:
    """Run one target on one input; a clean refusal is swallowed, anything else propagates."""
    try:
        TARGETS[name](data)
    except CLEAN[name]:
        pass
