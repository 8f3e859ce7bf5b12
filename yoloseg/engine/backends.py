"""Inference backends for exported models: ONNX (onnxruntime), OpenVINO IR folders (openvino runtime) and
TorchScript (``torch.jit.load``).

``load_exported(path, device=None)`` returns a backend that behaves like the eval-mode PyTorch model for the
predictor and validator: ``backend(x)`` with ``x`` a float32 ``(B, 3, H, W)`` tensor in [0, 1] returns torch
tensors ``(pred (B, 4+nc+32, A), protos (B, 32, H/4, W/4))`` on ``x``'s device. It carries the metadata
written by the exporter (``names``, ``nc``, ``stride``, ``imgsz``, ``task``, ``batch``, ``dynamic``,
``end2end``, ``half``, and the whole dict as ``metadata``), so the file needs nothing else.

- Static exports (``dynamic=False``) accept only their exported image size (``fixed_input`` is True and the
  predictor letterboxes to ``imgsz`` without stride-trimming the padding); a batch of any size is run in
  chunks of the exported batch size, the last chunk padded with zeros.
- End-to-end ONNX graphs (NMS inside) return ``(dets (B, max_det, 6) [x1, y1, x2, y2, score, class (-1 in
  padding rows)], masks (B, max_det, H/4, W/4) probabilities)`` and provide their own ``postprocess``
  (:func:`end2end_postprocess`), which replaces NMS in the predictor.
- Files without yoloseg metadata (a foreign export of the same model layout) still load: values written
  as Python literals are parsed too, and missing names/nc come from the output shape.
"""

from __future__ import annotations

import ast
import json
import logging
import warnings
from pathlib import Path

import torch

__all__ = [
    "ExportedModel", "OnnxModel", "OpenVINOModel", "TorchScriptModel", "load_exported", "parse_metadata",
    "read_metadata", "exported_defaults", "end2end_postprocess", "require_openvino", "openvino_xml",
]

LOGGER = logging.getLogger("yoloseg")
ONNX_INSTALL_HINT = "pip install 'yoloseg[onnx]'  (or: pip install onnxruntime)"
OPENVINO_INSTALL_HINT = "pip install 'yoloseg[openvino]'  (or: pip install openvino nncf)"
TS_META_FILES = ("config.json", "config.txt")


