"""Convert COCO instance annotations (``instances_*.json``) into YOLO-seg label files and a data YAML.

Output layout under ``out_dir`` (the data set root), matching what :func:`yoloseg.data.check_data_yaml` and
the label scan expect (labels sit where the last ``/images/`` of an image path becomes ``/labels/``)::

    out_dir/data.yaml                  path: ., train/val/test: images/<split>, nc, names
    out_dir/labels/<split>/<stem>.txt  one per image of the JSON (empty: no usable annotation)
    out_dir/images/<split>/<file>      only with images="copy" or images="link"; else put them there yourself

Each label line is ``cls x1 y1 x2 y2 ...``: pixel coordinates divided by the image's ``width``/``height`` from
the JSON, clipped to [0, 1], written with 6 decimals. Class indices (``classes``):

* ``"sorted"`` (default): 0, 1, 2, ... in the order of the sorted category ids; ``names`` from the categories.
* ``"coco80"``: the 80-class index of the original COCO category ids (1..90 with 10 ids unused), the
  numbering of COCO-trained YOLO models; refused when a category id is not an original COCO id.

A segmentation made of several polygons becomes one polygon: every part is oriented like the first and
linked to the next at their closest vertices by an edge walked there and back
(:func:`yoloseg.ops.reference.join_contours`), the convention of multi-part YOLO-seg labels. Crowd
annotations (``iscrowd=1``) are skipped unless ``include_crowd``; an RLE mask (crowd or not) is decoded and
its outer contours traced and joined the same way (``masks_to_polygons(..., strategy="all")``). An
annotation that cannot be used (unknown image or category id, image without width/height, fewer than 3
points, zero area, bad RLE) is skipped with a warning naming the JSON file and the annotation id; the
result counts every reason.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from yoloseg.utils.files import atomic_path, atomic_write_bytes, remove_partials

__all__ = ["COCO80_IDS", "ConvertResult", "coco_to_yolo"]

# Original COCO category ids of the 80 classes, in class-index order (ids 12, 26, 29, 30, 45, 66, 68, 69, 71
# and 83 are unused).
COCO80_IDS = (
    *range(1, 12), *range(13, 26), 27, 28, *range(31, 45), *range(46, 66), 67, 70, *range(72, 83), *range(84, 91)
)
CLASS_MAPS = ("sorted", "coco80")
IMAGE_MODES = ("copy", "link")
MAX_PRINTED = 20  # warnings printed per JSON file (all of them are kept in ConvertResult.warnings)


@dataclass
class ConvertResult:
    """What one conversion wrote and skipped; ``skipped`` counts annotations by reason."""

    json_file: str
    split: str
    labels_dir: str
    yaml_file: str | None = None
    names: dict = field(default_factory=dict)
    n_images: int = 0
    n_empty: int = 0
    n_instances: int = 0
    n_clipped: int = 0
    n_images_skipped: int = 0
    n_images_placed: int = 0
    skipped: Counter = field(default_factory=Counter)
    warnings: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    def summary(self) -> str:
        skipped = ", ".join(f"{n} {why}" for why, n in sorted(self.skipped.items())) or "none"
        extra = f", {self.n_clipped} clipped to the image" if self.n_clipped else ""
        if self.n_images_skipped:
            extra += f", {self.n_images_skipped} images without label file"
        return (f"{Path(self.json_file).name} -> {self.labels_dir}: {self.n_images} label files "
                f"({self.n_empty} empty), {self.n_instances} instances{extra}; skipped annotations: {skipped}")


class _Skip(Exception):
    """An annotation that cannot be converted; the message is the reason counted in the summary."""


# ---------------------------------------------------------------------------------------------- reading
def _load_json(json_file: Path) -> dict:
    if not json_file.is_file():
        raise FileNotFoundError(f"COCO annotations: {json_file} does not exist")
    try:
        with open(json_file, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"COCO annotations: {json_file} is not valid JSON ({e})") from None
    except RecursionError:
        raise ValueError(f"COCO annotations: {json_file} nests arrays/objects too deeply") from None
    if not isinstance(data, dict):
        raise ValueError(f"COCO annotations: {json_file} must hold a JSON object, got {type(data).__name__}")
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(data.get(k), list)]
    if missing:
        raise ValueError(f"COCO annotations: {json_file} has no list {', '.join(repr(k) for k in missing)} "
                         f"(an instances JSON needs 'images', 'annotations' and 'categories')")
    return data


def _class_map(categories, mode: str, json_file: Path) -> tuple[dict, dict]:
    """(category id -> class index, class index -> name)."""
    cats = {}
    for c in categories:
        cid = c.get("id") if isinstance(c, dict) else None
        if not isinstance(cid, int) or isinstance(cid, bool):
            raise ValueError(f"COCO annotations: {json_file}: category without an integer 'id': {c!r}")
        if cid in cats:
            raise ValueError(f"COCO annotations: {json_file}: category id {cid} appears twice")
        cats[cid] = str(c.get("name", f"class{cid}"))
    if not cats:
        raise ValueError(f"COCO annotations: {json_file}: 'categories' is empty")
    if mode == "sorted":
        index = {cid: i for i, cid in enumerate(sorted(cats))}
        return index, {i: cats[cid] for cid, i in index.items()}
    if mode == "coco80":
        foreign = sorted(set(cats) - set(COCO80_IDS))
        if foreign:
            raise ValueError(f"COCO annotations: {json_file}: classes='coco80' needs original COCO category ids, "
                             f"but {foreign[:10]} are not (use the default classes='sorted')")
        index = {cid: i for i, cid in enumerate(COCO80_IDS)}
        return {cid: index[cid] for cid in cats}, {i: cats.get(cid, f"class{i}") for cid, i in index.items()}
    raise ValueError(f"classes must be one of {CLASS_MAPS}, got {mode!r}")


def _key(v):
    """An id usable as a dict key (JSON numbers and strings); None for anything else."""
    return v if isinstance(v, (int, str)) and not isinstance(v, bool) else None


def _label_name(file_name) -> str | None:
    """Relative label path for an image ``file_name``; None when the name is unusable (absolute, ``..``)."""
    if not isinstance(file_name, str) or not file_name.strip():
        return None
    p = PurePosixPath(file_name.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or not p.name:
        return None
    return str(p.with_suffix(".txt"))


# ---------------------------------------------------------------------------------------------- geometry
def _closest(a, b):
    """(i, j) minimising |a[i] - b[j]| for float vertices (first in row-major order on ties)."""
    d = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    i, j = np.unravel_index(int(d.argmin()), d.shape)
    return int(i), int(j)


def _signed_area(p) -> float:
    x, y = p[:, 0], p[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def _polygon_parts(seg) -> tuple[list, str | None]:
    """COCO polygon list -> (K, 2) float64 pixel parts; also the reason the first bad part was dropped."""
    parts, bad = [], None
    for raw in seg:
        try:
            flat = np.asarray(raw, dtype=np.float64).ravel()
        except (TypeError, ValueError):
            bad = bad or "non-numeric coordinates"
            continue
        if flat.size % 2:
            bad = bad or "odd number of coordinates"
        elif not np.isfinite(flat).all():
            bad = bad or "non-finite coordinates"
        elif flat.size < 6:
            bad = bad or "polygon with < 3 points"
        else:
            parts.append(flat.reshape(-1, 2))
    return parts, bad


def _rle_parts(seg: dict, h: int, w: int) -> list:
    from yoloseg.metrics import rle
    from yoloseg.ops import masks_to_polygons

    size = seg.get("size")
    if not isinstance(size, (list, tuple)) or list(size) != [h, w]:
        raise _Skip("RLE size differs from the image size")
    try:
        mask = rle.decode({"size": [h, w], "counts": seg["counts"]})
    except Exception:  # any malformed counts: the compiled decoder raises ValueError or RuntimeError
        raise _Skip("invalid RLE") from None
    poly = masks_to_polygons(mask[None], strategy="all")[0]
    if len(poly) < 3:
        raise _Skip("empty mask" if not mask.any() else "polygon with < 3 points")
    return [poly.astype(np.float64)]


def _to_polygon(seg, h: int, w: int) -> tuple[np.ndarray, bool, str | None]:
    """Segmentation -> (normalized (K, 2) polygon rounded to 6 decimals, clipped?, dropped-part reason)."""
    if isinstance(seg, dict):
        if "counts" not in seg:
            raise _Skip("no segmentation")
        parts, bad = _rle_parts(seg, h, w), None
    elif isinstance(seg, list) and seg:
        if all(isinstance(v, (int, float)) for v in seg):
            seg = [seg]  # a single flat polygon written without the outer list
        parts, bad = _polygon_parts(seg)
        if not parts:
            raise _Skip(bad)
    else:
        raise _Skip("no segmentation")
    size = np.array([w, h], np.float64)
    clipped = any(bool((p < 0).any() or (p > size).any()) for p in parts)
    parts = [np.clip(p, 0.0, size) for p in parts]
    areas = [_signed_area(p) for p in parts]
    kept = [(p, a) for p, a in zip(parts, areas) if a != 0.0]
    if not kept:
        raise _Skip("zero area")
    if len(kept) < len(parts):
        bad = bad or "zero-area part"
    if len(kept) > 1:
        from yoloseg.ops.reference import join_contours

        sign = np.sign(kept[0][1])  # one orientation for all parts: their areas add up, never cancel
        parts = [p if np.sign(a) == sign else p[::-1] for p, a in kept]
        poly = join_contours(parts, closest=_closest)
    else:
        poly = kept[0][0]
    poly = np.clip(np.round(poly / size, 6), 0.0, 1.0) + 0.0  # + 0.0 turns -0.0 into 0.0
    if _signed_area(poly.astype(np.float32)) == 0.0:  # the label scan's own test, after rounding
        raise _Skip("zero area")
    return poly, clipped, bad


def _line(cls: int, poly: np.ndarray) -> str:
    return f"{cls} " + " ".join(f"{v:.6f}" for v in poly.ravel().tolist())


# ---------------------------------------------------------------------------------------------- writing
def _split_key(split: str) -> str:
    s = split.lower()
    return "train" if "train" in s else "test" if "test" in s else "val"


def _check_free(folder: Path, overwrite: bool, what: str) -> None:
    """Refuse a non-empty folder unless overwrite; temp files of an interrupted run are removed, not counted."""
    remove_partials(folder)
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        raise FileExistsError(f"{what} {folder} already exists and is not empty; pass overwrite=True "
                              f"(--overwrite) to replace its files, or choose another output folder")


def _data_yaml(out_dir: Path, split: str, names: dict, overwrite: bool, notes: list) -> tuple[Path, bytes]:
    """``out_dir/data.yaml`` (created, or updated when it exists) with the split's key at ``images/<split>``."""
    import yaml

    path = out_dir / "data.yaml"
    data = {}
    if path.is_file():
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: existing data YAML is not valid YAML ({e})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: existing data YAML is not a mapping")
        old = data.get("names")
        old = dict(enumerate(old)) if isinstance(old, list) else old
        if old is not None and {int(k): str(v) for k, v in dict(old).items()} != names:
            if not overwrite:
                raise ValueError(f"{path} lists other class names than this JSON; pass overwrite=True "
                                 f"(--overwrite) to replace it, or choose another output folder")
            data = {}
    data.update({"path": ".", _split_key(split): f"images/{split}"})
    for k in ("train", "val"):
        if k not in data:
            data[k] = f"images/{split}"
            notes.append(f"{path.name}: no {k} split converted yet, '{k}' points at images/{split} for now")
    data["nc"] = len(names)
    data["names"] = dict(names)
    order = ["path", "train", "val", "test", "nc", "names"]
    data = {k: data[k] for k in order if k in data} | {k: v for k, v in data.items() if k not in order}
    text = ("# YOLO-seg data set converted from COCO annotations by `yoloseg convert coco`.\n"
            "# path '.' is this file's folder; labels/<split> holds the labels of images/<split>.\n")
    text += yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False)
    return path, text.encode("utf-8")


