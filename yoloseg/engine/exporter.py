"""Export a segmentation model to ONNX or TorchScript, with everything needed to run it inside the file.

    from yoloseg import YOLO

    path = YOLO("best.pt").export(format="onnx")               # -> "best.onnx" next to the weights
    path = YOLO("best.pt").export(format="onnx", end2end=True) # -> "best_end2end.onnx": NMS + masks inside
    YOLO(path).predict("image.jpg")                             # onnxruntime / torch.jit.load

Where the file goes: next to the weights file with the format's suffix (``best.pt`` -> ``best.onnx``,
``best.torchscript``; end-to-end graphs get ``_end2end`` before the suffix). A model built from a YAML or
passed as a module is written to the current directory, named after its config (``yolo11n-seg.onnx``).
The folder's writability is checked before any work is done.

ONNX goes through ``torch.onnx.export(..., dynamo=False)``, the TorchScript-tracing exporter: this network
is a plain feed-forward convolution graph whose only shape-dependent parts (anchor grid, attention reshapes)
are read from tensor shapes during tracing, which that exporter records as graph shape ops, so ``dynamic=True``
works without writing shape constraints; it needs no extra package (the ``torch.export`` based exporter
needs onnxscript), supports custom operator symbolics (the end-to-end NMS node), and gives the same graph on
every run. The file is checked with ``onnx.checker`` (full check, with shape inference), optionally
simplified (onnxslim or onnxsim when installed), and carries its metadata in ``metadata_props``. TorchScript
is a ``torch.jit.trace`` with the metadata in the ``config.json`` extra file.

Metadata (each value JSON text): description, author, license, version (yoloseg), date, task, names
(``{"0": "person", ...}``), nc, stride (max), strides, imgsz ``[h, w]``, batch, dynamic, half, end2end,
format, opset, source (weights file name), outputs (names in order); end-to-end files add conf, iou, max_det.
"""

from __future__ import annotations

import copy
import datetime
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from yoloseg.engine.backends import load_exported  # noqa: F401  (the facade opens exported files through here)
from yoloseg.utils.files import atomic_path

__all__ = ["Exporter", "FORMATS", "load_exported", "merge_slices_into_split", "supported_opsets"]

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript", "openvino": "_openvino_model"}
MIN_OPSET = 11  # Resize with half-pixel coordinates, TopK with a k input, NonMaxSuppression
RAW_OUTPUTS = ("pred", "protos")


def supported_opsets() -> tuple[int, int]:
    """(lowest, highest) ONNX opset this yoloseg + installed torch can write."""
    from torch.onnx import _constants

    high = getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", None) or _constants.ONNX_DEFAULT_OPSET
    return MIN_OPSET, int(high)


