"""End-to-end prediction: sources -> letterbox -> model -> NMS + masks -> :class:`Results` -> files.

``Predictor(cfg, model, task)`` is task-agnostic: the task supplies ``postprocess`` (raw model
output -> per-image dicts of Results fields) and the ``results`` type. :func:`segment_postprocess`
is the built-in segment task's postprocess.

Pipeline per batch of ``batch`` frames
--------------------------------------
1. Letterbox each BGR image to ``imgsz`` (int or (h, w), rounded up to the model stride). A batch
   of equally sized images gets the minimal stride-aligned rectangle (``auto``), mixed sizes are
   padded to the full ``imgsz``. Tensor sources are used as they are.
2. Stack, BGR -> RGB, ``/255``, float32 (float16 with ``half=True`` on CUDA only); run the model,
   fused (Conv+BN folded, on a private copy), under ``torch.inference_mode``.
3. ``ops.non_max_suppression`` (conf, iou, classes, agnostic_nms, max_det), then the masks:
   ``retina_masks=False`` decodes them at the letterboxed input size (``ops.process_mask``) and
   scales the boxes to the original image; ``retina_masks=True`` scales the boxes first and
   decodes straight to the original size (``ops.process_mask_native``). Detections whose mask
   is empty are dropped.
4. Results, with ``speed`` (ms per image); annotated images, videos (OpenCV, mp4v) and
   ``labels/*.txt`` are written to ``runs/<task>/predict{N}`` when ``save``/``save_txt`` is set.
"""

from __future__ import annotations

import copy
import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from yoloseg.data.letterbox import LetterBox
from yoloseg.data.sources import load_sources
from yoloseg.engine.pipeline import (
    FinishStage,
    inference_memory_format,
    loader_workers,
    prefetch,
    thread_plan,
    to_memory_format,
)
from yoloseg.utils.files import atomic_write_bytes

__all__ = ["Predictor", "segment_postprocess"]

LOGGER = logging.getLogger("yoloseg")
_SAVE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def segment_postprocess(
    preds,
    input_shape,
    orig_shapes,
    conf: float = 0.25,
    iou: float = 0.7,
    classes=None,
    agnostic: bool = False,
    max_det: int = 300,
    retina_masks: bool = False,
    ops=None,
    crops: bool = False,
) -> list[dict]:
    """Raw segment-model output -> per-image ``{"boxes": (n, 6), "masks": (n, h, w) bool | None}``.

    ``preds`` is ``(pred (B, 4+nc+nm, A), protos (B, nm, h, w))``; ``input_shape`` the (H, W) the
    model saw; ``orig_shapes`` the (h, w) of each original image. Boxes are x1, y1, x2, y2 in
    original-image pixels, conf, cls. When there are masks, ``"mask_boxes"`` (n, 4) holds
    boxes in mask pixels that contain every set pixel of their mask (the tight windows of the set
    pixels on the CPU, the crop boxes elsewhere), so polygon extraction reads only those windows. ``ops`` selects the kernel module (default
    :mod:`yoloseg.ops`; :mod:`yoloseg.ops.reference` gives the pure-torch path).

    ``crops=True`` (what the predictor asks for its own Results): on the CPU with the compiled
    kernels, ``"masks"`` is a :class:`yoloseg.ops.mask_crops.MaskCrops` (the same pixels, only the
    box regions stored; ``Results.masks.data`` builds the dense tensor when it is read), and the whole
    postprocess is one compiled call per image (:mod:`yoloseg.ops.pipeline`, the C++ API of csrc/pipeline.h).
    """
    if ops is None:
        from yoloseg import ops
    pred, protos = preds
    input_shape = tuple(int(v) for v in input_shape[-2:])
    if crops and getattr(ops, "__name__", "") == "yoloseg.ops" and _pipeline_ok(pred, protos):
        from yoloseg.ops.pipeline import segment_postprocess_image  # the code C++ embedders run (csrc/pipeline.h)

        return [
            segment_postprocess_image(
                pred[i], protos[i], input_shape, orig_shapes[i], conf=conf, iou=iou, classes=classes,
                agnostic=agnostic, max_det=max_det, retina_masks=retina_masks,
            )
            for i in range(len(pred))
        ]
    nm = protos.shape[1]
    dets = ops.non_max_suppression(
        pred, conf_thres=conf, iou_thres=iou, classes=classes, agnostic=agnostic, max_det=max_det, nm=nm
    )
    out = []
    for i, det in enumerate(dets):
        shape0 = tuple(int(v) for v in orig_shapes[i][:2])
        if len(det) == 0:
            out.append({"boxes": det[:, :6].float(), "masks": None})
            continue
        coeffs = det[:, 6:]
        if crops and ops is not None and getattr(ops, "__name__", "") == "yoloseg.ops" and _crops_ok(protos, det):
            out.append(_crops_output(protos[i], det, input_shape, shape0, retina_masks, ops))
            continue
        if retina_masks:
            boxes = ops.scale_boxes(input_shape, det[:, :4].clone(), shape0)
            crop = boxes
            masks = ops.process_mask_native(protos[i], coeffs, boxes, shape0)
        else:
            crop = det[:, :4]
            masks = ops.process_mask(protos[i], coeffs, crop, input_shape, upsample=True)
            boxes = ops.scale_boxes(input_shape, det[:, :4].clone(), shape0)
        keep, crop = _set_pixel_windows(masks, crop)
        boxes = torch.cat([boxes, det[:, 4:6]], 1).float()
        if not bool(keep.all()):
            boxes, masks, crop = boxes[keep], masks[keep], crop[keep]
        if not len(boxes):
            out.append({"boxes": boxes, "masks": None})
        else:
            out.append({"boxes": boxes, "masks": masks, "mask_boxes": crop})
    return out