def _place_image(src: Path, dst: Path, mode: str) -> None:
    if dst.exists() and src.exists() and os.path.samefile(src, dst):
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    if mode == "copy":
        with atomic_path(dst) as tmp:
            shutil.copyfile(src, tmp)
    else:  # a symlink made under a temporary name, then moved over the destination in one step
        tmp = dst.with_name(f".{dst.name}.{os.getpid()}.link")
        tmp.unlink(missing_ok=True)
        os.symlink(src.resolve(), tmp)
        os.replace(tmp, dst)


def _find_images_dir(json_file: Path, split: str) -> Path:
    up = json_file.resolve().parent
    for cand in (up.parent / "images" / split, up.parent / split, up / "images" / split, up / split):
        if cand.is_dir():
            return cand
    raise FileNotFoundError(f"images of {json_file}: not found next to it (tried ../images/{split}, ../{split}); "
                            f"pass images_dir (--images DIR)")


# ---------------------------------------------------------------------------------------------- convert
def _index_images(images, res: ConvertResult, warn) -> dict:
    """image id -> (label path, width, height, file name); width 0 for an image without a usable size."""
    ims, seen_labels = {}, set()
    for k, im in enumerate(images):
        iid = _key(im.get("id")) if isinstance(im, dict) else None
        label = _label_name(im.get("file_name")) if isinstance(im, dict) else None
        tag = f"image {iid}" if iid is not None else f"image entry #{k}"
        why = ("no id" if iid is None else "duplicate image id" if iid in ims else
               "unusable file_name" if label is None else "two images share a label file" if label in seen_labels
               else None)
        if why:
            warn(f"{tag}: {why}, skipped")
            res.n_images_skipped += 1
            continue
        w, h = im.get("width"), im.get("height")
        ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in (w, h))
        if not ok:
            warn(f"{tag} ({im['file_name']}): no valid width/height, its annotations are skipped")
            res.n_images_skipped += 1
        seen_labels.add(label)
        ims[iid] = (label, int(w) if ok else 0, int(h) if ok else 0, im["file_name"])
    return ims