def merge_slices_into_split(model) -> int:
    """Replace sibling ``Slice`` nodes that cut one tensor into adjacent pieces along one axis by one ``Split``.

    The tracing exporter writes ``tensor.chunk(2, 1)`` (the CSP blocks' channel halves) as two Slices, each a
    separate copy pass over the input; a Split reads it once. Only constant, step-1, single-axis slices that
    exactly tile a statically known dimension are merged. Returns the number of Split nodes made.
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    inferred = onnx.shape_inference.infer_shapes(model).graph
    dims = {}
    for vi in list(inferred.value_info) + list(inferred.input) + list(inferred.output):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape"):
            dims[vi.name] = [d.dim_value if d.HasField("dim_value") else 0 for d in vi.type.tensor_type.shape.dim]
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)

    def one(name):
        v = consts.get(name)
        return None if v is None or v.size != 1 else int(v.reshape(-1)[0])

    groups: dict[str, list] = {}
    for i, n in enumerate(graph.node):
        if n.op_type == "Slice" and len(n.input) >= 4:
            groups.setdefault(n.input[0], []).append((i, n))
    made, drop, add = 0, set(), []
    for src, nodes in groups.items():
        shape = dims.get(src)
        if len(nodes) < 2 or not shape:
            continue
        by_axis: dict[int, list] = {}
        for i, n in nodes:
            start, end, axis = one(n.input[1]), one(n.input[2]), one(n.input[3])
            step = one(n.input[4]) if len(n.input) > 4 and n.input[4] else 1
            if None in (start, end, axis) or step != 1:
                continue
            axis = axis + len(shape) if axis < 0 else axis
            size = shape[axis] if 0 <= axis < len(shape) else 0
            if size <= 0:
                continue
            start = min(max(start + size if start < 0 else start, 0), size)
            end = min(max(end + size if end < 0 else end, 0), size)
            by_axis.setdefault(axis, []).append((start, end, size, i, n))
        for axis, pieces in by_axis.items():
            pieces.sort(key=lambda t: t[0])
            tiled = len(pieces) >= 2 and pieces[0][0] == 0 and pieces[-1][1] == pieces[0][2] and all(
                a[1] == b[0] for a, b in zip(pieces, pieces[1:])) and all(t[1] > t[0] for t in pieces)
            if not tiled:
                continue
            sizes = [t[1] - t[0] for t in pieces]
            outputs = [t[4].output[0] for t in pieces]
            name = f"{src}_split{made}"
            if opset >= 13:
                graph.initializer.append(numpy_helper.from_array(np.array(sizes, dtype=np.int64), name + "_sizes"))
                node = helper.make_node("Split", [src, name + "_sizes"], outputs, name=name, axis=axis)
            else:
                node = helper.make_node("Split", [src], outputs, name=name, axis=axis, split=sizes)
            add.append((min(t[3] for t in pieces), node))
            drop.update(t[3] for t in pieces)
            made += 1
    if not made:
        return 0
    inserts: dict[int, list] = {}
    for i, node in add:
        inserts.setdefault(i, []).append(node)
    new_nodes = []
    for i, n in enumerate(graph.node):
        new_nodes.extend(inserts.get(i, ()))
        if i not in drop:
            new_nodes.append(n)
    del graph.node[:]
    graph.node.extend(new_nodes)
    used = {x for n in graph.node for x in n.input}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    return made


def _get(cfg, key, default=None):
    v = cfg.get(key, default) if isinstance(cfg, dict) else getattr(cfg, key, default)
    return default if v is None else v


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Exporter:
    """``Exporter(cfg, model)()`` writes the file and returns its path (str).

    Args:
        cfg: settings (``yoloseg.cfg.get_cfg`` namespace or dict). Keys read: model (decides where the file
            goes), format, imgsz, batch, dynamic, half, simplify, opset, end2end, optimize, device, conf, iou,
            max_det, verbose.
        model: the PyTorch segmentation model (eval forward ``(pred, protos)``); it is copied, never changed.
    """

    def __init__(self, cfg=None, model=None):
        self.cfg = cfg if cfg is not None else {}
        self.model = model

    def _c(self, key, default=None):
        return _get(self.cfg, key, default)

    # -- checks (all before any work) ----------------------------------------------------------------
    def _format(self) -> str:
        fmt = str(self._c("format", "onnx")).strip().lower().lstrip(".")
        if fmt not in FORMATS:
            raise ValueError(f"format={self._c('format')!r} is not supported; choose one of: {', '.join(FORMATS)}")
        return fmt

    def _opset(self) -> int | None:
        lo, hi = supported_opsets()
        opset = self._c("opset", None)
        if opset is None:
            return hi
        if isinstance(opset, bool) or not isinstance(opset, int):
            try:
                opset = int(str(opset))
            except ValueError:
                raise ValueError(f"opset must be an integer, got {opset!r}") from None
        if not lo <= opset <= hi:
            raise ValueError(
                f"opset={opset} cannot be written: the installed torch {torch.__version__} ONNX exporter writes "
                f"opsets {lo}..{hi} for this model (leave opset empty for {hi})"
            )
        return opset

    def _imgsz(self, stride: int) -> tuple[int, int]:
        v = self._c("imgsz", 640)
        v = [v] if isinstance(v, (int, float)) else list(v)
        if not 1 <= len(v) <= 2 or any(isinstance(t, bool) or int(t) != t or int(t) <= 0 for t in v):
            raise ValueError(f"imgsz must be an int or [h, w] of positive ints, got {self._c('imgsz')!r}")
        h, w = (int(v[0]), int(v[-1]))
        fixed = (-(-h // stride) * stride, -(-w // stride) * stride)
        if fixed != (h, w):
            _log(f"WARNING: imgsz={[h, w]} is not a multiple of the model stride {stride}; exporting {list(fixed)}")
        return fixed

    def _batch(self) -> int:
        b = self._c("batch", 1)
        if isinstance(b, bool) or int(b) != b or int(b) < 1:
            raise ValueError(f"batch must be a positive int for export, got {b!r}")
        return int(b)

    def output_path(self, fmt: str, end2end: bool, int8: bool = False) -> Path:
        src = self._c("model", None) or "model"
        src = Path(str(src))
        folder = src.parent if src.suffix.lower() in (".pt", ".pth") else Path(".")
        stem = src.stem if src.suffix else src.name
        tag = ("_end2end" if end2end else "") + ("_int8" if int8 else "")
        return folder / f"{stem}{tag}{FORMATS[fmt]}"

    def _int8_checks(self, fmt: str, end2end: bool) -> bool:
        """Whether an int8 export was asked for; refuses combinations that cannot be made."""
        if not bool(self._c("int8", False)):
            return False
        if fmt == "torchscript":
            raise ValueError("int8=True is available for format=onnx (onnxruntime QDQ) and format=openvino (NNCF), "
                             "not torchscript")
        if end2end:
            raise ValueError("int8=True quantizes standard exports; it cannot be combined with end2end=True/nms=True")
        if bool(self._c("half", False)):
            raise ValueError("half=True and int8=True ask for two different precisions; choose one")
        if self._c("data", None) in (None, ""):
            raise ValueError("int8=True needs calibration images: give data=<data set YAML> (images of its train "
                             "split are used)")
        return True

    @staticmethod
    def check_writable(folder: Path) -> None:
        """Fail now, not after a long export, when ``folder`` cannot take a new file."""
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"export folder '{folder}' does not exist")
        try:
            fd, probe = tempfile.mkstemp(prefix=".yoloseg-write-check-", dir=folder)
        except OSError as e:
            raise PermissionError(f"cannot write the exported model to '{folder}': {e.strerror or e}") from None
        os.close(fd)
        os.unlink(probe)

    # -- work ----------------------------------------------------------------------------------------
    def __call__(self) -> str:
        t0 = time.perf_counter()
        fmt = self._format()
        end2end = bool(self._c("end2end", False)) or bool(self._c("nms", False))  # nms=True: the Ultralytics name
        if end2end and fmt != "onnx":
            raise ValueError("end2end=True (or nms=True) is only available for format=onnx")
        int8 = self._int8_checks(fmt, end2end)
        opset = self._opset() if fmt in ("onnx", "openvino") else None
        if fmt == "openvino":
            from yoloseg.engine.backends import require_openvino

            require_openvino("OpenVINO export", nncf=int8)
        if fmt in ("onnx", "openvino"):
            try:
                import onnx  # noqa: F401
            except ImportError:
                raise ModuleNotFoundError("ONNX export needs the onnx package: pip install onnx") from None
        if self.model is None or not isinstance(self.model, torch.nn.Module):
            raise ValueError("export needs a PyTorch model (exported files cannot be exported again)")
        stride = int(torch.as_tensor(getattr(self.model, "stride", 32)).max())
        imgsz = self._imgsz(stride)
        batch = self._batch()
        dynamic = bool(self._c("dynamic", False))
        max_det = int(self._c("max_det", 300))
        conf = float(self._c("conf", 0.25))
        iou = float(self._c("iou", 0.7))
        path = self.output_path(fmt, end2end)
        self.check_writable(path.parent)
        calib = None
        if int8:
            from yoloseg.engine.quantize import calibration_files

            calib = calibration_files(self._c("data"), self._c("fraction", 1.0), self._c("calib_images", None))

        from yoloseg.utils.torch_utils import select_device

        device = select_device(self._c("device", None))
        half = bool(self._c("half", False))
        ov_half = half and fmt == "openvino"  # OpenVINO: float16 weights in the IR, whatever the export device
        if ov_half:
            half = False
        if half and device.type != "cuda":
            _log("WARNING: half=True needs a CUDA device (device=0); exporting float32")
            half = False

        net = copy.deepcopy(self.model).to(device).float().eval()
        if hasattr(net, "fuse") and not (hasattr(net, "is_fused") and net.is_fused()):
            net = net.fuse()
        for p in net.parameters():
            p.requires_grad_(False)
        if half:
            net = net.half()
        im = torch.zeros(batch, 3, *imgsz, device=device, dtype=torch.float16 if half else torch.float32)
        with torch.inference_mode():
            out = net(im)
        if not (isinstance(out, (list, tuple)) and len(out) == 2 and out[0].ndim == 3 and out[1].ndim == 4):
            raise ValueError("export needs a segmentation model whose eval forward returns (pred, protos)")
        if end2end:
            from yoloseg.engine.end2end import END2END_OUTPUTS, End2End

            net = End2End(net, conf=conf, iou=iou, max_det=max_det).eval()
            outputs = END2END_OUTPUTS
        else:
            outputs = RAW_OUTPUTS

        meta = self.metadata(fmt, imgsz, batch, dynamic, half or ov_half, end2end, opset, outputs, stride)
        if end2end:
            meta.update(conf=conf, iou=iou, max_det=max_det)
        if int8:
            meta.update(int8=True, calib_images=len(calib))
        if fmt == "onnx":
            self._export_onnx(net, im, path, {**meta, "int8": False} if int8 else meta, opset, dynamic, outputs)
            if int8:
                path = self._quantize_onnx(path, calib, imgsz, batch, meta)
        elif fmt == "openvino":
            path = self.output_path(fmt, end2end, int8)
            self.check_writable(path.parent)
            self._export_openvino(net, im, path, meta, opset, dynamic, outputs, ov_half, calib, imgsz)
        else:
            self._export_torchscript(net, im, path, meta)
        if bool(self._c("verbose", True)):
            self._print_usage(path, fmt, imgsz, batch, dynamic, end2end, opset, time.perf_counter() - t0)
        return str(path)

    def metadata(self, fmt, imgsz, batch, dynamic, half, end2end, opset, outputs, stride) -> dict:
        from yoloseg import __version__

        names = getattr(self.model, "names", None) or {}
        if isinstance(names, (list, tuple)):
            names = dict(enumerate(names))
        strides = [int(s) for s in torch.as_tensor(getattr(self.model, "stride", [stride])).tolist()]
        src = self._c("model", None)
        return {
            "description": "yoloseg instance segmentation model (YOLO11-seg layout)",
            "author": "yoloseg",
            "license": "Apache-2.0",
            "version": __version__,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "task": str(getattr(self.model, "task", None) or self._c("task", "segment")),
            "names": {str(int(k)): str(v) for k, v in names.items()},
            "nc": int(getattr(self.model, "nc", len(names))),
            "stride": int(stride),
            "strides": strides,
            "imgsz": list(imgsz),
            "batch": int(batch),
            "dynamic": bool(dynamic),
            "half": bool(half),
            "end2end": bool(end2end),
            "format": fmt,
            "opset": opset,
            "source": Path(str(src)).name if src else None,
            "outputs": list(outputs),
        }

    def _export_onnx(self, net, im, path: Path, meta: dict, opset: int, dynamic: bool, outputs) -> None:
        import onnx

        if dynamic:
            axes = {"images": {0: "batch", 2: "height", 3: "width"}}
            if meta["end2end"]:
                axes.update({n: {0: "batch"} for n in outputs})
                axes["masks"] = {0: "batch", 2: "mask_height", 3: "mask_width"}
            else:
                axes["pred"] = {0: "batch", 2: "anchors"}
                axes["protos"] = {0: "batch", 2: "mask_height", 3: "mask_width"}
        else:
            axes = None
        with atomic_path(path) as tmp:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tracer and deprecation notes about the chosen exporter
                torch.onnx.export(
                    net, (im,), tmp, dynamo=False, opset_version=opset, input_names=["images"],
                    output_names=list(outputs), dynamic_axes=axes, do_constant_folding=True,
                )
            model = onnx.load(tmp)
            if bool(self._c("simplify", True)):
                model = self._simplify(model)
            merge_slices_into_split(model)
            del model.metadata_props[:]
            for k, v in meta.items():
                entry = model.metadata_props.add()
                entry.key, entry.value = k, json.dumps(v)
            onnx.checker.check_model(model, full_check=True)
            onnx.save(model, tmp)

    def _quantize_onnx(self, fp32: Path, calib: list, imgsz, batch: int, meta: dict) -> Path:
        import json as _json

        import onnx

        from yoloseg.engine.quantize import quantize_onnx

        dst = fp32.with_name(fp32.stem + "_int8" + fp32.suffix)
        _log(f"int8: calibrating on {len(calib)} train images of {self._c('data')} ...")
        with atomic_path(dst) as tmp:
            info = quantize_onnx(fp32, tmp, calib, imgsz, batch)
            q = onnx.load(tmp)
            del q.metadata_props[:]
            for k, v in meta.items():
                entry = q.metadata_props.add()
                entry.key, entry.value = k, _json.dumps(v)
            onnx.save(q, tmp)
        _log(f"int8: {info['float_nodes']} nodes kept in float32 (head decode and output convolutions)")
        return dst

    def _export_openvino(self, net, im, folder: Path, meta: dict, opset, dynamic, outputs, half: bool, calib,
                         imgsz) -> None:
        """``folder/<stem>.xml`` + ``.bin`` (converted from the ONNX graph) + ``metadata.yaml``."""
        import shutil

        import onnx
        import openvino as ov
        import yaml

        stem = folder.name[: -len("_openvino_model")].removesuffix("_int8") or "model"
        tmpdir = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        try:
            onnx_path = tmpdir / f"{stem}.onnx"
            self._export_onnx(net, im, onnx_path, {**meta, "format": "onnx"}, opset, dynamic, outputs)
            ov_model = ov.convert_model(str(onnx_path))
            if calib is not None:
                from yoloseg.engine.quantize import quantize_openvino

                _log(f"int8: calibrating on {len(calib)} train images of {self._c('data')} (NNCF) ...")
                ov_model = quantize_openvino(ov_model, onnx.load(str(onnx_path)), calib, imgsz)
            out = tmpdir / "out"
            out.mkdir()
            ov.save_model(ov_model, str(out / f"{stem}.xml"), compress_to_fp16=half)
            (out / "metadata.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
            old = None
            if folder.exists():
                old = tmpdir / "old"
                os.replace(folder, old)
            os.replace(out, folder)
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)

    def _simplify(self, model):
        try:
            import onnxslim
        except ImportError:
            onnxslim = None
        if onnxslim is not None:
            return onnxslim.slim(model)
        try:
            from onnxsim import simplify
        except ImportError:
            if bool(self._c("verbose", True)):
                _log("note: simplify skipped (neither onnxslim nor onnxsim is installed; pip install onnxslim)")
            return model
        simplified, ok = simplify(model)
        return simplified if ok else model

    def _export_torchscript(self, net, im, path: Path, meta: dict) -> None:
        with atomic_path(path) as tmp:
            with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
                warnings.simplefilter("ignore")
                ts = torch.jit.trace(net, im, strict=False, check_trace=False)
                if bool(self._c("optimize", False)):
                    from torch.utils.mobile_optimizer import optimize_for_mobile

                    ts = optimize_for_mobile(ts)
            ts.save(tmp, _extra_files={"config.json": json.dumps(meta)})

    @staticmethod
    def _print_usage(path: Path, fmt, imgsz, batch, dynamic, end2end, opset, seconds) -> None:
        files = [f for f in path.rglob("*") if f.is_file()] if path.is_dir() else [path]
        size_mb = sum(f.stat().st_size for f in files) / 1e6
        what = f"{fmt}" + (f" opset {opset}" if opset else "")
        shape = "dynamic batch/size" if dynamic else f"{imgsz[0]}x{imgsz[1]}, batch {batch}"
        sz = "" if dynamic else f" imgsz={imgsz[0] if imgsz[0] == imgsz[1] else list(imgsz)}"
        lines = [
            f"Exported {path} ({size_mb:.1f} MB, {what}, {shape}{', NMS inside' if end2end else ''}) "
            f"in {seconds:.1f}s",
            "Use it:",
            f"  yoloseg predict model={path} source=path/to/images{sz}",
        ]
        if not end2end:
            lines.append(f"  yoloseg val model={path} data=path/to/data.yaml{sz}")
        lines += [
            "  from yoloseg import YOLO",
            f"  results = YOLO({str(path)!r}).predict('image.jpg')",
            "Outputs: " + ("num_dets, boxes, scores, classes, masks" if end2end else "pred (B, 4+nc+32, A), protos "
                           "(B, 32, H/4, W/4)") + "; see docs/export.md",
        ]
        _log("\n".join(lines))
