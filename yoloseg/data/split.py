"""Split a folder of labelled images into train and val (``yoloseg split``).

The images' label files are found the usual way (the last ``/images/`` of a path becomes ``/labels/``) and
checked like the training scan does. The split is stratified by class: images are placed rarest class
first, each into the split that still wants most of that class (iterative stratification), so that every
class with at least two images lands in both splits, and the split sizes stay at ``val`` and ``1 - val``.
The result, under the data set root (the folder holding ``images/``, else the images folder itself):

* ``move=False``: ``train.txt`` and ``val.txt``, one image path per line relative to the root;
* ``move=True``: images moved into ``images/train/`` and ``images/val/``, their labels into
  ``labels/train/`` and ``labels/val/``;
* ``data.yaml`` with ``path: .``, ``train``, ``val`` and ``names`` (kept from an existing ``data.yaml``,
  else read from ``classes.txt``, else ``class0``, ``class1``, ... up to the largest class id).

Unreadable images are left out; images without a label file are kept as background; label files without an
image and unknown class ids are reported. Each of these is listed per file and the split goes on.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from yoloseg.data.yaml import img2label_paths, list_image_files
from yoloseg.utils.files import atomic_write_bytes, remove_partials

__all__ = ["SplitResult", "split_dataset", "stratified_split"]


@dataclass
class SplitResult:
    root: str
    yaml_file: str
    train: list = field(default_factory=list)
    val: list = field(default_factory=list)
    per_class: dict = field(default_factory=dict)  # class -> (images in train, images in val)
    problems: list = field(default_factory=list)  # check.Problem

    def summary(self, names: dict | None = None) -> str:
        names = names or {}
        one_sided = [names.get(c, c) for c, (t, v) in sorted(self.per_class.items()) if not (t and v)]
        text = f"{len(self.train)} train / {len(self.val)} val images -> {self.yaml_file}"
        if one_sided:
            text += f"; in one split only (a single image): {', '.join(map(str, one_sided))}"
        return text


def stratified_split(classes: list, val: float, seed: int = 0) -> np.ndarray:
    """Boolean (n,) array, True for the images going to val. ``classes[i]`` is the set of classes of image i."""
    n = len(classes)
    rng = np.random.default_rng(seed)
    n_val = int(round(val * n))
    if 0 < val and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    counts = Counter(c for cs in classes for c in set(cs))
    want = {}  # class -> [train, val] images still wanted
    for c, k in counts.items():
        v = val * k
        if k >= 2 and val > 0:
            v = min(max(v, 1.0), k - 1.0)
        want[c] = [k - v, v]
    cap = [n - n_val, n_val]
    noise = rng.random(n)
    rarity = [min((counts[c] for c in cs), default=n + 1) for cs in classes]
    order = sorted(range(n), key=lambda i: (rarity[i], noise[i]))
    out = np.zeros(n, bool)
    for i in order:
        if not cap[0] or not cap[1]:
            s = 1 if cap[1] else 0
        elif classes[i]:
            r = min(classes[i], key=lambda c: (counts[c], c))
            t, v = want[r]
            s = 1 if v > t else 0 if t > v else int(cap[1] / max(n_val, 1) > cap[0] / max(n - n_val, 1))
        else:
            s = int(cap[1] / max(n_val, 1) > cap[0] / max(n - n_val, 1))
        out[i] = bool(s)
        cap[s] -= 1
        for c in set(classes[i]):
            want[c][s] -= 1
    return out


def _root_of(images: Path) -> Path:
    return images.parent if images.name == "images" else images


def _names(root: Path, names, max_cls: int, problems) -> tuple[dict, dict]:
    """(class names, the existing data.yaml's contents or {})."""
    import yaml

    existing = {}
    yml = root / "data.yaml"
    if yml.is_file():
        try:
            existing = yaml.safe_load(yml.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
            raise ValueError(f"{yml}: not valid YAML{where}: {getattr(e, 'problem', e)}; fix or remove it") from None
        if not isinstance(existing, dict):
            raise ValueError(f"{yml}: expected a mapping at the top level; fix or remove it")
    if names is not None:
        found = dict(enumerate(names)) if isinstance(names, (list, tuple)) else dict(names)
    elif existing.get("names") is not None:
        found = existing["names"]
        found = dict(enumerate(found)) if isinstance(found, list) else found
    elif (root / "classes.txt").is_file():
        found = dict(enumerate(s.strip() for s in (root / "classes.txt").read_text().splitlines() if s.strip()))
    else:
        found = {i: f"class{i}" for i in range(max_cls + 1)}
    return {int(k): str(v) for k, v in found.items()}, existing


def _move(src: str, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        raise FileExistsError(f"{dst} already exists; not moving {src} over it")
    shutil.move(src, dst)


def split_dataset(images, val: float = 0.2, seed: int = 0, move: bool = False, names=None, workers=None,
                  verbose: bool = True) -> SplitResult:
    """Split the images under ``images`` into train and val; see the module docstring."""
    from yoloseg.data.check import Problem, _map, _orphan_labels, inspect_file

    if not 0 < float(val) < 1:
        raise ValueError(f"val must be a fraction between 0 and 1 (exclusive), got {val}")
    images = Path(images).expanduser().resolve()
    if not images.is_dir():
        raise FileNotFoundError(f"data: {images} is not a folder of images")
    root = _root_of(images)
    if move and images != root / "images":
        raise ValueError(f"move=True needs the images in a folder named 'images' ({images} is not)")
    im_files = [f for f in list_image_files(images) if os.sep + "labels" + os.sep not in f]
    if len(im_files) < 2:
        raise FileNotFoundError(f"data: {images} holds {len(im_files)} images; a split needs at least 2")
    lb_files = img2label_paths(im_files)
    items = _map(inspect_file, [(f, lb, None) for f, lb in zip(im_files, lb_files)], "split", workers)
    problems = [p for it in items for p in it.problems]
    stems = {os.path.splitext(lb)[0] for lb in lb_files}
    problems += [Problem(p, "label file without an image", "orphan_label")
                 for p in _orphan_labels(set(lb_files), {os.path.dirname(p) for p in lb_files}, stems)]
    usable = [it for it in items if it.shape is not None]
    max_cls = max((c for it in usable for c in it.cls), default=0)
    names, existing = _names(root, names, max_cls, problems)
    for it in usable:
        for c in sorted(set(it.cls)):
            if c not in names:
                problems.append(Problem(it.lb_file, f"class id {c} is not among the {len(names)} names", "class"))
    mask = stratified_split([set(it.cls) for it in usable], float(val), seed)
    res = SplitResult(str(root), str(root / "data.yaml"), problems=problems)
    for it, is_val in zip(usable, mask.tolist()):
        (res.val if is_val else res.train).append(it)
    for c in sorted({c for it in usable for c in it.cls}):
        res.per_class[c] = (sum(c in it.cls for it in res.train), sum(c in it.cls for it in res.val))

    data = {k: v for k, v in existing.items() if k not in ("path", "train", "val", "nc", "names")}
    if move:
        for split, its in (("train", res.train), ("val", res.val)):
            for it in its:
                rel = Path(it.im_file).relative_to(images)
                if rel.parts[0] in ("train", "val"):
                    rel = Path(*rel.parts[1:])
                dst = images / split / rel
                if Path(it.im_file) == dst:
                    continue
                _move(it.im_file, dst)
                if os.path.isfile(it.lb_file):
                    _move(it.lb_file, root / "labels" / split / rel.with_suffix(".txt"))
        train, val_spec = "images/train", "images/val"
        remove_partials(root, ["data.yaml"])  # left by an interrupted run
    else:
        remove_partials(root, ["train.txt", "val.txt", "data.yaml"])  # left by an interrupted run
        for split, its in (("train", res.train), ("val", res.val)):
            text = "".join(f"./{Path(it.im_file).relative_to(root).as_posix()}\n" for it in its)
            atomic_write_bytes(root / f"{split}.txt", text.encode("utf-8"))
        train, val_spec = "train.txt", "val.txt"
    import yaml

    doc = {"path": ".", "train": train, "val": val_spec, **data, "nc": len(names), "names": names}
    text = "# Split by `yoloseg split`: path '.' is this file's folder.\n"
    text += yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, default_flow_style=False)
    atomic_write_bytes(root / "data.yaml", text.encode("utf-8"))
    if verbose:
        for p in problems[:20]:
            print(f"WARNING {p}", file=sys.stderr)
        if len(problems) > 20:
            print(f"WARNING ... and {len(problems) - 20} more", file=sys.stderr)
        print(res.summary(names), file=sys.stderr)
    return res
