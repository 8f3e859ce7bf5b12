"""`yoloseg check`: the label scan that training runs, as a per-split report with a fix for every problem.

For each split of a data YAML, every image and its label file go through the same checks as the training
scan (:func:`yoloseg.data.labels.check_image`, :func:`yoloseg.data.labels.parse_label_line`), plus checks
that only make sense for a whole data set: images with the same bytes, label files without an image, and
images without a label file. Each problem is listed once, per file, with what to do about it.

A split is *unusable* (exit code 1 on the command line) when it has no images, no readable image, or, for
``train``/``val``, no instance at all. ``fix=True`` rewrites the label files whose problems are fixable
(coordinates slightly outside the image are clipped, repeated lines and degenerate polygons are dropped),
each atomically after keeping the original as ``<file>.bak``. ``plots=True`` writes ``overlays.jpg`` (a
sample of images with their polygons) and ``labels.jpg`` (label statistics) per split into the run folder.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from yoloseg.data.labels import FIXABLE, check_image, label_lines, parse_label_line, read_label_lines
from yoloseg.data.yaml import SPLITS, check_data_yaml, img2label_paths, list_image_files
from yoloseg.utils.files import atomic_path, atomic_write_bytes, increment_path

__all__ = ["CheckResult", "Problem", "SplitReport", "check_dataset", "FIXES"]

# What to do about each kind of problem.
FIXES = {
    "clipped": "fix=True clips the polygon to the image",
    "duplicate": "fix=True removes the repeated line",
    "degenerate": "fix=True drops the line (a polygon needs >= 3 points and a non-zero area)",
    "class": "use a class id listed under 'names' in the data YAML, or add the class there",
    "outside": "coordinates must be normalized to [0, 1]: divide x by the image width and y by its height",
    "malformed": "each line must be 'class x1 y1 x2 y2 ...' with numbers only",
    "label_unreadable": "save the label file as UTF-8 text",
    "image": "replace the image with a readable copy, or delete it and its label file",
    "truncated": "re-save the image (it decodes, but the file is cut short)",
    "no_label": "add a label file (an empty file marks an image without objects)",
    "orphan_label": "add the image, or delete the label file",
    "duplicate_image": "delete one of the copies (a duplicate in train and val inflates the metrics)",
}
LIST_NAMES = {"train.txt", "val.txt", "test.txt", "classes.txt"}  # not label files


@dataclass
class Problem:
    file: str
    message: str
    kind: str

    @property
    def fix(self) -> str:
        return FIXES[self.kind]

    def __str__(self) -> str:
        return f"{self.file}: {self.message} -> {self.fix}"


@dataclass
class _Item:
    """One image and its label file as found on disk."""

    im_file: str
    lb_file: str
    shape: tuple | None = None
    digest: str | None = None
    cls: list = field(default_factory=list)
    polys: list = field(default_factory=list)
    problems: list = field(default_factory=list)
    fixable: bool = False
    missing_label: bool = False


@dataclass
class SplitReport:
    """The check of one split."""

    split: str
    n_images: int = 0
    n_usable: int = 0
    n_empty: int = 0
    n_duplicate_images: int = 0
    instances: Counter = field(default_factory=Counter)
    problems: list = field(default_factory=list)
    items: list = field(default_factory=list)
    unusable: str | None = None
    fixed: list = field(default_factory=list)
    plots: list = field(default_factory=list)

    @property
    def n_instances(self) -> int:
        return sum(self.instances.values())

    def counts(self) -> Counter:
        return Counter(p.kind for p in self.problems)

    def summary(self, names: dict) -> str:
        k = self.counts()
        head = (f"{self.split}: {self.n_images} images ({self.n_usable} usable), {self.n_instances} instances in "
                f"{len(self.instances)} classes, {self.n_empty} empty, {self.n_duplicate_images} duplicate images, "
                f"{k['degenerate']} degenerate polygons, {k['outside'] + k['clipped']} outside the image, "
                f"{len(self.problems)} problems")
        if self.unusable:
            head += f"\n  UNUSABLE: {self.unusable}"
        if self.instances:
            per = ", ".join(f"{names.get(c, c)} {n}" for c, n in sorted(self.instances.items()))
            head += f"\n  instances per class: {per}"
        return head


@dataclass
class CheckResult:
    splits: dict
    names: dict
    save_dir: str | None = None

    @property
    def ok(self) -> bool:
        return not any(r.unusable for r in self.splits.values())

    @property
    def problems(self) -> list:
        return [p for r in self.splits.values() for p in r.problems]


# ---------------------------------------------------------------------------------------------- per file
def _file_digest(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.blake2b(f.read(), digest_size=16).hexdigest()
    except OSError:
        return None


def inspect_file(im_file: str, lb_file: str, nc: int | None) -> _Item:
    """Check one image and its label file the way the training scan does, keeping each problem's kind."""
    it = _Item(im_file, lb_file)
    shape, problem, warn = check_image(im_file)
    if problem:
        it.problems.append(Problem(im_file, f"{problem}; image skipped", "image"))
        return it
    it.shape, it.digest = shape, _file_digest(im_file)
    if warn:
        it.problems.append(Problem(im_file, warn, "truncated"))
    lines, missing, error = read_label_lines(lb_file)
    it.missing_label = missing
    if missing:
        it.problems.append(Problem(im_file, f"no label file ({lb_file}): used as a background image", "no_label"))
    if error:
        it.problems.append(Problem(lb_file, error, "label_unreadable"))
    for ln, line, first in label_lines(lines):
        if first is not None:
            it.problems.append(Problem(lb_file, f"line {ln}: repeats line {first}", "duplicate"))
            it.fixable = True
            continue
        c, pts, kind, msg = parse_label_line(line, ln, nc)
        if kind:
            it.problems.append(Problem(lb_file, msg, kind))
            it.fixable |= kind in FIXABLE
        if pts is not None:
            it.cls.append(c)
            it.polys.append(pts)
    return it


