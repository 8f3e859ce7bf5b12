"""Segmentation data set: checked labels in, augmented samples and collated batches out.

A sample (``dataset[i]``) is a dict:

* ``img`` (3, H, W) uint8 RGB tensor; ``cls`` (n, 1) float32; ``bboxes`` (n, 4) float32 normalized xywh;
* ``masks``: with ``overlap_mask`` one (H/r, W/r) int32 map where value ``k+1`` marks the k-th instance
  (instances are ordered by area, largest first, so small ones are painted last and stay visible) and
  0 is background; without it (n, H/r, W/r) uint8 binary masks (``r`` = ``mask_ratio``);
* ``im_file``, ``ori_shape`` (h0, w0), ``resized_shape`` (h, w) after the long-side resize (before
  padding), ``ratio_pad`` ``((gain_h, gain_w), (pad_left, pad_top))`` mapping original pixels to ``img``
  (``x_img = x_orig * gain + pad``; exact for evaluation samples, informative only when augmenting).

:func:`collate_fn` stacks samples into the batch dict the loss and validator read (see its docstring).
The random state of a sample is derived from ``(seed, epoch, index)``, never from worker state, so a
batch is the same whatever the number of workers and after a resume.
"""

from __future__ import annotations

import logging
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from yoloseg.data.augment import (
    augment_hsv,
    copy_paste,
    copy_paste_flip,
    format_sample,
    letterbox_sample,
    cutmix,
    mixup,
    mosaic4,
    random_affine,
    random_flip,
)
from yoloseg.data.augment_polygons import Polygons
from yoloseg.data.labels import scan_labels
from yoloseg.data.yaml import list_image_files

__all__ = ["SegmentDataset", "build_dataset", "collate_fn"]

LOGGER = logging.getLogger("yoloseg.data")

# augmentation settings and their defaults (names as in the training configuration)
HYP_DEFAULTS = {
    "mosaic": 1.0,
    "mixup": 0.0,
    "cutmix": 0.0,
    "copy_paste": 0.0,
    "copy_paste_mode": "flip",
    "degrees": 0.0,
    "translate": 0.1,
    "scale": 0.5,
    "shear": 0.0,
    "perspective": 0.0,
    "fliplr": 0.5,
    "flipud": 0.0,
    "hsv_h": 0.015,
    "hsv_s": 0.7,
    "hsv_v": 0.4,
}
MAX_RETRIES = 10


class BadSample(Exception):
    """An image that could not be loaded at sample time (vanished or corrupt since the scan)."""


def _get(cfg, key, default):
    if cfg is None:
        return default
    if isinstance(cfg, dict):
        v = cfg.get(key, default)
    else:
        v = getattr(cfg, key, default)
    return default if v is None else v


