"""The settings schema: one table of key -> type, default, range or choices, help.

This table is the single source of truth for validation (`yoloseg.cfg.get_cfg`), for `yoloseg <mode> --help`,
for the packaged `default.yaml` (rendered from it by `render_default_yaml`; a test keeps the file in sync)
and for the settings reference in docs/cli.md (`render_markdown`).

Type specs are small strings: `int`, `float` (ints accepted), `bool`, `str`, `any`, unions with `|`
(`int|float`, `bool|str`), `list[int]` (a list or tuple of ints), and a trailing `?` when `None` is allowed.
Ranges apply to numbers (and to each element of a list): `>=1`, `>0`, `[0,1]`, `(0,1]`.
Choices apply to string values and match case-insensitively.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

__all__ = ["SECTIONS", "SCHEMA", "Setting", "MODE_SECTIONS", "MODE_DEFAULTS", "render_default_yaml", "render_markdown"]


@dataclass(frozen=True)
class Setting:
    """One setting: its key, default value, type spec, allowed range or choices, section and help text."""

    key: str
    default: object
    type: str
    help: str
    section: str
    range: str | None = None
    choices: tuple[str, ...] | None = None

    @property
    def nullable(self) -> bool:
        return self.type.endswith("?")

    @property
    def types(self) -> tuple[str, ...]:
        return tuple(self.type.rstrip("?").split("|"))

    def bounds(self) -> tuple[float, bool, float, bool]:
        """(low, low_inclusive, high, high_inclusive) of the range; infinite when unbounded."""
        return _parse_range(self.range)

    def describe(self) -> str:
        """Short type/range text for help tables, e.g. `float, 0 <= x <= 1` or `str: onnx|torchscript`."""
        text = self.type
        if self.choices:
            text += ": " + "|".join(self.choices)
        if self.range:
            text += ", " + range_text(self.range, "x")
        return text


_RANGE_RE = re.compile(r"^\s*([\[(])\s*([-+0-9.einf]+)\s*,\s*([-+0-9.einf]+)\s*([\])])\s*$")
_BOUND_RE = re.compile(r"^\s*(>=|>|<=|<)\s*([-+0-9.einf]+)\s*$")


def _parse_range(spec: str | None) -> tuple[float, bool, float, bool]:
    if not spec:
        return -math.inf, True, math.inf, True
    m = _RANGE_RE.match(spec)
    if m:
        return float(m[2]), m[1] == "[", float(m[3]), m[4] == "]"
    m = _BOUND_RE.match(spec)
    if m:
        op, v = m[1], float(m[2])
        if op.startswith(">"):
            return v, op == ">=", math.inf, True
        return -math.inf, True, v, op == "<="
    raise ValueError(f"bad range spec {spec!r}")


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(v)


def range_text(spec: str, name: str) -> str:
    """Human text of a range spec for the named value, e.g. `0 <= conf <= 1`."""
    lo, lo_in, hi, hi_in = _parse_range(spec)
    parts = []
    if lo != -math.inf:
        parts.append(f"{_num(lo)} {'<=' if lo_in else '<'} ")
    parts.append(name)
    if hi != math.inf:
        parts.append(f" {'<=' if hi_in else '<'} {_num(hi)}")
    if lo == -math.inf and hi != math.inf:
        return "".join(parts)
    if hi == math.inf and lo != -math.inf:
        return f"{name} {'>=' if lo_in else '>'} {_num(lo)}"
    return "".join(parts)


# Sections in display order, with a title for the YAML and help output.
SECTIONS = {
    "general": "General: what to run and where",
    "train": "Training",
    "val": "Validation (also used by the validation pass inside training)",
    "predict": "Prediction and visualisation",
    "export": "Export",
    "hyp": "Optimisation and loss hyperparameters",
    "augment": "Training-time augmentation (probabilities and gains)",
}

# Which sections matter to each mode; `--help` shows these first.
MODE_SECTIONS = {
    "train": ("general", "train", "hyp", "augment", "val"),
    "val": ("general", "val"),
    "predict": ("general", "predict", "val"),
    "export": ("general", "export"),
    "info": ("general",),
}

# Defaults that depend on the mode. They sit above default.yaml and below anything the user sets.
MODE_DEFAULTS = {
    "train": {},
    "val": {"conf": 0.001, "rect": True},
    "predict": {"conf": 0.25, "batch": 1, "save": False},
    "export": {"batch": 1, "data": None},
    "info": {},
}

_OPTIMIZERS = ("auto", "SGD", "Adam", "Adamax", "AdamW", "NAdam", "RAdam", "RMSProp")


def _s(section):
    def make(key, default, type_, help_, range_=None, choices=None):
        return Setting(key, default, type_, help_, section, range_, tuple(choices) if choices else None)

    return make


_g, _t, _v, _p, _e, _h, _a = (_s(k) for k in ("general", "train", "val", "predict", "export", "hyp", "augment"))

_SETTINGS = [
    # general
    _g("task", "segment", "str", "task to run; `segment` is built in, plugins may add more (see `yoloseg plugins`)"),
    _g("mode", "train", "str", "what to do with the model", choices=("train", "val", "predict", "export", "info")),
    _g("model", "yolo11n-seg.yaml", "str?", "packaged model YAML name (the letter after yolo11 picks the scale n/s/m/l/x), "
       "a model YAML path, a checkpoint (.pt), an exported .onnx/.torchscript file or an OpenVINO export folder"),
    _g("data", "synthetic-shapes", "str?", "data set YAML path or packaged data set name; `synthetic-shapes` is generated "
       "on the fly and needs no download"),
    _g("imgsz", 640, "int|list[int]", "network input size: one number for a square input or [h, w]", ">=32"),
    _g("batch", 16, "int|float", "images per batch; -1 picks a size automatically (CUDA), a value in (0, 1) "
       "picks the size that fills that fraction of GPU memory; predict and export default to 1"),
    _g("device", None, "str?", "where to run: cpu, mps, 0, cuda:0 or 0,1; empty picks the first CUDA device, else cpu"),
    _g("workers", 8, "int", "loaders preparing batches beside the forward: processes in train and val, threads in "
       "predict (0 loads in the main process)", ">=0"),
    _g("half", False, "bool", "use float16 (CUDA inference and export)"),
    _g("project", None, "str?", "folder that holds the run folders (default runs/<task>)"),
    _g("name", None, "str?", "run folder name inside project (default: the mode, numbered to stay unique)"),
    _g("exist_ok", False, "bool", "reuse an existing run folder instead of numbering a new one"),
    _g("verbose", True, "bool", "print detailed progress and per-class tables"),
    _g("save", True, "bool", "write checkpoints when training, and annotated outputs when predicting"),
    _g("plots", True, "bool", "write plots (curves, confusion matrix, sample images) into the run folder"),
    _g("cfg", None, "str?", "YAML file of settings applied before the command-line ones"),
    # train
    _t("epochs", 100, "int", "passes over the training split", ">=1"),
    _t("time", None, "float?", "training budget in hours; when set it overrides epochs", ">0"),
    _t("patience", 100, "int", "stop after this many epochs without fitness improvement (0 never stops early)", ">=0"),
    _t("save_period", -1, "int", "also keep a checkpoint every N epochs (-1: only last.pt and best.pt)", ">=-1"),
    _t("cache", False, "bool|str", "keep decoded images in memory (true or ram) or on disk (disk)", choices=("ram", "disk")),
    _t("pretrained", True, "bool|str", "start from pretrained weights: true uses the checkpoint given as model, "
       "a path transfers the matching weights from that checkpoint"),
    _t("optimizer", "auto", "str", "optimizer; auto chooses from the number of iterations", choices=_OPTIMIZERS),
    _t("seed", 0, "int", "random seed for the whole run", ">=0"),
    _t("deterministic", True, "bool", "ask torch for deterministic algorithms (may be slower)"),
    _t("single_cls", False, "bool", "merge all classes into one"),
    _t("rect", False, "bool", "batch images of similar aspect ratio with minimal padding (training: no mosaic, "
       "no shuffling; validation always does this)"),
    _t("cos_lr", False, "bool", "cosine instead of linear learning-rate decay"),
    _t("close_mosaic", 10, "int", "turn mosaic off for the last N epochs (0 keeps it on)", ">=0"),
    _t("multi_scale", 0.0, "float", "vary the training input size per batch by up to this fraction of imgsz "
       "(sizes rounded to the stride; 0 keeps imgsz)", "[0,1)"),
    _t("resume", False, "bool|str", "continue an interrupted run: true takes model as the last.pt to resume, "
       "a path names it"),
    _t("amp", True, "bool", "mixed precision on CUDA (ignored on CPU)"),
    _t("fraction", 1.0, "float", "use this fraction of the training images (also the share of the train split "
       "drawn for int8 export calibration)", "(0,1]"),
    _t("freeze", None, "int|list[int]?", "freeze the first N layers, or the listed layer indices", ">=0"),
    _t("overlap_mask", True, "bool", "store the masks of one image in a single index map (instance 1..n) "
       "instead of one mask per instance"),
    _t("mask_ratio", 4, "int", "training masks are stored at 1/mask_ratio of the input size", ">=1"),
    _t("val", True, "bool", "validate after every epoch"),
    # val
    _v("split", "val", "str", "data split that val evaluates", choices=("train", "val", "test")),
    _v("save_json", False, "bool", "write COCO-format results JSON"),
    _v("save_txt", False, "bool", "write the predictions as YOLO-format label files (class, polygon) per image"),
    _v("save_conf", False, "bool", "add the confidence to each saved label line"),
    _v("conf", None, "float?", "minimum confidence of a detection (empty: 0.25 when predicting, 0.001 when "
       "validating)", "[0,1]"),
    _v("iou", 0.7, "float", "IoU above which NMS drops the lower-scoring box", "[0,1]"),
    _v("max_det", 300, "int", "most detections kept per image", ">=1"),
    _v("dnn", False, "bool", "run ONNX files through OpenCV DNN instead of onnxruntime"),
    # predict
    _p("source", None, "any?", "what to predict on: image, folder, glob, video, URL, or a list of them"),
    _p("stream", False, "bool", "yield results one at a time instead of returning a list (bounded memory)"),
    _p("vid_stride", 1, "int", "take every Nth video frame", ">=1"),
    _p("augment", False, "bool", "test-time augmentation (flipped and scaled copies)"),
    _p("agnostic_nms", False, "bool", "one NMS over all classes instead of one per class"),
    _p("classes", None, "int|list[int]?", "keep only these class ids", ">=0"),
    _p("retina_masks", False, "bool", "decode masks straight to the original image size"),
    _p("show", False, "bool", "show annotated images in a window"),
    _p("save_crop", False, "bool", "save a crop of every detection"),
    _p("save_frames", False, "bool", "with video sources, also save each annotated frame as an image "
       "(<video>_frames/<video>_<frame>.jpg)"),
    _p("show_labels", True, "bool", "draw class names on annotated images"),
    _p("show_conf", True, "bool", "draw confidences on annotated images"),
    _p("show_boxes", True, "bool", "draw boxes on annotated images (masks are always drawn)"),
    _p("line_width", None, "int?", "box line width in pixels (empty: scaled to the image size)", ">=1"),
    # export
    _e("format", "onnx", "str", "file format to export to", choices=("onnx", "torchscript", "openvino")),
    _e("int8", False, "bool", "int8 post-training quantization (onnx: onnxruntime QDQ, written as <name>_int8.onnx "
       "beside the float file; openvino: NNCF), calibrated on images of data's train split"),
    _e("calib_images", None, "int?", "int8: most calibration images taken from the train split (empty: 300)", ">=1"),
    _e("optimize", False, "bool", "optimise a TorchScript export for mobile"),
    _e("dynamic", False, "bool", "ONNX with dynamic batch and image size"),
    _e("simplify", True, "bool", "simplify the ONNX graph when onnxslim or onnxsim is installed"),
    _e("opset", None, "int?", "ONNX opset version (empty: the newest the installed torch supports)", ">=7"),
    _e("end2end", False, "bool", "put NMS and mask assembly inside the ONNX graph (fixed max_det outputs)"),
    _e("nms", None, "bool?", "nms=true is end2end=true (the name Ultralytics uses); empty or false: NMS outside"),
    # hyperparameters
    _h("lr0", 0.01, "float", "initial learning rate", "(0,1]"),
    _h("lrf", 0.01, "float", "final learning rate as a fraction of lr0", "(0,1]"),
    _h("momentum", 0.937, "float", "SGD momentum, or beta1 for the Adam family", "[0,1)"),
    _h("weight_decay", 0.0005, "float", "L2 weight decay (never applied to biases and norm layers)", "[0,1]"),
    _h("warmup_epochs", 3.0, "float", "epochs of linear warmup (fractions allowed)", ">=0"),
    _h("warmup_momentum", 0.8, "float", "momentum at the start of warmup", "[0,1)"),
    _h("warmup_bias_lr", 0.1, "float", "bias learning rate at the start of warmup", "[0,1]"),
    _h("box", 7.5, "float", "gain of the box (CIoU) loss; the mask loss uses it too", ">=0"),
    _h("cls", 0.5, "float", "gain of the classification loss", ">=0"),
    _h("dfl", 1.5, "float", "gain of the distribution focal loss", ">=0"),
    _h("nbs", 64, "int", "nominal batch size: gradients accumulate up to it and weight decay scales with it", ">=1"),
    # augmentation
    _a("hsv_h", 0.015, "float", "random hue shift, fraction of the hue circle", "[0,1]"),
    _a("hsv_s", 0.7, "float", "random saturation gain, fraction", "[0,1]"),
    _a("hsv_v", 0.4, "float", "random brightness gain, fraction", "[0,1]"),
    _a("degrees", 0.0, "float", "random rotation, +/- degrees", "[0,180]"),
    _a("translate", 0.1, "float", "random shift, +/- fraction of the image size", "[0,1]"),
    _a("scale", 0.5, "float", "random zoom, +/- fraction", ">=0"),
    _a("shear", 0.0, "float", "random shear, +/- degrees", "[0,180]"),
    _a("perspective", 0.0, "float", "random perspective strength (useful values are below 0.001)", "[0,1]"),
    _a("flipud", 0.0, "float", "probability of an up-down flip", "[0,1]"),
    _a("fliplr", 0.5, "float", "probability of a left-right flip", "[0,1]"),
    _a("bgr", 0.0, "float", "probability of swapping the colour channels", "[0,1]"),
    _a("mosaic", 1.0, "float", "probability of a 4-image mosaic", "[0,1]"),
    _a("mixup", 0.0, "float", "probability of blending two images (mixup)", "[0,1]"),
    _a("cutmix", 0.0, "float", "probability of CutMix: a rectangle of another image pasted in with its instances "
       "(never over an instance)", "[0,1]"),
    _a("copy_paste", 0.0, "float", "probability of copy-pasting instances between images", "[0,1]"),
    _a("copy_paste_mode", "flip", "str", "where pasted instances come from", choices=("flip", "mixup")),
]

SCHEMA: dict[str, Setting] = {s.key: s for s in _SETTINGS}


def _yaml_value(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_yaml_value(x) for x in v) + "]"
    return str(v)


def render_default_yaml() -> str:
    """The text of the packaged default.yaml, one commented line per setting."""
    lines = [
        "# yoloseg default settings. Generated from yoloseg/cfg/schema.py (the source of truth); edit it there.",
        "# Override any key on the command line (`yoloseg train epochs=10 imgsz=320`) or as keyword arguments",
        "# (`YOLO(...).train(epochs=10)`). The comment after each key gives its type, range and meaning.",
    ]
    for section, title in SECTIONS.items():
        lines += ["", f"# --- {title} ---"]
        for s in SCHEMA.values():
            if s.section != section:
                continue
            head = f"{s.key}: {_yaml_value(s.default)}".rstrip()
            lines.append(f"{head:<34}# ({s.describe()}) {s.help}")
    return "\n".join(lines) + "\n"


def render_markdown() -> str:
    """The settings reference tables of docs/cli.md."""
    out = []
    for section, title in SECTIONS.items():
        out += [f"### {title}", "", "| key | default | type / range | meaning |", "|---|---|---|---|"]
        for s in SCHEMA.values():
            if s.section == section:
                default = _yaml_value(s.default) or "(empty)"
                out.append(f"| `{s.key}` | `{default}` | {s.describe().replace('|', '&#124;')} | {s.help} |")
        out.append("")
    return "\n".join(out)


_DOC_BEGIN = "<!-- generated from yoloseg/cfg/schema.py: do not edit by hand -->"
_DOC_END = "<!-- end of generated settings -->"


def write_generated() -> list[str]:
    """Rewrite default.yaml and, in a source checkout, the settings section of docs/cli.md from the schema."""
    from pathlib import Path

    here = Path(__file__).resolve().parent
    written = [here / "default.yaml"]
    written[0].write_text(render_default_yaml(), encoding="utf-8")
    doc = here.parents[1] / "docs" / "cli.md"
    if doc.is_file():
        text = doc.read_text(encoding="utf-8")
        head, sep, rest = text.partition(_DOC_BEGIN)
        tail = rest.partition(_DOC_END)[2] if sep else ""
        doc.write_text(f"{head}{_DOC_BEGIN}\n\n{render_markdown()}\n{_DOC_END}{tail}", encoding="utf-8")
        written.append(doc)
    return [str(p) for p in written]