def fix_label_file(lb_file: str, nc: int | None) -> bool:
    """Rewrite ``lb_file`` without its fixable problems (clip, drop repeats and degenerate polygons); lines
    with other problems stay as they are. The original is kept as ``<file>.bak`` (``<file>2.bak``, ... when
    that exists). Returns whether the file changed."""
    lines, missing, error = read_label_lines(lb_file)
    if missing or error:
        return False
    out, changed = [], False
    for ln, line, first in label_lines(lines):
        if first is not None:
            changed = True
            continue
        c, pts, kind, _ = parse_label_line(line, ln, nc)
        if kind == "degenerate":
            changed = True
        elif kind == "clipped":
            out.append(f"{c} " + " ".join(f"{v:.6f}" for v in pts.ravel().tolist()))
            changed = True
        else:
            out.append(line)
    if not changed:
        return False
    bak = increment_path(Path(f"{lb_file}.bak"))
    with atomic_path(bak) as tmp:
        shutil.copyfile(lb_file, tmp)
    atomic_write_bytes(lb_file, "".join(s + "\n" for s in out).encode("utf-8"))
    return True


def _map(fn, jobs, desc: str, workers: int | None):
    """fn over jobs in a thread pool (image decoding releases the GIL), with a progress bar for long runs."""
    workers = workers or min(8, max(1, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as ex:
        from tqdm import tqdm

        # the bar appears only once the job has run for a second
        return list(tqdm(ex.map(lambda a: fn(*a), jobs), total=len(jobs), desc=desc, unit="file", delay=1.0,
                         leave=False))


# ---------------------------------------------------------------------------------------------- per split
def _orphan_labels(expected: set, label_dirs: set, image_stems: set) -> list:
    """Label files in the label folders that belong to no listed image."""
    out = []
    for d in sorted(label_dirs):
        try:
            names = sorted(os.listdir(d))
        except OSError:
            continue
        for n in names:
            p = os.path.join(d, n)
            if n.endswith(".txt") and n not in LIST_NAMES and p not in expected and os.path.isfile(p):
                if os.path.splitext(p)[0] not in image_stems:
                    out.append(p)
    return out


def check_split(split: str, spec, nc: int, workers: int | None = None, fix: bool = False,
                first_copy: dict | None = None) -> SplitReport:
    """Check one split; ``first_copy`` (image digest -> (file, split)) carries images seen in earlier splits,
    so that a copy in another split is reported too."""
    rep = SplitReport(split)
    try:
        im_files = list_image_files(spec, what=f"{split} images")
    except (FileNotFoundError, OSError) as e:
        rep.unusable = str(e)
        return rep
    rep.n_images = len(im_files)
    if not im_files:
        rep.unusable = f"no images found in {spec}"
        return rep
    lb_files = img2label_paths(im_files)
    items = _map(inspect_file, [(f, lb, nc) for f, lb in zip(im_files, lb_files)], f"check {split}", workers)
    rep.items = items
    first_copy = {} if first_copy is None else first_copy
    for it in items:
        rep.problems.extend(it.problems)
        if it.shape is None:
            continue
        rep.n_usable += 1
        rep.n_empty += not it.cls
        rep.instances.update(it.cls)
        if it.digest is not None:
            if it.digest in first_copy:
                rep.n_duplicate_images += 1
                other, where = first_copy[it.digest]
                where = "" if where == split else f" (in {where})"
                rep.problems.append(Problem(it.im_file, f"same bytes as {other}{where}", "duplicate_image"))
            else:
                first_copy[it.digest] = (it.im_file, split)
    expected = set(lb_files)
    label_dirs = {os.path.dirname(p) for p in lb_files}
    stems = {os.path.splitext(img2label_paths([f])[0])[0] for f in im_files}
    for p in _orphan_labels(expected, label_dirs, stems):
        rep.problems.append(Problem(p, "label file without an image", "orphan_label"))
    if fix:
        for it in items:
            if it.fixable and fix_label_file(it.lb_file, nc):
                rep.fixed.append(it.lb_file)
    if not rep.n_usable:
        rep.unusable = f"none of its {rep.n_images} images can be read"
    elif split in ("train", "val") and not rep.n_instances:
        rep.unusable = f"its {rep.n_usable} images hold no usable instance (every label file empty or invalid)"
    return rep


def check_dataset(data, plots: bool = False, fix: bool = False, save_dir=None, project: str = "runs/check",
                  name: str = "check", workers: int | None = None, samples: int = 16, seed: int = 0) -> CheckResult:
    """Check every split of the data YAML ``data``; see the module docstring. With ``plots``, the pictures go to
    ``save_dir`` (default: a new ``project/name`` folder, numbered when it exists)."""
    cfg = check_data_yaml(data)
    names, nc = cfg["names"], cfg["nc"]
    res = CheckResult({}, names)
    seen: dict = {}
    for split in SPLITS:
        if cfg.get(split) is None:
            continue
        res.splits[split] = check_split(split, cfg[split], nc, workers, fix, seen)
    # a label file is an orphan only when no split lists its image (splits may share label folders)
    listed = {it.lb_file for r in res.splits.values() for it in r.items}
    for r in res.splits.values():
        r.problems = [p for p in r.problems if p.kind != "orphan_label" or p.file not in listed]
    if plots:
        from yoloseg.utils.plot_labels import plot_label_stats, plot_overlays

        out = Path(save_dir) if save_dir is not None else increment_path(Path(project) / name)
        out.mkdir(parents=True, exist_ok=True)
        res.save_dir = str(out)
        for split, r in res.splits.items():
            usable = [it for it in r.items if it.shape is not None]
            if not usable:
                continue
            rng = np.random.default_rng(seed)
            pick = sorted(rng.choice(len(usable), min(samples, len(usable)), replace=False).tolist())
            suffix = "" if len(res.splits) == 1 else f"_{split}"
            r.plots.append(plot_overlays(out / f"overlays{suffix}.jpg", [usable[i] for i in pick], names))
            r.plots.append(plot_label_stats(out / f"labels{suffix}.jpg",
                                            [c for it in usable for c in it.cls],
                                            [p for it in usable for p in it.polys], names,
                                            [it.shape for it in usable for _ in it.polys]))
    return res


def format_report(res: CheckResult, limit: int | None = None) -> str:
    """The text `yoloseg check` prints: each split's summary, then every problem with its fix."""
    out = []
    for r in res.splits.values():
        out.append(r.summary(res.names))
        if r.problems:
            by_file = defaultdict(list)
            for p in r.problems:
                by_file[p.file].append(p)
            out.append(f"  problems ({len(r.problems)} in {len(by_file)} files):")
            shown = 0
            for f, ps in by_file.items():
                for p in ps:
                    if limit is not None and shown >= limit:
                        break
                    out.append(f"    {f}: {p.message}\n      fix: {p.fix}")
                    shown += 1
            if limit is not None and len(r.problems) > limit:
                out.append(f"    ... and {len(r.problems) - limit} more (limit=0 lists all)")
        if r.fixed:
            out.append(f"  fixed {len(r.fixed)} label files (originals kept as .bak)")
        for p in r.plots:
            out.append(f"  plot: {p}")
    return "\n".join(out)
