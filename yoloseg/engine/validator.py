"""Validation: run a model over a data split and report COCO box and mask mAP.

``Validator(cfg, model=None, task=None, dataloader=None)`` then ``validator()`` (or ``.run()``) returns
:class:`yoloseg.metrics.segment.SegmentMetrics`. Two ways to use it:

* stand-alone (``yoloseg val``, ``YOLO(...).val()``): builds the loader of ``cfg.split`` of ``cfg.data``
  (rectangular letterboxed batches of ``cfg.batch``), runs a fused copy of the model, and writes
  ``predictions.json`` (``save_json``) and plots (``plots``) to ``runs/<task>/val{N}``;
* inside training: the trainer passes its val ``dataloader`` once and calls ``validator(model=ema)`` every
  epoch; the model is used as it is (no copy, no fusing) and its train/eval state is restored afterwards.

Per batch: ``/255`` -> model -> ``ops.non_max_suppression`` (conf default 0.001, iou, max_det, classes,
agnostic_nms) -> boxes mapped to the original image with the batch's ``ratio_pad`` (``ops.scale_boxes``);
masks: ``coeffs @ protos`` upsampled bilinearly to the network input, the letterbox padding cut away,
resized bilinearly to the original image size, thresholded at 0 and cropped to the original-image box,
then run-length encoded. Ground truth comes from the YOLO label files at the original size (polygon ->
RLE; see :class:`yoloseg.metrics.segment.SegmentEvaluator`), or from a COCO annotation file given as
``coco_gt=`` or as the data YAML key ``coco_gt``. Everything is evaluated once by
:func:`yoloseg.metrics.coco_evaluate` (box and mask), the numbers reported are COCO's. docs/val.md.
"""

from __future__ import annotations

import copy
import json
import logging
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from yoloseg.engine.pipeline import FinishStage, inference_memory_format, memory_format, thread_plan
from yoloseg.engine.predictor import class_filter
from yoloseg.engine.val_masks import masks_to_original
from yoloseg.metrics.confusion import ConfusionMatrix
from yoloseg.metrics.segment import SegmentEvaluator

__all__ = ["Validator", "masks_to_original", "assign_image_ids"]

LOGGER = logging.getLogger("yoloseg")
N_PLOT_BATCHES = 3


def _get(cfg, key, default=None):
    v = cfg.get(key, default) if isinstance(cfg, dict) else getattr(cfg, key, default)
    return default if v is None else v


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def assign_image_ids(files) -> dict:
    """Image file -> COCO image id: the file stem as an int when every stem is a distinct number (COCO's
    own file names, e.g. ``000000030213.jpg`` -> 30213), else 1, 2, ... in sorted path order."""
    files = sorted(set(str(f) for f in files))
    stems = [Path(f).stem for f in files]
    if stems and all(s.isdigit() for s in stems) and len({int(s) for s in stems}) == len(stems):
        return {f: int(s) for f, s in zip(files, stems)}
    return {f: i + 1 for i, f in enumerate(files)}


