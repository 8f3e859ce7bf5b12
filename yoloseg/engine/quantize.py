"""Int8 post-training quantization of exported models: calibration images, onnxruntime QDQ, OpenVINO/NNCF.

Calibration takes images of the data set's ``train`` split (never ``val``, so that a later ``val`` measures
the quantized model on images its ranges were not fitted to), letterboxed to the export size exactly as
predict does (square, centred grey-114 padding, RGB, [0, 1]). Which and how many: ``fraction`` of the split
(default all of it), at most ``calib_images`` of those (default :data:`DEFAULT_CALIB_IMAGES`), spread evenly
over the sorted file list, so the same settings always pick the same images.

Nodes kept in float32 (see docs/export.md for the measurements behind the choice):

- the box/score decode after the head's last convolutions (DFL softmax and its 1x1 convolution, anchor
  arithmetic, stride scaling, class sigmoid, the concatenation of pred): its outputs are pixel coordinates up
  to the input size next to [0, 1] scores and unbounded coefficients, and one shared int8 scale for them
  turns every score into 0 (boxes need ~0.1 px over a 640 px range);
- the last 1x1 convolution of each box, class and mask-coefficient branch (``cv2/cv3/cv4.*.2``) and the
  prototype output convolution: their outputs feed the decode (DFL logits are read through a softmax, class
  logits through a sigmoid whose useful range is a few units) and the mask product coefficient x prototype.
"""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import numpy as np

__all__ = [
    "DEFAULT_CALIB_IMAGES", "calibration_files", "calibration_batches", "head_float_nodes", "quantize_onnx",
    "quantize_openvino", "OPENVINO_INSTALL_HINT",
]

DEFAULT_CALIB_IMAGES = 300
OPENVINO_INSTALL_HINT = "pip install 'yoloseg[openvino]'  (or: pip install openvino nncf)"
ORT_INSTALL_HINT = "pip install 'yoloseg[onnx]'  (or: pip install onnxruntime)"

# Head sub-modules whose output convolutions stay float ("exclusion policy" names used by the bench).
_HEAD_OUT_CONV = re.compile(r"/cv[234]\.\d+/cv[234]\.\d+\.2/Conv$")
_PROTO_OUT_CONV = re.compile(r"/proto/cv3/conv/Conv$")


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def calibration_files(data, fraction: float = 1.0, count: int | None = None) -> list[str]:
    """The train-split images used for calibration (see the module docstring)."""
    from yoloseg.data.yaml import check_data_yaml, list_image_files

    if data is None or str(data).strip() == "":
        raise ValueError("int8=True needs calibration images: give data=<data set YAML> (its train split is used)")
    spec = check_data_yaml(data)
    if not spec.get("train"):
        raise ValueError(f"int8=True: data={data!r} has no train split to calibrate on")
    files = list_image_files(spec["train"], what=f"data={data} train split")
    if not files:
        raise ValueError(f"int8=True: the train split of data={data!r} holds no images")
    fraction = float(fraction if fraction is not None else 1.0)
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    pool = max(1, math.ceil(len(files) * fraction))
    n = min(pool, int(count) if count else DEFAULT_CALIB_IMAGES)
    if n < 1:
        raise ValueError(f"calib_images must be >= 1, got {count}")
    idx = np.linspace(0, len(files) - 1, n).round().astype(int) if n > 1 else np.array([0])
    return [files[i] for i in sorted(set(idx.tolist()))]


def calibration_batches(files: list[str], imgsz, batch: int = 1):
    """Yield float32 ``(batch, 3, h, w)`` arrays of letterboxed images (last batch padded by repeating)."""
    import cv2

    from yoloseg.data.letterbox import LetterBox

    lb = LetterBox(tuple(imgsz), auto=False)
    buf = []
    for f in files:
        im = cv2.imread(f)
        if im is None:
            _log(f"WARNING: calibration: cannot read {f}; skipped")
            continue
        im, _ = lb(im)
        buf.append(np.ascontiguousarray(im[:, :, ::-1].transpose(2, 0, 1), dtype=np.float32) / 255.0)
        if len(buf) == batch:
            yield np.stack(buf)
            buf = []
    if buf:
        while len(buf) < batch:
            buf.append(buf[-1])
        yield np.stack(buf)


