"""Prediction sources: turn whatever the user passes as ``source`` into a lazy stream of frames.

Accepted sources
----------------
* a path to an image or a video file; a folder (its files, sorted by name, not recursive);
  a glob pattern (``"imgs/*.jpg"``, ``**`` recurses); a list/tuple of any of these;
* an ``http(s)://`` URL, downloaded with :mod:`urllib` to a temporary file when it is used;
* a BGR ``uint8`` numpy array ``(h, w, 3)`` (``(h, w)`` grey and ``(h, w, 4)`` BGRA are converted),
  a ``(b, h, w, 3)`` stack, or a list of arrays;
* a PIL image (any mode, converted to RGB then BGR) or a list of them;
* a torch tensor ``(3, H, W)`` or ``(B, 3, H, W)``, RGB float in ``[0, 1]``; it is fed to the model
  as is, so ``H`` and ``W`` must be multiples of the model stride.

Nothing is read before it is needed: a folder of 10,000 images or a 10-minute video is decoded one
frame at a time. Errors name the offending path. A single path is *strict* (a missing, empty,
corrupt or unsupported file raises ``FileNotFoundError``/``ValueError``); folders, globs and lists
are *lenient*: bad entries are skipped with a warning and recorded in :attr:`Source.skipped`.
"""

from __future__ import annotations

import glob as _glob
import logging
import os
import shutil
import sys
import tempfile
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np

__all__ = ["IMG_FORMATS", "VID_FORMATS", "Frame", "Source", "load_sources", "read_image"]

LOGGER = logging.getLogger("yoloseg")

IMG_FORMATS = frozenset(
    {"bmp", "dib", "jpg", "jpeg", "jpe", "jp2", "png", "tif", "tiff", "webp", "pbm", "pgm", "ppm", "pnm", "pfm", "sr",
     "ras", "mpo"}
)
VID_FORMATS = frozenset({"asf", "avi", "gif", "m4v", "mkv", "mov", "mp4", "mpeg", "mpg", "ts", "wmv", "webm"})
_GLOB_CHARS = ("*", "?", "[")


@dataclass
class Frame:
    """One image to predict on.

    ``image`` is the original BGR uint8 image. ``tensor`` is set only for tensor sources (the
    model input itself, RGB float (3, H, W)). ``kind`` is ``"image"``, ``"video"``, ``"array"`` or
    ``"tensor"``; for video frames ``frame`` is the 1-based frame number and ``frames`` the count.
    """

    path: str
    image: np.ndarray
    kind: str = "image"
    tensor: Any = None
    frame: int | None = None
    frames: int | None = None
    fps: float | None = None
    index: int = 0

    @property
    def info(self) -> str:
        if self.kind == "video":
            total = self.frames if self.frames else "?"
            return f"video {self.path} (frame {self.frame}/{total})"
        return f"{self.kind} {self.path}"


def _is_url(s: str) -> bool:
    return s.lower().startswith(("http://", "https://"))


def _ext(path) -> str:
    return Path(str(path).split("?")[0]).suffix[1:].lower()


def _check_file(path: Path) -> None:
    if not path.exists():
        raise FileNotFoundError(f"source not found: '{path}'")
    if path.is_dir():
        raise ValueError(f"expected a file, got a folder: '{path}'")
    if path.stat().st_size == 0:
        raise ValueError(f"empty file (0 bytes): '{path}'")


def read_image(path) -> np.ndarray:
    """Decode an image file to a BGR uint8 array; clear errors for missing/empty/corrupt files."""
    path = Path(path)
    _check_file(path)
    data = np.fromfile(str(path), dtype=np.uint8)  # works for non-ASCII paths, unlike cv2.imread
    img = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        raise ValueError(f"cannot decode image (corrupt or not an image): '{path}'")
    return img