class Validator:
    """COCO box and mask evaluation of a segmentation model (see the module docstring).

    Args:
        cfg: settings namespace or dict; keys read: data, split, imgsz, batch, workers, device, half, conf,
            iou, max_det, classes, agnostic_nms, single_cls, save_json, plots, project, name, exist_ok,
            verbose, model (when no model object is given).
        model: the model (eval forward -> (pred, protos)), or None to load ``cfg.model`` or to receive it in
            ``__call__``.
        task: the :class:`yoloseg.tasks.Task` (its name names the runs folder).
        dataloader: an existing val loader (the trainer's); ``cfg.data`` is then not read.
        coco_gt: path of a COCO instances JSON to evaluate against instead of the YOLO labels.
        loss_fn: a training loss ``(train outputs, batch) -> (loss, items)``; when given (the trainer
            does), the model's head also returns its training outputs during the loop and the metrics
            carry the mean val loss items in ``.loss``.
    """

    def __init__(self, cfg=None, model=None, task=None, dataloader=None, save_dir=None, coco_gt=None, loss_fn=None):
        self.cfg = cfg if cfg is not None else SimpleNamespace()
        self.loss_fn = loss_fn  # the trainer's loss: val losses from the same forward passes
        self._loss_sum, self._loss_batches = None, 0
        self.model = model
        self.task = task
        self.dataloader = dataloader
        self.save_dir = Path(save_dir) if save_dir is not None else None
        self.coco_gt = coco_gt
        self.metrics = None
        self.speed = {"preprocess": 0.0, "inference": 0.0, "postprocess": 0.0}
        self.evaluator = None
        self.confusion = None
        self.problems: list[tuple[str, str]] = []
        self._plot_batches: list = []  # first batches kept to draw once the best-F1 confidence is known

    def _c(self, key, default=None):
        return _get(self.cfg, key, default)

    def __call__(self, model=None, trainer=None):
        return self.run(model)

    # ------------------------------------------------------------------ set-up
    def _resolve_model(self, model):
        model = model if model is not None else self.model
        if model is None:
            path = self._c("model")
            if not path or not str(path).endswith(".pt"):
                raise ValueError(f"val needs a model: a checkpoint path (model=...) or a model object, got {path!r}")
            from yoloseg.checkpoints import load_checkpoint

            model, _ = load_checkpoint(str(path))
        return model

    def _prepare(self, model, external: bool):
        """-> (net, device, restore callback)."""
        from yoloseg.utils.torch_utils import select_device

        if not isinstance(model, torch.nn.Module):
            device = select_device(self._c("device"))
            return model, device, lambda: None
        params = next(model.parameters(), None)
        if external:
            device = params.device if params is not None else torch.device("cpu")
            was = model.training
            model.eval()
            return model, device, (lambda: model.train(was))
        device = select_device(self._c("device"))
        net = copy.deepcopy(model)
        if hasattr(net, "fuse") and not (hasattr(net, "is_fused") and net.is_fused()):
            net = net.fuse()
        net = net.float().to(device).eval()
        return net, device, lambda: None

    def _stride(self, model) -> int:
        s = getattr(model, "stride", None)
        if s is None:
            return 32
        return max(int(torch.as_tensor(s).max()) if not isinstance(s, (int, float)) else int(s), 32)

    def _build_loader(self, model):
        from yoloseg.data import build_dataloader, build_dataset, check_data_yaml

        data_arg = self._c("data")
        if not data_arg:
            raise ValueError("val needs data=<data YAML>; this model does not remember one")
        data = check_data_yaml(data_arg)
        if self._c("single_cls", False):
            data["names"], data["nc"] = {0: "item"}, 1
        split = str(self._c("split", "val"))
        if not data.get(split):
            raise ValueError(f"data: {data.get('yaml_file')} has no '{split}' split")
        stride = self._stride(model)
        imgsz = self._c("imgsz", 640)
        imgsz = max(imgsz) if isinstance(imgsz, (list, tuple)) else int(imgsz)
        imgsz = max(-(-int(imgsz) // stride) * stride, stride)
        bs = self._c("batch", 16)
        bs = int(bs) if float(bs) >= 1 else 16
        rect = not getattr(model, "fixed_input", False)
        if not rect:  # a static export: every image letterboxed to exactly its input size
            fixed = tuple(int(v) for v in getattr(model, "imgsz", (imgsz, imgsz)))
            if fixed[0] != fixed[1]:
                raise ValueError(f"validating a static {fixed[0]}x{fixed[1]} export needs square inputs; "
                                 "export with dynamic=True (or a square imgsz)")
            if fixed[0] != imgsz:
                LOGGER.warning(f"imgsz={imgsz} ignored: the exported model takes {fixed[0]}x{fixed[1]} inputs")
            imgsz = fixed[0]
        cfg = SimpleNamespace(**{**(vars(self.cfg) if not isinstance(self.cfg, dict) else self.cfg),
                                 "imgsz": imgsz, "batch": bs})
        dataset = build_dataset(data, split, cfg, augment=False, batch=bs, stride=stride, rect=rect)
        workers = int(self._c("workers", 0) or 0)
        loader = build_dataloader(dataset, bs, workers=workers, shuffle=False,
                                  pin_memory=False if self._c("device") in (None, "cpu") else None)
        return loader, data

    def _make_evaluator(self, dataset, data) -> SegmentEvaluator:
        names = {int(k): str(v) for k, v in dataset.names.items()}
        coco_gt = self.coco_gt or (data or {}).get("coco_gt")
        if coco_gt:
            return self._coco_gt_evaluator(coco_gt, dataset, names, data)
        return SegmentEvaluator(names)

    def _coco_gt_evaluator(self, coco_gt, dataset, names, data) -> SegmentEvaluator:
        p = Path(str(coco_gt)).expanduser()
        if not p.is_absolute() and data is not None:
            p = Path(data.get("path", ".")) / p
        if not p.is_file():
            raise FileNotFoundError(f"coco_gt: no such file: {p}")
        gt = json.loads(p.read_text())
        cats = sorted(int(c["id"]) for c in gt.get("categories", []))
        if len(cats) != len(names):
            raise ValueError(f"coco_gt {p}: {len(cats)} categories but the data set has {len(names)} classes; "
                             "class index i is mapped to the i-th category id in ascending order")
        mapping = {i: cats[i] for i in sorted(names)}
        cat_names = {int(c["id"]): c.get("name") for c in gt["categories"]}
        differ = [i for i in names if cat_names.get(mapping[i]) not in (None, names[i])]
        if differ:
            LOGGER.warning(f"coco_gt {p}: {len(differ)} class names differ from the category names "
                           f"(first: class {differ[0]} {names[differ[0]]!r} -> category {mapping[differ[0]]} "
                           f"{cat_names.get(mapping[differ[0]])!r})")
        ev = SegmentEvaluator(names, mapping)
        ev.coco_source = str(p)
        ev.coco_images = {Path(im["file_name"]).name: im for im in gt.get("images", [])}
        ev.coco_anns = {}
        for a in gt.get("annotations", []):
            ev.coco_anns.setdefault(int(a["image_id"]), []).append(a)
        return ev

    # ------------------------------------------------------------------ running
    def run(self, model=None):
        model = self._resolve_model(model)
        external = self.dataloader is not None
        net, device, restore = self._prepare(model, external)
        try:
            if external:
                loader, data = self.dataloader, None
            else:
                loader, data = self._build_loader(model)
            dataset = loader.dataset
            self.evaluator = ev = self._make_evaluator(dataset, data)
            self.confusion = ConfusionMatrix(ev.nc)
            self._check_classes(model, ev)
            self._loss_sum, self._loss_batches = None, 0
            was = self._train_outputs(net, True) if self.loss_fn is not None else None
            try:
                self._loop(net, device, loader, dataset, ev, external)
            finally:
                if was is not None:
                    self._train_outputs(net, was)
        finally:
            restore()
        metrics = self._finish(ev, external)
        if self._loss_batches and metrics is not None:
            metrics.loss = (self._loss_sum / self._loss_batches).tolist()
        return metrics

    def _check_classes(self, model, ev):
        nc = getattr(model, "nc", None)
        if nc is None and getattr(model, "names", None):
            nc = len(model.names)
        if nc is not None and int(nc) != ev.nc:
            LOGGER.warning(f"the model has {nc} classes but the data set {ev.nc}: detections of class i are "
                           f"scored as data set class i")

    def _inference(self, net, x, batch=None):
        out = net(x)
        if isinstance(out, dict):
            out = out.get("one2many", out)
        if isinstance(out, (list, tuple)) and len(out) == 2 and isinstance(out[0], (list, tuple)):
            out, train_out = out
            if batch is not None and self.loss_fn is not None and isinstance(train_out, (list, tuple)):
                self._add_loss(train_out, batch, x)
        return out[0], out[1]

    def _add_loss(self, train_out, batch, x):
        feats, coeffs, protos = train_out
        dev = x.device
        lb = {k: batch[k].to(dev) for k in ("batch_idx", "cls", "bboxes", "masks") if torch.is_tensor(batch.get(k))}
        lb["img"] = x.float()
        _, items = self.loss_fn(([f.float() for f in feats], coeffs.float(), protos.float()), lb)
        items = items.detach().float().cpu()
        self._loss_sum = items if self._loss_sum is None else self._loss_sum + items
        self._loss_batches += 1

    def _train_outputs(self, net, on: bool):
        """Ask the head for its training outputs too (val losses); returns the previous setting."""
        head = getattr(net, "model", None)
        head = head[-1] if isinstance(head, torch.nn.Sequential) or isinstance(head, torch.nn.ModuleList) else None
        if head is None or not hasattr(head, "with_train_outputs"):
            return None
        was = head.with_train_outputs
        head.with_train_outputs = on
        return was

    def _loop(self, net, device, loader, dataset, ev, external):
        """Forward in the main thread; NMS, masks and scoring of each batch in the finish stage, beside the
        next forward (:mod:`yoloseg.engine.pipeline`). Batches are finished in order."""
        labels = {lab["im_file"]: lab for lab in getattr(dataset, "labels", [])}
        ctx = SimpleNamespace(
            ev=ev, labels=labels, ids=assign_image_ids(getattr(dataset, "im_files", labels.keys())),
            coco_images=getattr(ev, "coco_images", None), seen_files=set(), device=device,
            conf=float(self._c("conf", 0.001)), iou=float(self._c("iou", 0.7)), max_det=int(self._c("max_det", 300)),
            classes=class_filter(self._c("classes")), agnostic=bool(self._c("agnostic_nms", False)),
            plots=self._plots_on(external), end2end=bool(getattr(net, "end2end", False)),
        )
        half = bool(self._c("half", False)) and device.type == "cuda" and isinstance(net, torch.nn.Module)
        if half:
            net = net.half()
        dtype = torch.float16 if half else torch.float32
        fmt = inference_memory_format(device) if isinstance(net, torch.nn.Module) else torch.contiguous_format
        self._plot_batches = []
        verbose = bool(self._c("verbose", True))
        self.seen, self.n_nonfinite = 0, 0
        self._totals = totals = {"preprocess": 0.0, "inference": 0.0, "postprocess": 0.0}
        bar = None
        if verbose:
            from tqdm import tqdm

            bar = tqdm(total=len(loader), file=sys.stderr, desc=f"{'val':>11}", unit="batch", leave=not external,
                       dynamic_ncols=True, mininterval=0.5)
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        pending = None
        try:
            with thread_plan(device), memory_format(net, fmt), FinishStage() as finish:
                for batch in loader:
                    if batch is None or len(batch.get("img", ())) == 0:
                        continue
                    t0 = time.perf_counter()
                    img = batch["img"]
                    x = img.to(device, non_blocking=device.type == "cuda").to(dtype=dtype, memory_format=fmt)
                    x = x.div_(255) if x.data_ptr() != img.data_ptr() else x / 255  # never scale the batch itself
                    sync()
                    t1 = time.perf_counter()
                    with torch.inference_mode():
                        pred, protos = self._inference(net, x, batch)
                    sync()
                    t2 = time.perf_counter()
                    totals["preprocess"] += (t1 - t0) * 1e3
                    totals["inference"] += (t2 - t1) * 1e3
                    job = finish.submit(self._finish_batch, ctx, batch, pred, protos, tuple(x.shape[-2:]))
                    if pending is not None:
                        pending.result()
                        if bar is not None:
                            bar.update(1)
                    pending = job
                    del x, pred, protos
                if pending is not None:
                    job, pending = pending, None
                    job.result()
                    if bar is not None:
                        bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        if self.seen:
            self.speed = {k: v / self.seen for k, v in totals.items()}

    def _finish_batch(self, c, batch, pred, protos, input_hw) -> None:
        """NMS, masks and scoring of one batch (the finish stage; one batch at a time, in order)."""
        from yoloseg import ops

        t0 = time.perf_counter()
        with torch.inference_mode():
            pred, protos = pred.float(), protos.float()
            if c.end2end:
                dets, protos = self._end2end(pred, protos, c.conf, c.classes, c.max_det, input_hw)
            else:
                pred = self._drop_nonfinite(pred, c.conf, batch)
                dets = ops.non_max_suppression(pred, conf_thres=c.conf, iou_thres=c.iou, classes=c.classes,
                                               agnostic=c.agnostic, max_det=c.max_det, nm=protos.shape[1])
            for i, det in enumerate(dets):
                f = batch["im_file"][i]
                if f in c.seen_files:  # a substitute for an unreadable image: counted once
                    continue
                c.seen_files.add(f)
                self._add_image(c.ev, f, c.ids, c.labels, c.coco_images, batch, i, det, protos[i], input_hw, ops)
            if c.device.type == "cuda":
                torch.cuda.synchronize()
        self._totals["postprocess"] += (time.perf_counter() - t0) * 1e3
        if c.plots and len(self._plot_batches) < N_PLOT_BATCHES:  # drawn in _finish
            self._plot_batches.append((len(self._plot_batches), batch, [d.cpu() for d in dets[:16]],
                                       protos[:16].cpu(), input_hw))
        self.seen += len(dets)

    @staticmethod
    def _end2end(dets_in, probs, conf, classes, max_det, input_hw):
        """Outputs of an end-to-end export (NMS inside: rows x1, y1, x2, y2, score, class; per-row mask
        probabilities) -> the same per-image detections as NMS gives, each row's mask logits as its own
        prototype (coefficients = identity), so masks are decoded exactly like raw predictions."""
        from yoloseg.engine.backends import _fill_outside_crop

        dets, protos = [], []
        for i in range(dets_in.shape[0]):
            d, p = dets_in[i], probs[i]
            keep = (d[:, 5] >= 0) & (d[:, 4] > conf) & torch.isfinite(d[:, :5]).all(1)
            if classes is not None:
                keep &= torch.isin(d[:, 5].long(), torch.as_tensor(classes, dtype=torch.int64, device=d.device))
            d, p = d[keep][:max_det], p[keep][:max_det]
            logits = _fill_outside_crop(torch.logit(p.clamp(1e-6, 1 - 1e-6)), d[:, :4], input_hw) if len(d) else p
            eye = torch.eye(len(d), dtype=d.dtype, device=d.device)
            dets.append(torch.cat([d[:, :6], eye], 1))
            protos.append(logits)
        return dets, protos

    def _drop_nonfinite(self, pred, conf, batch):
        """Anchors with a non-finite box, score or coefficient get score 0 (so NMS never sees them)."""
        ok = torch.isfinite(pred).all(1)  # (B, A)
        if bool(ok.all()):
            return pred
        bad = ~ok
        for i in range(pred.shape[0]):
            nb = int(bad[i].sum())
            if nb:
                self.n_nonfinite += nb
                self.problems.append((batch["im_file"][i], f"{nb} predictions with NaN/inf values ignored"))
        return torch.where(bad[:, None, :], torch.zeros((), dtype=pred.dtype, device=pred.device), pred)

    def _add_image(self, ev, f, ids, labels, coco_images, batch, i, det, protos_i, input_hw, ops):
        ori = tuple(int(v) for v in batch["ori_shape"][i][:2])
        if coco_images is not None:
            im = coco_images.get(Path(f).name)
            if im is None:
                self.problems.append((f, "not in the coco_gt file: image skipped"))
                return
            image_id = int(im["id"])
            if image_id in ev._gt:
                self.problems.append((f, f"same file name as an image already evaluated (coco_gt id {image_id}): "
                                         "skipped"))
                return
            ev.add_coco_annotations(im, ev.coco_anns.get(image_id, []))
        else:
            image_id = ids.get(f)
            if image_id is None:
                image_id = max(ids.values(), default=0) + 1
                ids[f] = image_id
            lab = labels.get(f, {"cls": [], "segments": []})
            polys = [np.asarray(s, np.float64).reshape(-1, 2) * (ori[1], ori[0]) for s in lab["segments"]]
            ev.add_ground_truth(image_id, ori, lab["cls"], polys, file_name=Path(f).name)
        save_txt = bool(self._c("save_txt", False)) and self.dataloader is None  # standalone val only
        polys = []
        if len(det):
            boxes = ops.scale_boxes(input_hw, det[:, :4].clone(), ori, ratio_pad=batch["ratio_pad"][i])
            out = masks_to_original(protos_i, det[:, 6:], boxes, input_hw, batch["ratio_pad"][i], ori,
                                    polygons=save_txt)
            rles, polys = out if save_txt else (out, [])
            ev.add_predictions(image_id, boxes, det[:, 4], det[:, 5], rles)
        else:
            boxes = det[:, :4]
        if save_txt:
            self._save_txt(f, ori, det, polys)
        gcls, gbox = ev._gt[image_id][0], ev._gt[image_id][1]
        gxyxy = np.concatenate([gbox[:, :2], gbox[:, :2] + gbox[:, 2:]], 1) if len(gbox) else np.zeros((0, 4))
        keep = ~ev._gt[image_id][3]
        self.confusion.process(boxes.cpu().numpy(), det[:, 4].cpu().numpy(), det[:, 5].cpu().numpy(),
                               gxyxy[keep], gcls[keep])

    def _save_txt(self, f, ori, det, polys) -> None:
        """labels/<image stem>.txt: one YOLO-seg line per detection, ``cls x1 y1 ...`` (polygon in original
        pixels normalized by the image size, "largest" contour; ``save_conf`` adds the score). Detections
        whose polygon has fewer than 3 points are left out; an image without lines gets an empty file."""
        from yoloseg.engine.results import label_lines
        from yoloseg.utils.files import atomic_write_bytes

        h0, w0 = ori
        scale = np.array([w0, h0], np.float32)
        lines = label_lines(det[:, 5].tolist(), det[:, 4].tolist(), [np.clip(p / scale, 0, 1) for p in polys],
                            bool(self._c("save_conf", False)))
        path = self._ensure_save_dir() / "labels" / f"{Path(f).stem}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, ("\n".join(lines) + "\n" if lines else "").encode())

    def _plots_on(self, external: bool) -> bool:
        """Plots are drawn when ``plots`` is set; with a caller's dataloader (training) only when the caller
        also named the folder (``save_dir``), which the trainer does for its final evaluation."""
        return bool(self._c("plots", False)) and (not external or self.save_dir is not None)

    def _draw_val_batches(self, m) -> None:
        """Draw the kept batches. Predictions are shown from the mask metric's best-F1 confidence (the one
        maximising the class-mean F1) when that is below 0.25, so a briefly trained model with low scores
        still shows what it found; otherwise from 0.25. The threshold is in every tile title."""
        from yoloseg.utils.plot_val import PRED_CONF, plot_val_batch

        best = float(getattr(m.seg, "conf", 0.0) or 0.0)
        conf = best if 0.0 < best < PRED_CONF else PRED_CONF
        m.plot_conf = conf
        for bi, batch, dets, protos, input_hw in self._plot_batches:
            try:
                with torch.inference_mode():
                    plot_val_batch(self._ensure_save_dir(), bi, batch, dets, protos, input_hw, self.evaluator.names,
                                   conf=conf)
            except Exception as e:  # a picture must never stop an evaluation
                LOGGER.warning(f"val batch {bi} images not drawn: {e}")
        self._plot_batches = []

    # ------------------------------------------------------------------ results
    def _ensure_save_dir(self) -> Path:
        if self.save_dir is None:
            from yoloseg.utils.files import increment_path

            task = getattr(self.task, "name", None) or "segment"
            project = self._c("project") or Path("runs") / task
            name = self._c("name") or "val"
            self.save_dir = increment_path(Path(project) / name, exist_ok=bool(self._c("exist_ok", False)))
        self.save_dir.mkdir(parents=True, exist_ok=True)
        return self.save_dir

    def _finish(self, ev, external):
        results = ev.coco_results()
        m = ev.evaluate(results)
        m.speed = dict(self.speed)
        m.confusion_matrix = self.confusion
        self.problems.extend(ev.problems)
        verbose = bool(self._c("verbose", True))
        plots = self._plots_on(external)
        m.plot_conf = None
        if (not external and bool(self._c("save_json", False))) or plots:
            m.save_dir = self._ensure_save_dir()
        if not external and bool(self._c("save_json", False)):
            from yoloseg.utils.files import atomic_write_bytes

            path = m.save_dir / "predictions.json"
            atomic_write_bytes(path, json.dumps(results).encode())
            if verbose:
                _log(f"Saved {len(results)} COCO results to {path}")
        if plots:
            try:
                from yoloseg.utils.plot_val import plot_metrics

                plot_metrics(m.save_dir, m, self.confusion)
            except ImportError:
                pass
            except Exception as e:  # a picture must never stop an evaluation
                LOGGER.warning(f"val plots not drawn: {e}")
            if self._plot_batches:
                self._draw_val_batches(m)
                if verbose:
                    _log(f"val batch predictions drawn at conf>={m.plot_conf:.3g} (mask best-F1 confidence "
                         f"{float(m.seg.conf):.3g}, default 0.25)")
        if verbose:
            self._report(m, external)
        self.metrics = m
        return m

    def _report(self, m, external):
        text = m.table()
        if external:
            text = "\n".join(text.splitlines()[:2])
        _log(text)
        if self.problems:
            shown = "; ".join(f"{Path(str(f)).name}: {msg}" for f, msg in self.problems[:5])
            more = f" (+{len(self.problems) - 5} more)" if len(self.problems) > 5 else ""
            _log(f"WARNING: {len(self.problems)} problem(s) during validation: {shown}{more}")
        if not external:
            s = m.speed
            _log(f"Speed: {s['preprocess']:.1f}ms preprocess, {s['inference']:.1f}ms inference, "
                 f"{s['postprocess']:.1f}ms postprocess per image")
            if m.save_dir is not None:
                _log(f"Results saved to {m.save_dir}")