def _pipeline_ok(pred, protos) -> bool:
    from yoloseg.ops.pipeline import available

    return (
        isinstance(pred, torch.Tensor) and isinstance(protos, torch.Tensor) and pred.ndim == 3 and protos.ndim == 4
        and len(pred) == len(protos) and available(pred, protos)
    )


def _crops_ok(protos, det) -> bool:
    from yoloseg.ops.mask_crops import available

    return available(protos, det)


def _crops_output(protos, det, input_shape, shape0, retina_masks, ops) -> dict:
    from yoloseg.ops.mask_crops import decode_mask_crops

    boxes = ops.scale_boxes(input_shape, det[:, :4].clone(), shape0)
    if retina_masks:
        masks = decode_mask_crops(protos, det[:, 6:], boxes, shape0, native=True)
    else:
        masks = decode_mask_crops(protos, det[:, 6:], det[:, :4], input_shape)
    boxes = torch.cat([boxes, det[:, 4:6]], 1).float()
    keep = masks.windows[:, 2] > masks.windows[:, 0]
    if not keep.all():
        boxes, masks = boxes[torch.from_numpy(keep)], masks.select(keep)
    if not len(boxes):
        return {"boxes": boxes, "masks": None}
    return {"boxes": boxes, "masks": masks, "mask_boxes": torch.from_numpy(masks.windows).float()}