def head_float_nodes(model, policy: str = "decode+out") -> list[str]:
    """Names of the ONNX nodes that stay float32 under ``policy``.

    ``none``: quantize everything. ``decode``: every node that follows the head's last convolutions (found as
    the nodes that depend on a head output convolution and are not convolutions of the backbone/neck).
    ``decode+out`` (default): ``decode`` plus the head's output convolutions (box/class/coefficient 1x1 convs
    and the prototype output conv). ``decode+out-proto``: like ``decode+out`` but the prototype conv is
    quantized.
    """
    if policy == "none":
        return []
    nodes = list(model.graph.node)
    out_convs = [n for n in nodes if n.op_type == "Conv" and _HEAD_OUT_CONV.search(n.name or "")]
    proto_convs = [n for n in nodes if n.op_type == "Conv" and _PROTO_OUT_CONV.search(n.name or "")]
    if not out_convs:
        raise ValueError("int8: cannot find the segmentation head's output convolutions in the ONNX graph "
                         "(node names /model.N/cv2.i/cv2.i.2/Conv); was it written by yoloseg?")
    # everything downstream of the branch outputs (the decode), found by walking consumers
    consumers: dict[str, list] = {}
    for n in nodes:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    decode, stack = set(), [o for n in out_convs for o in n.output]
    while stack:
        t = stack.pop()
        for c in consumers.get(t, ()):
            if c.name not in decode:
                decode.add(c.name)
                stack.extend(c.output)
    # plus the constant/shape helpers the decode reads that are not convolutions
    names = set(decode)
    if policy in ("decode+out", "decode+out-proto"):
        names.update(n.name for n in out_convs)
    if policy == "decode+out":
        names.update(n.name for n in proto_convs)
    if policy not in ("decode", "decode+out", "decode+out-proto"):
        raise ValueError(f"unknown float-node policy {policy!r}")
    return sorted(names)


def quantize_onnx(src: str | Path, dst: str | Path, files: list[str], imgsz, batch: int = 1,
                  policy: str = "decode+out", per_channel: bool = True) -> dict:
    """Static QDQ quantization of ``src`` into ``dst`` (uint8 activations, int8 weights); returns a summary."""
    try:
        from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                              quantize_static)
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError:
        raise ModuleNotFoundError(f"int8 ONNX export needs onnxruntime: {ORT_INSTALL_HINT}") from None
    import tempfile

    import onnx

    model = onnx.load(str(src))
    exclude = head_float_nodes(model, policy)
    in_name = model.graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(calibration_batches(files, imgsz, batch))
            self.n = 0

        def get_next(self):
            x = next(self.it, None)
            if x is None:
                return None
            self.n += x.shape[0]
            return {in_name: x}

    reader = Reader()
    with tempfile.TemporaryDirectory(prefix="yoloseg-int8-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        except Exception as e:  # noqa: BLE001  (optional optimisation; quantize the file as written)
            _log(f"note: int8 pre-processing skipped ({type(e).__name__}: {e})")
            pre = Path(src)
        quantize_static(
            str(pre), str(dst), reader, quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8, per_channel=per_channel, nodes_to_exclude=exclude,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
        )
    if reader.n == 0:
        raise ValueError("int8: none of the calibration images could be read")
    q = onnx.load(str(dst))
    del q.metadata_props[:]
    q.metadata_props.extend(model.metadata_props)
    onnx.save(q, str(dst))
    return {"images": reader.n, "float_nodes": len(exclude), "policy": policy}


def openvino_ignored_scope(ov_model, onnx_model, policy: str = "decode+out"):
    """NNCF ignored scope with the same float nodes as the ONNX QDQ policy: the OpenVINO operations converted
    from them, found by their output tensor names (kept from the ONNX graph) or their friendly names."""
    import nncf

    float_nodes = set(head_float_nodes(onnx_model, policy))
    tensors = {o for n in onnx_model.graph.node if n.name in float_nodes for o in n.output}
    names = []
    for op in ov_model.get_ops():
        name = op.get_friendly_name()
        if name in float_nodes or any(tensors & set(out.get_names()) for out in op.outputs()):
            names.append(name)
    return nncf.IgnoredScope(names=names, validate=False), len(names)


def quantize_openvino(ov_model, onnx_model, files: list[str], imgsz, policy: str = "decode+out"):
    """NNCF post-training quantization of an OpenVINO model (mixed preset: symmetric weights, asymmetric
    activations), calibrated on ``files``."""
    try:
        import nncf
    except ImportError:
        raise ModuleNotFoundError(f"int8 OpenVINO export needs nncf: {OPENVINO_INSTALL_HINT}") from None
    data = list(calibration_batches(files, imgsz, 1))
    if not data:
        raise ValueError("int8: none of the calibration images could be read")
    dataset = nncf.Dataset(data)
    scope, n_float = openvino_ignored_scope(ov_model, onnx_model, policy)
    q = nncf.quantize(ov_model, dataset, preset=nncf.QuantizationPreset.MIXED, subset_size=len(data),
                      ignored_scope=scope)
    _log(f"int8: {n_float} operations kept in float (head decode and output convolutions)")
    return q