def _convert_annotations(annotations, ims, cat_index, include_crowd, res: ConvertResult, warn) -> dict:
    """image id -> label lines, for every image with a usable size; skips are counted in ``res``."""
    lines = {iid: [] for iid, v in ims.items() if v[1] > 0}
    n_crowd = 0
    for k, a in enumerate(annotations):
        aid = a.get("id", f"#{k}") if isinstance(a, dict) else f"#{k}"
        try:
            if not isinstance(a, dict):
                raise _Skip("not an object")
            iid, cid = _key(a.get("image_id")), _key(a.get("category_id"))
            if iid not in ims:
                raise _Skip("unknown image id")
            _, w, h, _ = ims[iid]
            if w <= 0:
                raise _Skip("image without width/height")
            if cid not in cat_index:
                raise _Skip("unknown category id")
            if a.get("iscrowd", 0) and not include_crowd:
                n_crowd += 1
                raise _Skip("crowd")
            poly, clipped, dropped = _to_polygon(a.get("segmentation"), h, w)
        except _Skip as e:
            res.skipped[str(e)] += 1
            if str(e) != "crowd":  # crowd skips are expected; one warning below says how many
                warn(f"annotation {aid}: {e}, skipped")
            continue
        if clipped:
            res.n_clipped += 1
            warn(f"annotation {aid}: coordinates outside the image, clipped")
        if dropped:
            warn(f"annotation {aid}: a part was dropped ({dropped})")
        lines[iid].append(_line(cat_index[cid], poly))
    if n_crowd:
        warn(f"{n_crowd} crowd annotation(s) skipped (include_crowd=True / --include-crowd converts them)")
    return lines