def _set_pixel_windows(masks: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(keep (n,) bool, windows (n, 4) float)``: which of the (n, h, w) bool masks have a pixel set,
    and boxes in mask pixels that contain every set pixel of each mask.

    Decoded masks are zero outside their box (``boxes``, xyxy in mask pixels), so on the CPU only
    the box window, grown by one pixel, is scanned (a few percent of the pixels for typical
    detections) and the windows returned are the tight [x0, y0, x1, y1) of the set pixels; polygon
    extraction then traces only those. Elsewhere the masks are scanned whole and the windows are
    the boxes themselves.
    """
    n = masks.shape[0]
    if n and masks.device.type == "cpu" and masks.dtype == torch.bool:
        from yoloseg.ops.polygons import mask_windows

        grown = boxes.detach().double().cpu() + torch.tensor([-1.0, -1.0, 1.0, 1.0], dtype=torch.float64)
        wins = torch.from_numpy(mask_windows(masks, grown))
        return wins[:, 2] > wins[:, 0], wins.float()
    return _nonempty(masks), boxes.float()


def _nonempty(masks: torch.Tensor, boxes: torch.Tensor | None = None) -> torch.Tensor:
    """(n,) bool: which of the (n, h, w) bool masks have a pixel set.

    Decoded masks are zero outside their box, so with ``boxes`` (n, 4 xyxy, in mask pixels) on the
    CPU only the box window (grown by one pixel) is scanned (:func:`_set_pixel_windows`). Without
    boxes, or off the CPU, the masks are scanned as 64-bit words (bool bytes are 0/1, so a word is
    > 0 exactly when one of its pixels is set).
    """
    n, h, w = masks.shape
    if boxes is not None and n and masks.device.type == "cpu" and masks.dtype == torch.bool:
        return _set_pixel_windows(masks, boxes)[0]
    if masks.dtype == torch.bool and masks.is_contiguous() and n and (h * w) % 8 == 0:
        try:
            return masks.view(n, -1).view(torch.int64).amax(1) > 0
        except RuntimeError:  # storage not 8-byte aligned
            pass
    return masks.flatten(1).any(1)


def _get(cfg, key, default=None):
    v = getattr(cfg, key, default) if not isinstance(cfg, dict) else cfg.get(key, default)
    return default if v is None else v


def _log(msg: str, bar=None) -> None:
    if bar is not None:
        bar.write(msg, file=sys.stderr)
    else:
        print(msg, file=sys.stderr, flush=True)


class Predictor:
    """Runs a model over any :func:`yoloseg.data.sources.load_sources` source.

    Args:
        cfg: settings namespace (``yoloseg.cfg.get_cfg``) or dict; keys read: imgsz, batch, device,
            half, conf, iou, classes, agnostic_nms, max_det, retina_masks, vid_stride, stream,
            save, save_txt, save_conf, project, name, exist_ok, show_labels, show_conf,
            show_boxes, line_width, verbose.
        model: a model whose eval forward gives ``(pred, protos)``, with ``names`` and ``stride``.
        task: the :class:`yoloseg.tasks.Task` (postprocess + results type); None means segment.
    """

    def __init__(self, cfg=None, model=None, task=None):
        self.cfg = cfg if cfg is not None else SimpleNamespace()
        self.model = model
        self.task = task
        self.net = None  # the prepared (fused, on device) copy
        self.device = None
        self.save_dir = None
        self.speed = {"preprocess": 0.0, "inference": 0.0, "postprocess": 0.0}
        self.seen = 0
        self.skipped: list[tuple[str, str]] = []
        self._writers: dict = {}
        self._names_used: dict = {}

    # ----- settings -----------------------------------------------------------------------------
    def _c(self, key, default=None):
        return _get(self.cfg, key, default)

    @property
    def names(self) -> dict:
        names = getattr(self.model, "names", None) or {}
        return dict(names) if not isinstance(names, (list, tuple)) else dict(enumerate(names))

    @property
    def stride(self) -> int:
        s = getattr(self.model, "stride", None)
        if s is None:
            return 32
        return int(torch.as_tensor(s).max()) if not isinstance(s, (int, float)) else int(s)

    def imgsz(self) -> tuple[int, int]:
        fixed = getattr(self.model, "imgsz", None) if getattr(self.model, "fixed_input", False) else None
        if fixed is not None:  # a static-shape exported model takes only its exported size
            return tuple(int(t) for t in fixed)
        v = self._c("imgsz", 640)
        if isinstance(v, (int, np.integer)):
            v = (int(v), int(v))
        v = [int(x) for x in v]
        if len(v) == 1:
            v = v * 2
        if len(v) != 2 or min(v) <= 0:
            raise ValueError(f"imgsz must be an int or [h, w] of positive ints, got {self._c('imgsz')!r}")
        s = self.stride
        fixed = tuple(-(-x // s) * s for x in v)
        if fixed != tuple(v):
            LOGGER.warning(f"imgsz={list(v)} is not a multiple of the model stride {s}; using {list(fixed)}")
        return fixed

    # ----- model --------------------------------------------------------------------------------
    def setup_model(self):
        if self.net is not None:
            return self.net
        if self.model is None:
            raise ValueError("Predictor needs a model")
        import yoloseg.ops  # noqa: F401  (loads the compiled kernels now, not inside the first image's timing)
        from yoloseg.utils.torch_utils import select_device

        self.device = select_device(self._c("device", None))
        net = self.model
        if isinstance(net, torch.nn.Module):
            net = copy.deepcopy(net)  # fusing and casting must not touch the caller's model
            if hasattr(net, "fuse") and not (hasattr(net, "is_fused") and net.is_fused()):
                net = net.fuse()
            net = net.to(self.device).eval()
        self.memory_format = inference_memory_format(self.device) if isinstance(net, torch.nn.Module) else (
            torch.contiguous_format)
        to_memory_format(net, self.memory_format)
        self._show = bool(self._c("show", False)) and _display_available()
        self.half = bool(self._c("half", False))
        if self.half and self.device.type != "cuda":
            LOGGER.warning("half=True needs a CUDA device; running in float32")
            self.half = False
        if self.half and isinstance(net, torch.nn.Module):
            net = net.half()
        self.net = net
        return net

    # ----- stages -------------------------------------------------------------------------------
    def preprocess(self, frames) -> torch.Tensor:
        """Frames -> model input (B, 3, H, W) float in [0, 1], RGB, on the device."""
        return self.to_device(self.load(frames))

    def load(self, frames) -> torch.Tensor:
        """Frames -> model input on the CPU (the load stage: letterbox, RGB, float, ``/255``).

        Decoded images are letterboxed straight into one (B, H, W, 3) RGB uint8 block, which is the
        channels-last layout of (B, 3, H, W); converting it to float keeps that layout (or makes the
        contiguous one), so the input is copied once per batch and divided by 255 in place.
        """
        if frames[0].tensor is not None:
            x = torch.stack([f.tensor for f in frames])
            s = self.stride
            if x.shape[-1] % s or x.shape[-2] % s:
                raise ValueError(
                    f"tensor source of size {tuple(x.shape[-2:])} must be a multiple of the model stride {s} "
                    "(tensors are fed to the model as they are)"
                )
            return x
        same = len({f.image.shape for f in frames}) == 1
        lb = LetterBox(self.imgsz(), auto=same and not getattr(self.model, "fixed_input", False), stride=self.stride)
        imgs = [lb(f.image)[0] for f in frames]
        h, w = imgs[0].shape[:2]
        block = np.empty((len(imgs), h, w, 3), np.uint8)
        for i, im in enumerate(imgs):
            block[i] = im[..., ::-1]
        x = torch.from_numpy(block).permute(0, 3, 1, 2)
        if self.device is not None and self.device.type != "cpu":
            return x  # uint8: converted on the device (to_device)
        fmt = getattr(self, "memory_format", torch.contiguous_format)
        return x.to(dtype=torch.float32, memory_format=fmt).div_(255)

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        """The loaded input on the model's device, dtype and memory format (no copy when it already is)."""
        fmt = getattr(self, "memory_format", torch.contiguous_format)
        dtype = torch.float16 if self.half else torch.float32
        if x.dtype == torch.uint8:
            x = x.to(self.device, non_blocking=self.device.type == "cuda")
            return x.to(dtype=dtype, memory_format=fmt).div_(255)
        return x.to(self.device, dtype=dtype, non_blocking=self.device.type == "cuda", memory_format=fmt)

    def inference(self, x):
        out = self.net(x)
        if isinstance(out, dict):
            out = out.get("one2many", out)
        if isinstance(out, (list, tuple)) and len(out) == 2 and isinstance(out[0], (list, tuple)):
            out = out[0]  # ((pred, protos), extra)
        return out[0], out[1]

    def postprocess(self, preds, x, frames) -> list:
        fn = getattr(self.model, "postprocess", None) if not isinstance(self.model, torch.nn.Module) else None
        if fn is None and self.task is not None and getattr(self.task, "postprocess", None) is not None:
            fn = self.task.resolve("postprocess")  # the function itself, not its lazy loader
        fn = fn or segment_postprocess  # end-to-end files bring theirs (above)
        results_type = None
        if self.task is not None and getattr(self.task, "results", None) is not None:
            results_type = self.task.resolve("results")
        if results_type is None:
            from yoloseg.engine.results import Results as results_type
        pred, protos = preds
        from yoloseg.engine.results import Results

        # our own Results take packed mask crops (no dense (n, h, w) block unless .data is read)
        extra = {"crops": True} if fn is segment_postprocess and results_type is Results else {}
        outs = fn(
            (pred.float(), protos.float()), tuple(x.shape[-2:]), [f.image.shape[:2] for f in frames],
            conf=float(self._c("conf", 0.25)), iou=float(self._c("iou", 0.7)), classes=class_filter(self._c("classes")),
            agnostic=bool(self._c("agnostic_nms", False)), max_det=int(self._c("max_det", 300)),
            retina_masks=bool(self._c("retina_masks", False)), **extra,
        )
        if not _accepts(results_type, "mask_boxes"):  # a task's own Results type may not take the hint
            outs = [{k: v for k, v in o.items() if k != "mask_boxes"} for o in outs]
        return [results_type(f.image, f.path, self.names, **o) for f, o in zip(frames, outs)]

    # ----- driving ------------------------------------------------------------------------------
    def __call__(self, source=None, stream: bool | None = None):
        stream = bool(self._c("stream", False)) if stream is None else stream
        gen = self.stream_inference(source)
        return gen if stream else list(gen)

    @staticmethod
    def _batches(frames, n):
        """Groups of up to ``n`` frames; tensor frames are never mixed with decoded images."""
        buf = []
        for f in frames:
            if buf and (f.tensor is None) != (buf[0].tensor is None):
                yield buf
                buf = []
            buf.append(f)
            if len(buf) == n:
                yield buf
                buf = []
        if buf:
            yield buf

    def stream_inference(self, source):
        """Generator of Results, one per frame, batch by batch (bounded memory).

        Three stages overlap (:mod:`yoloseg.engine.pipeline`): ``workers`` threads decode and letterbox
        the next batch, the main thread runs the forward, and one thread post-processes and writes the
        previous batch. Results come out in source order; ``speed`` holds each stage's own time per image.
        """
        src = load_sources(source, vid_stride=int(self._c("vid_stride", 1)))
        self.setup_model()
        verbose = bool(self._c("verbose", True))
        bsz = max(int(self._c("batch", 1) or 1), 1)
        workers = loader_workers(self._c("workers", 0))
        bar = None
        if verbose and src.show_progress:
            from tqdm import tqdm

            bar = tqdm(total=src.count_frames(), unit="img", file=sys.stderr, dynamic_ncols=True, leave=True)
        self.seen, self._writers, self._names_used = 0, {}, {}
        totals = {"preprocess": 0.0, "inference": 0.0, "postprocess": 0.0}
        input_shape = None
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        decode_pool = ThreadPoolExecutor(workers, thread_name_prefix="yoloseg-decode") if workers > 1 else None
        frames_iter = src.frames(pool=decode_pool, ahead=2 * workers) if decode_pool is not None else iter(src)
        loaded = prefetch(self._load_batches(frames_iter, bsz), enabled=workers > 0)
        # workers=0: every stage in the main thread, strictly lazy; windows are always drawn from the main thread
        finish = FinishStage(enabled=workers > 0 and not self._show)
        pending = None
        try:
            with thread_plan(self.device):
                for frames, x, t_load in loaded:
                    t1 = time.perf_counter()
                    x = self.to_device(x)
                    with torch.inference_mode():
                        preds = self.inference(x)
                    sync()
                    t_inf = time.perf_counter() - t1
                    input_shape = tuple(x.shape[1:])
                    job = (finish.submit(self._finish, preds, x, frames), frames, input_shape, t_load, t_inf)
                    del x, preds
                    if not finish.enabled:  # serial: this batch's Results before the next source is touched
                        yield from self._emit(*job, totals, bar, verbose)
                        continue
                    if pending is not None:  # the previous batch, finished while this one ran
                        yield from self._emit(*pending, totals, bar, verbose)
                    pending = job
                if pending is not None:
                    job, pending = pending, None
                    yield from self._emit(*job, totals, bar, verbose)
        finally:
            loaded.close()
            finish.close()
            if decode_pool is not None:
                decode_pool.shutdown(wait=True, cancel_futures=True)
            if bar is not None:
                bar.close()
            for w in self._writers.values():
                w[1].release()
            self._writers = {}
            self.skipped = list(src.skipped)
        if self.seen:
            self.speed = {k: v / self.seen for k, v in totals.items()}
        if verbose:
            if self.seen:
                s = self.speed
                _log(
                    f"Speed: {s['preprocess']:.1f}ms preprocess, {s['inference']:.1f}ms inference, "
                    f"{s['postprocess']:.1f}ms postprocess per image at shape (1, {', '.join(map(str, input_shape))})"
                )
            if self.save_dir is not None:
                _log(f"Results saved to {self.save_dir}")
        if self.skipped:
            shown = ", ".join(p for p, _ in self.skipped[:5]) + (" ..." if len(self.skipped) > 5 else "")
            LOGGER.warning(
                f"skipped {len(self.skipped)} of {len(src.entries)} sources that could not be read: {shown}"
            )

    def _load_batches(self, frames_iter, bsz):
        """The load stage: (frames, CPU input, seconds spent letterboxing) per batch."""
        for frames in self._batches(frames_iter, bsz):
            t0 = time.perf_counter()
            x = self.load(frames)
            yield frames, x, time.perf_counter() - t0

    def _finish(self, preds, x, frames):
        """The finish stage: Results of one batch, written to disk; -> (results, postprocess seconds)."""
        t0 = time.perf_counter()
        with torch.inference_mode():
            results = self.postprocess(preds, x, frames)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        for f, r in zip(frames, results):
            self._write(f, r)
        return results, dt

    def _emit(self, job, frames, input_shape, t_load, t_inf, totals, bar, verbose):
        results, t_post = job.result()
        n = len(frames)
        speed = {"preprocess": t_load * 1e3 / n, "inference": t_inf * 1e3 / n, "postprocess": t_post * 1e3 / n}
        for k in totals:
            totals[k] += speed[k] * n
        for f, r in zip(frames, results):
            r.speed = dict(speed)
            self.seen += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(f"{r.verbose()}, {speed['inference']:.1f}ms", refresh=False)
            elif verbose:
                _log(f"{f.info}: {input_shape[1]}x{input_shape[2]} {r.verbose()}, {speed['inference']:.1f}ms")
            yield r

    # ----- outputs ------------------------------------------------------------------------------
    def _ensure_save_dir(self) -> Path:
        if self.save_dir is None:
            from yoloseg.utils.files import increment_path

            task = getattr(self.task, "name", None) or "segment"
            project = self._c("project", None) or Path("runs") / task
            name = self._c("name", None) or "predict"
            self.save_dir = increment_path(Path(project) / name, exist_ok=bool(self._c("exist_ok", False)))
            self.save_dir.mkdir(parents=True, exist_ok=True)
        return self.save_dir

    def _base_name(self, frame) -> str:
        """Unique file stem per source (same-named files from different folders get -2, -3...)."""
        key = frame.path if frame.kind == "video" else (frame.path, frame.index)
        if key not in self._names_used:
            stem = Path(frame.path.split("?")[0]).stem or "image"
            used = set(self._names_used.values())
            base, k = stem, 1
            while base in used:
                k += 1
                base = f"{stem}-{k}"
            self._names_used[key] = base
        return self._names_used[key]

    def _write(self, frame, r) -> None:
        save, save_txt = bool(self._c("save", False)), bool(self._c("save_txt", False))
        save_crop = bool(self._c("save_crop", False))
        save_frames = bool(self._c("save_frames", False)) and frame.kind == "video"
        if getattr(self, "_show", False):
            import cv2

            cv2.imshow(str(frame.path), self._plot(r))
            cv2.waitKey(1 if frame.kind == "video" else 500)
        if not (save or save_txt or save_crop or save_frames):
            return
        d = self._ensure_save_dir()
        r.save_dir = str(d)
        base = self._base_name(frame)
        stem = base if frame.kind != "video" else f"{base}_{frame.frame}"
        if save_txt:
            r.save_txt(d / "labels" / f"{stem}.txt", save_conf=bool(self._c("save_conf", False)))
        if save_crop:
            r.save_crop(d / "crops", stem)
        if not (save or save_frames):
            return
        import cv2

        img = self._plot(r)
        if save_frames:  # each annotated video frame as an image too
            ok, buf = cv2.imencode(".jpg", img)
            if not ok:
                raise ValueError(f"cannot encode frame {frame.frame} of '{frame.path}'")
            (d / f"{base}_frames").mkdir(exist_ok=True)
            atomic_write_bytes(d / f"{base}_frames" / f"{stem}.jpg", buf.tobytes())
        if not save:
            return
        if frame.kind == "video":
            self._write_video_frame(d, base, frame, img)
        else:
            ext = Path(frame.path.split("?")[0]).suffix.lower()
            ext = ext if ext in _SAVE_EXTS else ".jpg"
            ok, buf = cv2.imencode(ext, img)
            if not ok:
                raise ValueError(f"cannot encode the annotated image for '{frame.path}'")
            atomic_write_bytes(d / f"{base}{ext}", buf.tobytes())

    def _plot(self, r):
        return r.plot(
            conf=bool(self._c("show_conf", True)), labels=bool(self._c("show_labels", True)),
            boxes=bool(self._c("show_boxes", True)), line_width=self._c("line_width", None),
        )

    def _write_video_frame(self, d: Path, base: str, frame, img) -> None:
        import cv2

        key = frame.path
        if key not in self._writers:
            for old in list(self._writers):  # sources are sequential: close the previous video
                self._writers.pop(old)[1].release()
            fps = max(1.0, (frame.fps or 30.0) / int(self._c("vid_stride", 1)))
            path = d / f"{base}.mp4"
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (img.shape[1], img.shape[0]))
            if not writer.isOpened():
                raise ValueError(f"cannot open a video writer for '{path}'")
            self._writers[key] = (path, writer)
        self._writers[key][1].write(img)


def _display_available() -> bool:
    """True when OpenCV can open a window; otherwise warns that show=True is ignored."""
    import cv2

    try:
        cv2.namedWindow("yoloseg", cv2.WINDOW_NORMAL)
        cv2.destroyWindow("yoloseg")
        return True
    except cv2.error:
        LOGGER.warning(
            "show=True needs OpenCV with GUI support and a display (this one has none: the default "
            "opencv-python-headless); predictions are not shown. Use save=True, or install opencv-python."
        )
        return False


def _accepts(fn, name: str) -> bool:
    import inspect

    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def class_filter(v):
    """The ``classes=`` setting as a list of class ids (or None: every class)."""
    if v is None:
        return None
    if isinstance(v, (int, np.integer)):
        return [int(v)]
    return [int(c) for c in v]