def _to_bgr(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.dtype != np.uint8:
        raise ValueError(f"numpy source {name} must be uint8 BGR, got dtype {arr.dtype}")
    if arr.ndim == 2:
        return cv2.cvtColor(arr, cv2.COLOR_GRAY2BGR)
    if arr.ndim == 3 and arr.shape[2] == 3:
        return np.ascontiguousarray(arr)
    if arr.ndim == 3 and arr.shape[2] == 4:
        return cv2.cvtColor(arr, cv2.COLOR_BGRA2BGR)
    if arr.ndim == 3 and arr.shape[2] == 1:
        return cv2.cvtColor(arr[..., 0], cv2.COLOR_GRAY2BGR)
    raise ValueError(f"numpy source {name} must have shape (h, w), (h, w, 3) or (h, w, 4), got {arr.shape}")


def _is_pil(obj) -> bool:
    return type(obj).__module__.startswith("PIL.") and hasattr(obj, "convert") and hasattr(obj, "size")


def _is_tensor(obj) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.Tensor)


def _pil_to_bgr(im) -> np.ndarray:
    rgb = np.asarray(im.convert("RGB"))
    return np.ascontiguousarray(rgb[..., ::-1])


def _check_tensor(t):
    import torch

    if t.ndim == 3:
        t = t.unsqueeze(0)
    if t.ndim != 4 or t.shape[1] != 3:
        raise ValueError(f"tensor source must be (3, H, W) or (B, 3, H, W) RGB, got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise ValueError(f"tensor source must be float RGB in [0, 1], got dtype {t.dtype}")
    if t.numel() and (float(t.max()) > 1.0 + 1e-6 or float(t.min()) < -1e-6):
        raise ValueError(
            f"tensor source values must lie in [0, 1] (got {float(t.min()):.3g}..{float(t.max()):.3g}); divide by 255"
        )
    return t.to(torch.float32)


class Source:
    """A lazy, re-iterable collection of frames. See the module docstring for what it accepts.

    Attributes:
        entries: the resolved items (paths, URLs, arrays); nothing is decoded yet.
        lenient: bad entries are skipped with a warning instead of raising.
        skipped: ``(path, reason)`` of every entry skipped during the last iteration.
        vid_stride: keep one video frame out of ``vid_stride``.
    """

    def __init__(self, entries: list[tuple[str, Any, str]], lenient: bool, vid_stride: int = 1, description: str = ""):
        self.entries = entries
        self.lenient = lenient
        self.vid_stride = int(vid_stride)
        if self.vid_stride < 1:
            raise ValueError(f"vid_stride must be >= 1, got {vid_stride!r}")
        self.description = description
        self.skipped: list[tuple[str, str]] = []

    @property
    def has_video(self) -> bool:
        return any(kind in ("file", "url") and _ext(name) in VID_FORMATS for kind, _, name in self.entries)

    @property
    def show_progress(self) -> bool:
        """Folders, globs, long lists and videos get a progress bar."""
        return self.description in ("folder", "glob") or len(self.entries) > 1 or self.has_video

    def count_frames(self) -> int | None:
        """Frames this source will yield (videos counted from their headers; None if unknown)."""
        total = 0
        for kind, value, name in self.entries:
            if kind in ("file", "url") and _ext(name) in VID_FORMATS:
                if kind == "url":
                    return None
                cap = cv2.VideoCapture(str(value))
                n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
                cap.release()
                if n <= 0:
                    return None
                total += -(-n // self.vid_stride)
            elif kind == "tensor":
                total += value.shape[0]
            else:
                total += 1
        return total

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[Frame]:
        return self.frames()

    def frames(self, pool=None, ahead: int = 0) -> Iterator[Frame]:
        """The frames in order. With ``pool`` (a ``concurrent.futures`` executor), image files are decoded
        by its threads, up to ``ahead`` entries in advance; the frames, their order and the skipping of bad
        entries are the same as without it."""
        self.skipped = []
        index = 0
        entries = iter(self.entries)
        pending: deque = deque()
        ahead = max(int(ahead), 1) if pool is not None else 1
        while True:
            while len(pending) < ahead:
                e = next(entries, None)
                if e is None:
                    break
                kind, value, name = e
                decode = pool is not None and kind == "file" and _ext(value) in IMG_FORMATS
                pending.append((e, pool.submit(read_image, Path(value)) if decode else None))
            if not pending:
                return
            (kind, value, name), fut = pending.popleft()
            try:
                frames = [Frame(name, fut.result(), kind="image")] if fut is not None else self._frames(kind, value, name)
                for frame in frames:
                    frame.index = index
                    index += 1
                    yield frame
            except (FileNotFoundError, ValueError, ConnectionError) as e:
                if not self.lenient:
                    raise
                LOGGER.warning(f"skipping {name}: {e}")
                self.skipped.append((name, str(e)))

    # --- per-entry frame generators -------------------------------------------------------------
    def _frames(self, kind, value, name) -> Iterator[Frame]:
        if kind == "array":
            yield Frame(name, value, kind="array")
        elif kind == "pil":
            yield Frame(name, _pil_to_bgr(value), kind="array")
        elif kind == "tensor":
            for i in range(value.shape[0]):
                t = value[i]
                bgr = (t.detach().permute(1, 2, 0).flip(-1) * 255).round().clamp(0, 255).byte().cpu().numpy()
                label = name if value.shape[0] == 1 else f"image{i}.jpg"
                yield Frame(label, np.ascontiguousarray(bgr), kind="tensor", tensor=t)
        elif kind == "url":
            yield from self._url_frames(value)
        else:
            yield from self._file_frames(Path(value), name)

    def _file_frames(self, path: Path, name: str) -> Iterator[Frame]:
        ext = _ext(path)
        if ext in VID_FORMATS:
            yield from self._video_frames(path, name)
        elif ext in IMG_FORMATS:
            yield Frame(name, read_image(path), kind="image")
        else:
            _check_file(path)
            raise ValueError(
                f"unsupported file extension '.{ext}' for '{path}'; images: {', '.join(sorted(IMG_FORMATS))}; "
                f"videos: {', '.join(sorted(VID_FORMATS))}"
            )

    def _video_frames(self, path: Path, name: str) -> Iterator[Frame]:
        _check_file(path)
        cap = cv2.VideoCapture(str(path))
        try:
            if not cap.isOpened():
                raise ValueError(f"cannot open video: '{path}'")
            frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
            fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
            if not np.isfinite(fps) or fps <= 0:
                fps = 30.0
            n = 0
            while cap.grab():
                ok, img = cap.retrieve()
                if not ok or img is None:
                    break
                n += 1
                yield Frame(name, img, kind="video", frame=(n - 1) * self.vid_stride + 1, frames=frames, fps=fps)
                for _ in range(self.vid_stride - 1):  # skipped frames are grabbed, never decoded
                    if not cap.grab():
                        break
            if n == 0:
                raise ValueError(f"cannot read any frame from video: '{path}'")
        finally:
            cap.release()

    def _url_frames(self, url: str) -> Iterator[Frame]:
        tmpdir = tempfile.mkdtemp(prefix="yoloseg-url-")
        try:
            local = Path(tmpdir) / (Path(url.split("?")[0]).name or "download")
            _download(url, local)
            ext = _ext(local)
            if ext in VID_FORMATS:
                yield from self._video_frames(local, url)
            else:
                img = cv2.imdecode(np.fromfile(str(local), dtype=np.uint8), cv2.IMREAD_COLOR)
                if img is None:
                    raise ValueError(f"downloaded content is not a readable image: '{url}'")
                yield Frame(url, img, kind="image")
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)


def _download(url: str, dst: Path, timeout: float = 30.0) -> None:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as r, open(dst, "wb") as f:
            shutil.copyfileobj(r, f)
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise ConnectionError(f"could not download '{url}' ({reason}); check the network or pass a local file") from e
    if dst.stat().st_size == 0:
        raise ValueError(f"downloaded an empty file from '{url}'")


def _expand_path(s: str, entries: list, lenient: bool) -> str:
    """Resolve one string source into entries; returns a description of what it was."""
    if _is_url(s):
        entries.append(("url", s, s))
        return "url"
    p = Path(s).expanduser()
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file())
        media = [f for f in files if _ext(f) in IMG_FORMATS | VID_FORMATS]
        ignored = len(files) - len(media)
        if not media:
            raise FileNotFoundError(f"no images or videos found in folder '{p}'")
        if ignored:
            LOGGER.info(f"{p}: ignoring {ignored} file(s) that are neither images nor videos")
        entries.extend(("file", f, str(f)) for f in media)
        return "folder"
    if p.exists():
        if not lenient:
            _check_file(p)
            if _ext(p) not in IMG_FORMATS | VID_FORMATS:
                raise ValueError(
                    f"unsupported file extension '.{_ext(p)}' for '{p}'; images: {', '.join(sorted(IMG_FORMATS))}; "
                    f"videos: {', '.join(sorted(VID_FORMATS))}"
                )
        entries.append(("file", p, str(p)))
        return "file"
    if any(c in s for c in _GLOB_CHARS):
        matches = sorted(_glob.glob(os.path.expanduser(s), recursive=True))
        media = [m for m in matches if os.path.isfile(m) and _ext(m) in IMG_FORMATS | VID_FORMATS]
        if not media:
            raise FileNotFoundError(f"no images or videos match the pattern '{s}'")
        entries.extend(("file", Path(m), m) for m in media)
        return "glob"
    if lenient:
        entries.append(("file", p, str(p)))  # reported (and skipped) when iterated
        return "file"
    raise FileNotFoundError(f"source not found: '{s}'")