def coco_to_yolo(json_file, out_dir, split: str | None = None, *, classes: str = "sorted",
                 include_crowd: bool = False, images: str | None = None, images_dir=None,
                 overwrite: bool = False, write_yaml: bool = True, verbose: bool = True) -> ConvertResult:
    """Convert one COCO instances JSON into ``out_dir/labels/<split>/`` and update ``out_dir/data.yaml``.

    split: folder name under ``labels/`` and ``images/``; default: the JSON's name without ``instances_``
    (``instances_val2017.json`` -> ``val2017``). Its data YAML key is ``train``, ``test`` or ``val`` as the
    name contains one of those words (else ``val``); a missing ``train``/``val`` key points at this split.
    classes: ``"sorted"`` or ``"coco80"`` (see the module docstring). include_crowd: convert ``iscrowd=1``
    annotations too (by default skipped and counted). images: None (labels and YAML only; put the images in
    ``out_dir/images/<split>/``), ``"copy"`` or ``"link"`` (symlink each image there from ``images_dir``,
    default: ``../images/<split>`` or ``../<split>`` beside the JSON's folder). overwrite: replace the files
    of an existing non-empty labels folder (stale label files there are removed). verbose: print warnings
    (the first 20) and the summary to stderr. Returns a :class:`ConvertResult`.
    """
    json_file = Path(json_file).expanduser()
    out_dir = Path(out_dir).expanduser().resolve()
    if split is None:
        split = json_file.stem.removeprefix("instances_") or json_file.stem
    if not split or "/" in split or "\\" in split or split in (".", ".."):
        raise ValueError(f"split must be a plain folder name, got {split!r}")
    if images not in (None, *IMAGE_MODES):
        raise ValueError(f"images must be None, 'copy' or 'link', got {images!r}")
    if classes not in CLASS_MAPS:
        raise ValueError(f"classes must be one of {CLASS_MAPS}, got {classes!r}")
    data = _load_json(json_file)
    cat_index, names = _class_map(data["categories"], classes, json_file)
    src_dir = None
    if images is not None:
        src_dir = Path(images_dir).expanduser() if images_dir is not None else _find_images_dir(json_file, split)
        if not src_dir.is_dir():
            raise FileNotFoundError(f"images_dir: {src_dir} is not a folder")
    labels_dir = out_dir / "labels" / split
    remove_partials(out_dir, ["data.yaml"])
    _check_free(labels_dir, overwrite, "labels folder")
    if images is not None:
        _check_free(out_dir / "images" / split, overwrite, "images folder")
    res = ConvertResult(json_file=str(json_file), split=split, labels_dir=str(labels_dir), names=names)
    where = json_file.name

    def warn(msg):
        res.warnings.append(f"{where}: {msg}")

    ims = _index_images(data["images"], res, warn)
    lines = _convert_annotations(data["annotations"], ims, cat_index, include_crowd, res, warn)
    yaml_path, yaml_text = _data_yaml(out_dir, split, names, overwrite, res.notes) if write_yaml else (None, b"")

    labels_dir.mkdir(parents=True, exist_ok=True)
    written = set()
    for iid, rows in lines.items():
        path = labels_dir / ims[iid][0]
        atomic_write_bytes(path, ("".join(r + "\n" for r in rows)).encode("ascii"))
        written.add(path)
        res.n_images += 1
        res.n_empty += not rows
        res.n_instances += len(rows)
    if overwrite:  # labels of images no longer in the JSON would be picked up by the data set: remove them
        for old in labels_dir.rglob("*.txt"):
            if old not in written:
                old.unlink()
        (labels_dir.parent / f"{split}.cache").unlink(missing_ok=True)

    if images is not None:
        dst_dir = out_dir / "images" / split
        for iid, (_, w, _, file_name) in ims.items():
            src = src_dir / file_name
            if w <= 0:
                continue
            if not src.is_file():
                warn(f"image {iid}: {src} not found, not {'copied' if images == 'copy' else 'linked'}")
                continue
            _place_image(src, dst_dir / file_name, images)
            res.n_images_placed += 1
    if yaml_path is not None:
        res.yaml_file = str(atomic_write_bytes(yaml_path, yaml_text))
    if verbose:
        for msg in res.warnings[:MAX_PRINTED]:
            print(f"WARNING {msg}", file=sys.stderr)
        if len(res.warnings) > MAX_PRINTED:
            print(f"WARNING {where}: ... and {len(res.warnings) - MAX_PRINTED} more warnings", file=sys.stderr)
        print(res.summary(), file=sys.stderr)
        for msg in res.notes:
            print(msg, file=sys.stderr)
    return res