class SegmentDataset(Dataset):
    """Images + YOLO-seg labels of one split.

    Args:
        img_path: folder, ``.txt`` list, image path, or a list of those (absolute, or relative to cwd).
        data: the dict of :func:`yoloseg.data.check_data_yaml` (``names`` / ``nc`` are used).
        imgsz: training/eval image size (square side; the long side when ``rect``).
        augment: apply the training augmentations (mosaic, affine, copy-paste, mixup, HSV, flips).
        hyp: augmentation settings (dict or namespace, keys of ``HYP_DEFAULTS``); missing keys use defaults.
        rect: rectangular batches (images sorted by aspect ratio, one padded shape per batch of
            ``batch_size``); only without augmentation. The loader must use the same batch size and no
            shuffling.
        cache: ``"ram"``/``True`` keeps the resized images in memory.
        single_cls / classes: merge all classes into class 0 / keep only the listed class ids.
        fraction: use only the first fraction of the images (after sorting by path).
        seed: base of every sample's random stream.
    """

    def __init__(
        self,
        img_path,
        data: dict,
        imgsz: int = 640,
        augment: bool = False,
        hyp=None,
        rect: bool = False,
        batch_size: int = 16,
        stride: int = 32,
        pad: float = 0.5,
        cache=False,
        single_cls: bool = False,
        classes=None,
        fraction: float = 1.0,
        seed: int = 0,
        overlap_mask: bool = True,
        mask_ratio: int = 4,
        label_cache: bool = True,
        prefix: str = "",
    ):
        super().__init__()
        if int(imgsz) <= 0 or (augment and int(imgsz) % 2):
            raise ValueError(f"imgsz must be a positive (and, for training, even) integer, got {imgsz!r}")
        self.imgsz = int(imgsz)
        self.augment = bool(augment)
        self.hyp = {k: _get(hyp, k, v) for k, v in HYP_DEFAULTS.items()}
        self.rect = bool(rect)  # with augment: rectangular training batches, mosaic off
        self.batch_size = max(int(batch_size), 1)
        self.stride = int(stride)
        self.seed = int(seed)
        self.overlap_mask = bool(overlap_mask)
        self.mask_ratio = int(mask_ratio)
        self.names = dict(data["names"])
        self.nc = len(self.names)
        self.prefix = prefix
        self.epoch = 0
        self._epoch_set = False
        self.mosaic_enabled = self.augment and float(self.hyp["mosaic"]) > 0 and not self.rect
        self.mosaic_closed = False  # close_mosaic() also ends copy-paste
        self.n_bad_loads = 0
        self._bad_files: set = set()

        files = list_image_files(img_path, what=f"{prefix}images")
        if not (0 < fraction <= 1):
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        if fraction < 1:
            files = files[: max(1, round(len(files) * fraction))]
        # single_cls: every class id becomes 0, so any id in the files is acceptable
        self.label_set = scan_labels(files, None if single_cls else self.nc, cache=label_cache, prefix=prefix)
        ls = self.label_set
        self.im_files = list(ls.im_files)
        self.shapes = np.asarray(ls.shapes).reshape(-1, 2)
        self.labels = []
        for f, shape, c, segs in zip(self.im_files, self.shapes, ls.cls, ls.segments):
            c = np.asarray(c, np.int64)
            if classes is not None:
                keep = np.isin(c, np.asarray(classes, np.int64))
                c, segs = c[keep], [s for s, k in zip(segs, keep) if k]
            if single_cls:
                c = np.zeros_like(c)
            self.labels.append({"im_file": f, "shape": (int(shape[0]), int(shape[1])), "cls": c, "segments": segs})
        if str(self.hyp["copy_paste_mode"]) not in ("flip", "mixup"):
            raise ValueError(f"copy_paste_mode must be 'flip' or 'mixup', got {self.hyp['copy_paste_mode']!r}")
        if self.rect:
            self._setup_rect(pad)
        self._ram = None
        self._disk = False
        if cache in (True, "ram", "RAM"):
            self._cache_ram()
        elif str(cache).lower() == "disk":
            self._cache_disk()
        elif cache not in (False, None, "", "false", "False"):
            LOGGER.warning(f"{prefix}cache={cache!r} is not supported (use 'ram' or 'disk'); images are read as they are")

    # ------------------------------------------------------------------ set-up

    def _setup_rect(self, pad: float) -> None:
        ar = self.shapes[:, 0] / self.shapes[:, 1]  # h / w
        order = np.argsort(ar, kind="stable")
        self.im_files = [self.im_files[i] for i in order]
        self.labels = [self.labels[i] for i in order]
        self.shapes = self.shapes[order]
        ar = ar[order]
        n_batches = math.ceil(len(ar) / self.batch_size)
        rel = np.ones((n_batches, 2))
        for b in range(n_batches):
            a = ar[b * self.batch_size : (b + 1) * self.batch_size]
            if a.max() < 1:
                rel[b] = [a.max(), 1]
            elif a.min() > 1:
                rel[b] = [1, 1 / a.min()]
        self.batch_shapes = (np.ceil(rel * self.imgsz / self.stride + pad).astype(int) * self.stride).tolist()

    def _cache_ram(self) -> None:
        def load(i):
            try:
                return self._read_resized(i)
            except BadSample:
                return None

        with ThreadPoolExecutor(4) as ex:
            self._ram = list(ex.map(load, range(len(self))))
        mb = sum(r[0].nbytes for r in self._ram if r is not None) / 2**20
        LOGGER.info(f"{self.prefix}cached {len(self)} images in RAM ({mb:.0f} MB)")

    def disk_cache_file(self, i: int) -> Path:
        """cache=disk: the decoded, resized image ``i`` beside it, e.g. ``photo.jpg.640.npz``."""
        f = Path(self.im_files[i])
        return f.with_name(f"{f.name}.{self.imgsz}.npz")

    def _disk_cache_fresh(self, i: int) -> bool:
        c = self.disk_cache_file(i)
        try:
            return c.stat().st_mtime >= Path(self.im_files[i]).stat().st_mtime
        except OSError:
            return False

    def _write_disk_cache(self, i: int, img: np.ndarray, ori) -> None:
        from yoloseg.utils.files import atomic_path

        with atomic_path(self.disk_cache_file(i)) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, img=img, ori=np.asarray(ori, np.int64))

    def _cache_disk(self) -> None:
        """Decode and resize every image once into an .npz beside it (rebuilt when the image is newer);
        later runs at the same imgsz read those instead of decoding. A folder that cannot be written is
        reported once and read as usual."""
        todo = [i for i in range(len(self)) if not self._disk_cache_fresh(i)]

        def build(i):
            try:
                img, ori = self._read_resized(i)
            except BadSample:
                return 0
            self._write_disk_cache(i, img, ori)
            return img.nbytes

        try:
            with ThreadPoolExecutor(4) as ex:
                written = sum(ex.map(build, todo))
        except OSError as e:
            LOGGER.warning(f"{self.prefix}cache=disk: cannot write beside the images ({e}); reading the images")
            return
        self._disk = True
        LOGGER.info(f"{self.prefix}cache=disk: {len(todo)} of {len(self)} images written ({written / 2**20:.0f} MB), "
                    f"as <image>.{self.imgsz}.npz beside each image")

    def _read_disk_cached(self, i: int):
        if self._disk_cache_fresh(i):
            try:
                with np.load(self.disk_cache_file(i)) as z:
                    return z["img"], tuple(int(v) for v in z["ori"])
            except (OSError, ValueError, KeyError, EOFError):
                pass  # a damaged cache file: decode the image and write it again
        img, ori = self._read_resized(i)
        try:
            self._write_disk_cache(i, img, ori)
        except OSError:
            pass
        return img, ori

    def __len__(self) -> int:
        return len(self.im_files)

    # ------------------------------------------------------------------ control

    def set_epoch(self, epoch: int) -> None:
        """Epoch used for sampling when indexed with a plain int (workers=0, or no epoch-aware sampler).

        Until this is called, plain-int indexing draws each sample's seed from torch's global random
        state instead (fresh augmentations every epoch, reproducible when that state is).
        """
        self.epoch = int(epoch)
        self._epoch_set = True

    def close_mosaic(self, *_args) -> None:
        """Turn mosaic, mixup, cutmix and copy-paste off, e.g. for the last ``close_mosaic`` epochs."""
        self.mosaic_enabled = False
        self.mosaic_closed = True

    # ------------------------------------------------------------------ loading

    def _read_resized(self, i: int):
        f = self.im_files[i]
        h0, w0 = (int(v) for v in self.shapes[i])
        # JPEG decoders can scale by 1/2, 1/4, 1/8 while decoding: much faster for large photos
        factor = next((k for k in (8, 4, 2) if max(h0, w0) / k >= self.imgsz), 1)
        img = None
        if factor > 1 and f.lower().endswith((".jpg", ".jpeg")):
            flag = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}
            try:
                img = cv2.imread(f, flag[factor])
            except cv2.error:  # a reduced decode OpenCV cannot do: decode fully below
                img = None
            if img is not None and abs(img.shape[0] * w0 - img.shape[1] * h0) > max(h0, w0) * 2:
                img = None  # orientation differs from the scan: decode fully below
        if img is None:
            img = cv2.imread(f, cv2.IMREAD_COLOR)
            if img is None:
                raise BadSample(f"{f}: image missing or cannot be decoded")
            h0, w0 = img.shape[:2]
        r = self.imgsz / max(h0, w0)
        size = (min(math.ceil(w0 * r), self.imgsz), min(math.ceil(h0 * r), self.imgsz))
        if (img.shape[1], img.shape[0]) != size:
            img = cv2.resize(img, size, interpolation=cv2.INTER_LINEAR)
        return img, (h0, w0)

    def load_sample(self, i: int) -> dict:
        """Image ``i`` resized so its long side is ``imgsz`` with its polygons in pixels of that image."""
        cached = self._ram[i] if self._ram is not None else None
        if cached is None:
            cached = self._read_disk_cached(i) if self._disk else self._read_resized(i)
        img, ori = cached
        h, w = img.shape[:2]
        lab = self.labels[i]
        return {
            "img": img,
            "cls": lab["cls"].copy(),
            "polys": Polygons.from_list(lab["segments"], scale=(w, h)),
            "im_file": self.im_files[i],
            "ori_shape": tuple(ori),
            "resized_shape": (h, w),
        }

    def _load_or_substitute(self, i: int, rng: np.random.Generator) -> dict:
        for _ in range(MAX_RETRIES):
            try:
                return self.load_sample(i)
            except BadSample as e:
                self._note_bad(i, e)
                i = int(rng.integers(0, len(self)))
        raise RuntimeError(f"{self.prefix}{MAX_RETRIES} images in a row failed to load; see the warnings above")

    def _note_bad(self, i: int, err: Exception) -> None:
        self.n_bad_loads += 1
        f = self.im_files[i]
        if f not in self._bad_files:
            self._bad_files.add(f)
            LOGGER.warning(f"{self.prefix}skipping sample: {err}")

    # ------------------------------------------------------------------ sampling

    def __getitem__(self, key):
        if isinstance(key, (tuple, list)):
            index, epoch, mosaic_on = int(key[0]), int(key[1]), bool(key[2]) and self.mosaic_enabled
            closed = not bool(key[2]) or self.mosaic_closed
            stream = [self.seed, epoch, index]
        else:
            index, mosaic_on, closed = int(key), self.mosaic_enabled, self.mosaic_closed
            if self._epoch_set or not self.augment:
                stream = [self.seed, self.epoch, index]
            else:
                stream = [self.seed, index, int(torch.randint(0, 2**62, (1,)))]
        n = len(self)
        if not 0 <= index < n:
            raise IndexError(f"index {index} out of range for a data set of {n} images")
        rng = np.random.default_rng(stream)
        for attempt in range(MAX_RETRIES):
            try:
                sample = self._augmented(index, rng, mosaic_on, closed) if self.augment else self._plain(index)
                return format_sample(sample, self.mask_ratio, self.overlap_mask)
            except BadSample as e:
                self._note_bad(index, e)
                if self.rect:  # keep the batch's shape: another image of the same batch
                    b = index // self.batch_size
                    lo, hi = b * self.batch_size, min((b + 1) * self.batch_size, n)
                    index = lo + (index - lo + 1) % (hi - lo)
                else:
                    index = int(rng.integers(0, n))
        raise RuntimeError(f"{self.prefix}{MAX_RETRIES} images in a row failed to load; see the warnings above")

    def _plain(self, index: int) -> dict:
        s = self.load_sample(index)
        shape = self.batch_shapes[index // self.batch_size] if self.rect else self.imgsz
        s = letterbox_sample(s, shape, auto=False, scaleup=False)
        (sy, sx), pad = s.pop("letterbox")
        h0, w0 = s["ori_shape"]
        h, w = s["resized_shape"]
        s["ratio_pad"] = ((h / h0 * sy, w / w0 * sx), pad)
        return s

    def _base(self, index: int, rng: np.random.Generator, mosaic_on: bool, closed: bool = False) -> dict:
        hyp = self.hyp
        if mosaic_on and rng.random() < hyp["mosaic"]:
            others = rng.integers(0, len(self), 3)
            parts = [self.load_sample(index)] + [self._load_or_substitute(int(j), rng) for j in others]
            s = mosaic4(parts, rng, self.imgsz)
            border = s.pop("mosaic_border")
        else:
            shape = self.batch_shapes[index // self.batch_size] if self.rect else self.imgsz
            s = letterbox_sample(self.load_sample(index), shape, auto=False, scaleup=False)
            s.pop("letterbox")
            border = (0, 0)
        if hyp["copy_paste"] and not closed and str(hyp["copy_paste_mode"]) == "flip":
            s = copy_paste_flip(s, rng, float(hyp["copy_paste"]))
        s = random_affine(
            s,
            rng,
            degrees=float(hyp["degrees"]),
            translate=float(hyp["translate"]),
            scale=float(hyp["scale"]),
            shear=float(hyp["shear"]),
            perspective=float(hyp["perspective"]),
            border=border,
        )
        return s

    def _augmented(self, index: int, rng: np.random.Generator, mosaic_on: bool, closed: bool = False) -> dict:
        hyp = self.hyp
        s = self._base(index, rng, mosaic_on, closed)
        if mosaic_on and hyp["mixup"] and rng.random() < hyp["mixup"]:
            j = int(rng.integers(0, len(self)))
            try:
                s = mixup(s, self._base(j, rng, mosaic_on), rng)
            except BadSample as e:
                self._note_bad(j, e)
        if mosaic_on and hyp["cutmix"] and rng.random() < hyp["cutmix"]:
            j = int(rng.integers(0, len(self)))
            try:
                s = cutmix(s, self._base(j, rng, mosaic_on), rng)
            except BadSample as e:
                self._note_bad(j, e)
        if hyp["copy_paste"] and not closed and str(hyp["copy_paste_mode"]) == "mixup":
            j = int(rng.integers(0, len(self)))
            try:
                s = copy_paste(s, self._base(j, rng, mosaic_on), rng, float(hyp["copy_paste"]))
            except BadSample as e:
                self._note_bad(j, e)
        s["img"] = augment_hsv(s["img"], rng, hyp["hsv_h"], hyp["hsv_s"], hyp["hsv_v"])
        s = random_flip(s, rng, p_lr=float(hyp["fliplr"]), p_ud=float(hyp["flipud"]))
        h0, w0 = s["ori_shape"]
        h, w = s["resized_shape"]
        s["ratio_pad"] = ((h / h0, w / w0), (0, 0))
        return s


def _pad_to(sample: dict, H: int, W: int) -> dict:
    """Pad a formatted sample at the bottom/right to (H, W); boxes are renormalized, pixels keep place."""
    _, h, w = sample["img"].shape
    out = dict(sample)
    img = torch.full((3, H, W), 114, dtype=sample["img"].dtype)
    img[:, :h, :w] = sample["img"]
    out["img"] = img
    out["bboxes"] = sample["bboxes"] * torch.tensor([w / W, h / H, w / W, h / H])
    m = sample["masks"]
    mh, mw = m.shape[-2:]
    MH, MW = mh * H // h, mw * W // w
    masks = torch.zeros((*m.shape[:-2], MH, MW), dtype=m.dtype)
    masks[..., :mh, :mw] = m
    out["masks"] = masks
    return out


def collate_fn(samples: list) -> dict:
    """Stack samples into a batch dict.

    ``img`` (B, 3, H, W) **uint8** RGB (divide by 255 for the model); ``batch_idx`` (M,) float32 image index
    of each instance; ``cls`` (M, 1) float32; ``bboxes`` (M, 4) float32 normalized xywh; ``masks`` (B, H/r,
    W/r) int32 instance-index maps (overlap mode; values 1..n follow each image's instance order in
    ``cls``/``bboxes``) or (M, H/r, W/r) uint8 binary masks; ``im_file``, ``ori_shape``, ``resized_shape``,
    ``ratio_pad``: tuples with one entry per image.

    Images of different sizes (rect batches loaded with another batch size) are padded at the bottom/right
    to the largest one; boxes are renormalized, so ``ratio_pad`` stays valid.
    """
    if not samples:
        raise ValueError("collate_fn got an empty list of samples")
    shapes = {tuple(s["img"].shape) for s in samples}
    if len(shapes) > 1:
        H = max(s["img"].shape[1] for s in samples)
        W = max(s["img"].shape[2] for s in samples)
        samples = [s if tuple(s["img"].shape[1:]) == (H, W) else _pad_to(s, H, W) for s in samples]
    batch = {"img": torch.stack([s["img"] for s in samples])}
    counts = [len(s["cls"]) for s in samples]
    batch["batch_idx"] = torch.repeat_interleave(torch.arange(len(samples), dtype=torch.float32), torch.tensor(counts))
    batch["cls"] = torch.cat([s["cls"] for s in samples]).reshape(-1, 1)
    batch["bboxes"] = torch.cat([s["bboxes"] for s in samples]).reshape(-1, 4)
    first = samples[0]["masks"]
    if first.dtype == torch.int32 and first.ndim == 2:
        batch["masks"] = torch.stack([s["masks"] for s in samples])
    else:
        batch["masks"] = torch.cat([s["masks"] for s in samples])
    for k in ("im_file", "ori_shape", "resized_shape", "ratio_pad"):
        batch[k] = tuple(s[k] for s in samples)
    return batch


def build_dataset(data_cfg: dict, split: str, cfg=None, augment: bool = False, batch=None, stride: int = 32, rect=None):
    """The :class:`SegmentDataset` of ``split`` (``"train"``/``"val"``/``"test"``) of a checked data dict.

    ``cfg`` (namespace or dict) supplies imgsz, the augmentation settings, cache, single_cls, classes,
    fraction (train only), seed, overlap_mask, mask_ratio, rect and batch. Evaluation data sets
    (``augment=False``) use rectangular batches of ``batch`` (default ``cfg.batch``) unless ``rect=False``.
    """
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
    img_path = data_cfg.get(split)
    if not img_path:
        raise ValueError(f"data set {data_cfg.get('yaml_file', '')} has no '{split}' split")
    if rect is None:  # evaluation: rectangular unless rect=False; training: only with rect=True
        rect = bool(_get(cfg, "rect", False)) if augment else True
    rect = bool(rect)
    batch = int(batch if batch is not None else _get(cfg, "batch", 16))
    return SegmentDataset(
        img_path,
        data_cfg,
        imgsz=int(_get(cfg, "imgsz", 640)),
        augment=augment,
        hyp=cfg,
        rect=rect,
        batch_size=max(batch, 1),
        stride=stride,
        cache=_get(cfg, "cache", False),
        single_cls=bool(_get(cfg, "single_cls", False)),
        classes=_get(cfg, "classes", None),
        fraction=float(_get(cfg, "fraction", 1.0)) if split == "train" else 1.0,
        seed=int(_get(cfg, "seed", 0)),
        overlap_mask=bool(_get(cfg, "overlap_mask", True)),
        mask_ratio=int(_get(cfg, "mask_ratio", 4)),
        pad=0.0 if augment else 0.5,
        prefix=f"{split}: ",
    )