def require_openvino(what: str, nncf: bool = False) -> None:
    """Import check with an error that names the extra to install."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        raise ModuleNotFoundError(f"{what} needs openvino: {OPENVINO_INSTALL_HINT}") from None
    if nncf:
        try:
            import nncf as _nncf  # noqa: F401
        except ImportError:
            raise ModuleNotFoundError(f"{what} with int8=True needs nncf: {OPENVINO_INSTALL_HINT}") from None


def openvino_xml(path: str | Path) -> Path | None:
    """The IR ``.xml`` of an OpenVINO export: the file itself, or the single ``.xml`` inside a folder."""
    p = Path(path)
    if p.is_file() and p.suffix.lower() == ".xml":
        return p
    if p.is_dir():
        xmls = sorted(p.glob("*.xml"))
        if len(xmls) == 1:
            return xmls[0]
        if len(xmls) > 1:
            raise ValueError(f"{str(path)!r} holds several .xml files ({', '.join(x.name for x in xmls)}); "
                             f"give the one to load")
    return None


def parse_metadata(raw: dict) -> dict:
    """String -> string metadata (ONNX metadata_props, TorchScript extra files) -> typed values.

    Each value is read as JSON, then as a Python literal, else kept as the string."""
    out = {}
    for k, v in raw.items():
        if not isinstance(v, str):
            out[k] = v
            continue
        try:
            out[k] = json.loads(v)
        except ValueError:
            try:
                out[k] = ast.literal_eval(v)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                out[k] = v
    return out


def _as_bool(v) -> bool:
    if isinstance(v, str):
        return v.strip().lower() in ("1", "true", "yes", "on")
    return bool(v)


def _hw(v) -> tuple[int, int] | None:
    if v is None:
        return None
    if isinstance(v, (int, float)):
        return int(v), int(v)
    v = [int(t) for t in v]
    return (v[0], v[0]) if len(v) == 1 else (v[0], v[1])


class ExportedModel:
    """Common part of the backends: metadata, input checks, static-batch chunking.

    Subclasses implement ``_run(x: torch.Tensor) -> list[torch.Tensor]`` for one batch of the exported shape.
    """

    format = "exported"

    def __init__(self, path: str | Path, metadata: dict, device: torch.device, input_shape=None):
        self.path = str(path)
        self.device = device
        self.metadata = dict(metadata)
        m = self.metadata
        self.task = str(m.get("task") or "segment")
        self.end2end = _as_bool(m.get("end2end", False))
        self.dynamic = _as_bool(m.get("dynamic", False))
        self.half = _as_bool(m.get("half", False))
        strides = m.get("strides")
        self.stride = int(m.get("stride") or (max(strides) if strides else 32))
        shape = list(input_shape) if input_shape is not None else []
        static_hw = tuple(shape[2:4]) if len(shape) == 4 and all(isinstance(s, int) for s in shape[2:4]) else None
        self.imgsz = _hw(m.get("imgsz")) or static_hw or (640, 640)
        batch = m.get("batch")
        if batch is None and shape and isinstance(shape[0], int):
            batch = shape[0]
        self.batch = int(batch or 1)
        self.fixed_input = not self.dynamic
        names = m.get("names")
        if isinstance(names, (list, tuple)):
            names = dict(enumerate(names))
        self.names = {int(k): str(v) for k, v in names.items()} if isinstance(names, dict) else None
        self.nc = int(m["nc"]) if m.get("nc") is not None else (len(self.names) if self.names else None)
        self.postprocess = end2end_postprocess if self.end2end else None

    # -- torch-model look-alike ------------------------------------------------------------------------------
    def __repr__(self) -> str:
        kind = "end2end" if self.end2end else ("dynamic" if self.dynamic else f"static {self.imgsz}")
        return f"{type(self).__name__}({self.path!r}, {kind}, batch={self.batch})"

    def eval(self):
        return self

    def _fill_names(self, channels: int) -> None:
        if self.nc is None:
            self.nc = channels - 4 - 32
        if self.names is None:
            LOGGER.warning(f"{self.path}: no class names in the file's metadata; using class0..class{self.nc - 1}")
            self.names = {i: f"class{i}" for i in range(self.nc)}

    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 3:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{self.path}: expected an image tensor (B, 3, H, W), got {got}")
        if self.fixed_input and tuple(x.shape[2:]) != tuple(self.imgsz):
            raise ValueError(
                f"{self.path} was exported for {self.imgsz[0]}x{self.imgsz[1]} inputs (dynamic=False), got "
                f"{x.shape[2]}x{x.shape[3]}; use imgsz={list(self.imgsz)} or export again with dynamic=True"
            )
        if not self.fixed_input and (x.shape[2] % self.stride or x.shape[3] % self.stride):
            raise ValueError(f"{self.path}: input size {tuple(x.shape[2:])} must be a multiple of the stride {self.stride}")

    def __call__(self, x: torch.Tensor):
        self._check_input(x)
        n = x.shape[0]
        if self.fixed_input and n != self.batch:
            chunks = []
            for i in range(0, n, self.batch):
                part = x[i : i + self.batch]
                if part.shape[0] < self.batch:
                    fill = part.new_zeros((self.batch - part.shape[0], *part.shape[1:]))
                    part = torch.cat((part, fill))
                chunks.append(self._run(part))
            outs = [torch.cat([c[j] for c in chunks])[:n] for j in range(len(chunks[0]))]
        else:
            outs = self._run(x)
        outs = [o.to(x.device) for o in outs]
        if self.end2end:
            num, boxes, scores, classes, masks = outs
            dets = torch.cat((boxes.float(), scores.float()[..., None], classes.float()[..., None]), -1)
            return dets, masks.float()
        pred, protos = outs[0].float(), outs[1].float()
        if self.nc is None or self.names is None:
            self._fill_names(pred.shape[1])
        return pred, protos

    def _run(self, x: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError


class OnnxModel(ExportedModel):
    """An ONNX file run by onnxruntime (CUDA provider when ``device`` is CUDA and available, else CPU)."""

    format = "onnx"

    def __init__(self, path: str | Path, device=None, threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise ModuleNotFoundError(f"running ONNX models needs onnxruntime: {ONNX_INSTALL_HINT}") from None
        device = torch.device(device) if device is not None else torch.device("cpu")
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda":
            if "CUDAExecutionProvider" in ort.get_available_providers():
                providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
            else:
                LOGGER.warning("onnxruntime has no CUDA provider here (pip install onnxruntime-gpu); running on CPU")
                device = torch.device("cpu")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_half = "float16" in inp.type
        self.output_names = [o.name for o in self.session.get_outputs()]
        raw = self.session.get_modelmeta().custom_metadata_map
        super().__init__(path, parse_metadata(raw), device, input_shape=inp.shape)
        if not self.metadata.get("end2end") and len(self.output_names) == 5 and self.output_names[0] == "num_dets":
            self.end2end, self.postprocess = True, end2end_postprocess

    def _run(self, x: torch.Tensor) -> list[torch.Tensor]:
        arr = x.detach().to("cpu", torch.float16 if self.input_half else torch.float32).contiguous().numpy()
        outs = self.session.run(self.output_names, {self.input_name: arr})
        return [torch.from_numpy(o) for o in outs]


class OpenVINOModel(ExportedModel):
    """An OpenVINO IR (``<name>_openvino_model/`` folder with ``.xml``, ``.bin`` and ``metadata.yaml``) compiled
    for the CPU by the openvino runtime (latency hint; ``threads`` sets the inference threads)."""

    format = "openvino"

    def __init__(self, path: str | Path, device=None, threads: int | None = None):
        require_openvino(f"running {str(path)!r}")
        import openvino as ov

        device = torch.device(device) if device is not None else torch.device("cpu")
        if device.type != "cpu":
            LOGGER.warning(f"{path}: OpenVINO models run on the CPU here; device={device} is not used")
            device = torch.device("cpu")
        xml = openvino_xml(path)
        if xml is None:
            raise FileNotFoundError(f"{str(path)!r}: no OpenVINO .xml model found")
        core = ov.Core()
        model = core.read_model(str(xml))
        config = {"PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        self.compiled = core.compile_model(model, "CPU", config)
        self.request = self.compiled.create_infer_request()
        inp = model.inputs[0]
        pshape = inp.get_partial_shape()
        shape = [d.get_length() if d.is_static else None for d in pshape] if pshape.rank.is_static else []
        super().__init__(path, read_metadata(path), device, input_shape=shape)
        self.input_half = inp.get_element_type() == ov.Type.f16
        self.output_count = len(model.outputs)

    def _run(self, x: torch.Tensor) -> list[torch.Tensor]:
        arr = x.detach().to("cpu", torch.float16 if self.input_half else torch.float32).contiguous().numpy()
        res = self.request.infer({0: arr})
        return [torch.from_numpy(res[self.compiled.output(i)].copy()) for i in range(self.output_count)]


class TorchScriptModel(ExportedModel):
    """A TorchScript file loaded with ``torch.jit.load`` (metadata from its ``config.json`` extra file)."""

    format = "torchscript"

    def __init__(self, path: str | Path, device=None):
        device = torch.device(device) if device is not None else torch.device("cpu")
        extra = {name: "" for name in TS_META_FILES}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated upstream, still loads
            self.module = torch.jit.load(str(path), map_location=device, _extra_files=extra).eval()
        raw = next((extra[n] for n in TS_META_FILES if extra[n]), "")
        meta = {}
        if raw:
            text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
            try:
                meta = json.loads(text)
            except ValueError:
                try:
                    meta = ast.literal_eval(text)
                except (ValueError, SyntaxError):
                    meta = {}
        super().__init__(path, meta if isinstance(meta, dict) else {}, device)
        dtype = next((p.dtype for p in self.module.parameters()), torch.float32)
        self.input_dtype = torch.float16 if dtype == torch.float16 else torch.float32

    def _run(self, x: torch.Tensor) -> list[torch.Tensor]:
        with torch.inference_mode():
            out = self.module(x.to(self.device, self.input_dtype))
        if isinstance(out, dict):
            out = list(out.values())
        if isinstance(out, (list, tuple)) and len(out) == 2 and isinstance(out[0], (list, tuple)):
            out = out[0]
        return list(out)


def read_metadata(path: str | Path) -> dict:
    """The metadata of an exported file without starting a runtime (onnx protobuf / the TorchScript zip)."""
    p = Path(path)
    if p.is_dir() or p.suffix.lower() == ".xml":
        import yaml

        folder = p if p.is_dir() else p.parent
        meta_file = folder / "metadata.yaml"
        if not meta_file.is_file():
            return {}
        try:
            meta = yaml.safe_load(meta_file.read_text())
        except yaml.YAMLError as e:
            raise ValueError(f"{meta_file}: not valid YAML ({e})") from None
        return parse_metadata(meta) if isinstance(meta, dict) else {}
    if p.suffix.lower() == ".onnx":
        import onnx

        model = onnx.load(str(p), load_external_data=False)
        return parse_metadata({e.key: e.value for e in model.metadata_props})
    import zipfile

    try:
        with zipfile.ZipFile(p) as z:
            for name in z.namelist():
                parts = name.split("/")
                if len(parts) >= 3 and parts[-2] == "extra" and parts[-1] in TS_META_FILES:
                    meta = parse_metadata({"m": z.read(name).decode("utf-8")})["m"]
                    return meta if isinstance(meta, dict) else {}
    except zipfile.BadZipFile:
        raise ValueError(f"{str(path)!r} is not a TorchScript archive") from None
    return {}


def exported_defaults(path: str | Path) -> dict:
    """Settings an exported file implies for predict/val: its task, its input size, and for end-to-end files
    the confidence threshold that was built in. Unreadable files give {} (loading them reports the error)."""
    try:
        meta = read_metadata(path)
    except Exception:  # noqa: BLE001  (protobuf/zip errors of a broken file surface when it is loaded)
        return {}
    out = {}
    if isinstance(meta.get("task"), str):
        out["task"] = meta["task"]
    hw = _hw(meta.get("imgsz")) if meta.get("imgsz") is not None else None
    if hw is not None:
        out["imgsz"] = list(hw) if hw[0] != hw[1] else hw[0]
    if _as_bool(meta.get("end2end", False)) and meta.get("conf") is not None:
        out["conf"] = float(meta["conf"])
    return out


def load_exported(path: str | Path, device=None, dnn: bool = False, threads: int | None = None) -> ExportedModel:
    """Open an exported ``.onnx`` / ``.torchscript`` file or OpenVINO folder (or its ``.xml``) as a backend
    (``dnn`` is accepted and ignored)."""
    p = Path(path)
    if p.is_dir() or (p.is_file() and p.suffix.lower() == ".xml"):
        if device is not None and not isinstance(device, torch.device):
            from yoloseg.utils.torch_utils import select_device

            device = select_device(device)
        return OpenVINOModel(p, device=device, threads=threads)
    if not p.is_file():
        raise FileNotFoundError(f"exported model {str(path)!r} not found")
    if device is not None and not isinstance(device, torch.device):
        from yoloseg.utils.torch_utils import select_device

        device = select_device(device)
    suffix = p.suffix.lower()
    if suffix == ".onnx":
        return OnnxModel(p, device=device, threads=threads)
    if suffix == ".torchscript":
        return TorchScriptModel(p, device=device)
    raise ValueError(f"model={str(path)!r}: exported models must be .onnx or .torchscript files or OpenVINO "
                     f"folders (<name>_openvino_model/)")


def _fill_outside_crop(logits: torch.Tensor, boxes: torch.Tensor, input_shape) -> torch.Tensor:
    """Extend each cropped logit map beyond its box crop by repeating the crop's border pixels.

    The graph zeroes prototype pixels outside the box, but upsampling to the input size interpolates across
    the box border; repeating the border values there (instead of a large negative logit) keeps the decoded
    masks at the input size close to decoding the uncropped maps, which is what the raw-output path does.
    """
    n, mh, mw = logits.shape
    b = boxes.float()
    sx, sy = mw / input_shape[1], mh / input_shape[0]
    # Prototype index j is inside when x1 <= j < x2 (box scaled to prototype pixels), as in the graph.
    c0 = torch.ceil(b[:, 0] * sx).clamp(0, mw - 1).long()
    c1 = (torch.ceil(b[:, 2] * sx).long() - 1).clamp(0, mw - 1)
    r0 = torch.ceil(b[:, 1] * sy).clamp(0, mh - 1).long()
    r1 = (torch.ceil(b[:, 3] * sy).long() - 1).clamp(0, mh - 1)
    c1, r1 = torch.maximum(c1, c0), torch.maximum(r1, r0)
    cols = torch.minimum(torch.maximum(torch.arange(mw, device=b.device)[None], c0[:, None]), c1[:, None])
    rows = torch.minimum(torch.maximum(torch.arange(mh, device=b.device)[None], r0[:, None]), r1[:, None])
    out = logits.gather(2, cols[:, None, :].expand(n, mh, mw))
    return out.gather(1, rows[:, :, None].expand(n, mh, mw))


def end2end_postprocess(
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
) -> list[dict]:
    """Outputs of an end-to-end graph -> per-image ``{"boxes": (n, 6), "masks": (n, h, w) bool | None}``.

    ``preds`` is ``(dets (B, K, 6), masks (B, K, H/4, W/4) probabilities)`` as the backend returns them. NMS
    already ran inside the graph with the thresholds chosen at export; here rows are filtered by ``conf``
    (exact when ``conf`` is at least the exported one), ``classes`` and ``max_det``; ``iou`` and
    ``agnostic`` cannot change after export and are ignored. The probability maps are turned back into
    logits and decoded exactly like raw predictions: bilinear upsampling to the input size (or straight to
    the original image with ``retina_masks``), threshold, crop to the box.
    """
    if ops is None:
        from yoloseg import ops
    dets, probs = preds
    input_shape = tuple(int(v) for v in input_shape[-2:])
    out = []
    for i in range(dets.shape[0]):
        d, p = dets[i].float(), probs[i].float()
        keep = (d[:, 5] >= 0) & (d[:, 4] > float(conf))
        if classes is not None:
            keep &= torch.isin(d[:, 5].long(), torch.as_tensor(list(classes), dtype=torch.int64, device=d.device))
        d, p = d[keep][: int(max_det)], p[keep][: int(max_det)]
        shape0 = tuple(int(v) for v in orig_shapes[i][:2])
        if len(d) == 0:
            out.append({"boxes": d[:, :6], "masks": None})
            continue
        logits = _fill_outside_crop(torch.logit(p.clamp(1e-6, 1 - 1e-6)), d[:, :4], input_shape)
        eye = torch.eye(len(d), dtype=logits.dtype, device=logits.device)
        if retina_masks:
            boxes = ops.scale_boxes(input_shape, d[:, :4].clone(), shape0)
            masks = ops.process_mask_native(logits, eye, boxes, shape0)
        else:
            masks = ops.process_mask(logits, eye, d[:, :4], input_shape, upsample=True)
            boxes = ops.scale_boxes(input_shape, d[:, :4].clone(), shape0)
        boxes = torch.cat([boxes, d[:, 4:6]], 1)
        nonempty = masks.flatten(1).any(1)
        if not bool(nonempty.all()):
            boxes, masks = boxes[nonempty], masks[nonempty]
        out.append({"boxes": boxes, "masks": masks if len(boxes) else None})
    return out