def load_sources(source, vid_stride: int = 1) -> Source:
    """Resolve ``source`` (see module docstring) into a lazy :class:`Source`."""
    if source is None:
        raise ValueError("source is required: an image/video path, folder, glob, URL, array, PIL image or tensor")
    entries: list[tuple[str, Any, str]] = []
    if isinstance(source, (str, os.PathLike)):
        desc = _expand_path(os.fspath(source), entries, lenient=False)
        return Source(entries, lenient=desc in ("folder", "glob"), vid_stride=vid_stride, description=desc)
    if isinstance(source, np.ndarray):
        if source.ndim == 4:
            entries.extend(("array", _to_bgr(a, f"[{i}]"), f"image{i}.jpg") for i, a in enumerate(source))
        else:
            entries.append(("array", _to_bgr(source, "array"), "image0.jpg"))
        return Source(entries, lenient=False, vid_stride=vid_stride, description="array")
    if _is_pil(source):
        name = getattr(source, "filename", "") or "image0.jpg"
        entries.append(("pil", source, str(name)))
        return Source(entries, lenient=False, vid_stride=vid_stride, description="pil")
    if _is_tensor(source):
        entries.append(("tensor", _check_tensor(source), "image0.jpg"))
        return Source(entries, lenient=False, vid_stride=vid_stride, description="tensor")
    if isinstance(source, (list, tuple)):
        if not source:
            raise ValueError("source list is empty")
        for i, item in enumerate(source):
            if isinstance(item, (str, os.PathLike)):
                _expand_path(os.fspath(item), entries, lenient=True)
            elif isinstance(item, np.ndarray):
                entries.append(("array", _to_bgr(item, f"[{i}]"), f"image{i}.jpg"))
            elif _is_pil(item):
                entries.append(("pil", item, str(getattr(item, "filename", "") or f"image{i}.jpg")))
            elif _is_tensor(item):
                entries.append(("tensor", _check_tensor(item), f"image{i}.jpg"))
            else:
                raise ValueError(f"unsupported source list item {i}: {type(item).__name__}")
        return Source(entries, lenient=True, vid_stride=vid_stride, description="list")
    raise ValueError(
        f"unsupported source type {type(source).__name__}; pass a path, folder, glob, URL, numpy array, PIL image, "
        "torch tensor or a list of these"
    )
