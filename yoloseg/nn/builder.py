"""Model configs: locate/load the YAML, pick the scale, and build the layer stack from the registry."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import yaml
from torch import nn

from yoloseg.nn.blocks import C2PSA, SPPF, C3k2
from yoloseg.nn.conv import Conv, Concat, DWConv
from yoloseg.nn.head import Segment
from yoloseg.nn.registry import LAYERS, BuildContext, register_layer

MODELS_DIR = Path(__file__).resolve().parent.parent / "cfg" / "models"
_NAME_RE = re.compile(r"^(?P<family>yolo\d+)(?P<scale>[nsmlx])(?P<rest>-[\w-]+)?$")


# ----------------------------------------------------------------------------------------------------------
# Built-in layer vocabulary
# ----------------------------------------------------------------------------------------------------------
def _one_input(spec: dict, ch_in: list[int]) -> int:
    if len(ch_in) != 1:
        raise ValueError(f"layer type {spec['type']!r} takes one input, got from={spec.get('from')!r}")
    return ch_in[0]


@register_layer("Conv")
def _build_conv(spec, ch_in, ctx):
    c1, c2 = _one_input(spec, ch_in), ctx.channels(spec["out"])
    g = spec.get
    return Conv(c1, c2, g("k", 1), g("s", 1), g("p"), g("g", 1), g("d", 1), g("act", True)), c2


@register_layer("DWConv")
def _build_dwconv(spec, ch_in, ctx):
    c1, c2 = _one_input(spec, ch_in), ctx.channels(spec["out"])
    return DWConv(c1, c2, spec.get("k", 1), spec.get("s", 1), spec.get("d", 1), spec.get("act", True)), c2


@register_layer("C3k2")
def _build_c3k2(spec, ch_in, ctx):
    c1, c2 = _one_input(spec, ch_in), ctx.channels(spec["out"])
    c3k = bool(spec.get("c3k", False) or ctx.options.get("c3k", False))
    n = ctx.repeats(spec.get("n", 1))
    return C3k2(c1, c2, n, c3k, spec.get("e", 0.5), spec.get("g", 1), spec.get("shortcut", True)), c2


@register_layer("SPPF")
def _build_sppf(spec, ch_in, ctx):
    c1, c2 = _one_input(spec, ch_in), ctx.channels(spec["out"])
    return SPPF(c1, c2, spec.get("k", 5)), c2


@register_layer("C2PSA")
def _build_c2psa(spec, ch_in, ctx):
    c1, c2 = _one_input(spec, ch_in), ctx.channels(spec["out"])
    return C2PSA(c1, c2, ctx.repeats(spec.get("n", 1)), spec.get("e", 0.5)), c2


@register_layer("Upsample")
def _build_upsample(spec, ch_in, ctx):
    c1 = _one_input(spec, ch_in)
    return nn.Upsample(scale_factor=float(spec.get("factor", 2)), mode=spec.get("mode", "nearest")), c1


@register_layer("Concat")
def _build_concat(spec, ch_in, ctx):
    return Concat(spec.get("dim", 1)), sum(ch_in)


@register_layer("Segment")
def _build_segment(spec, ch_in, ctx):
    npr = ctx.channels(spec.get("npr", 256))
    head = Segment(ctx.nc, spec.get("nm", 32), npr, spec.get("reg_max", 16), tuple(ch_in))
    return head, head.no


# ----------------------------------------------------------------------------------------------------------
# Config resolution
# ----------------------------------------------------------------------------------------------------------
def packaged_configs() -> list[str]:
    """Names of the packaged model YAMLs, expanded per scale (e.g. 'yolo11n-seg.yaml')."""
    names = []
    for path in sorted(MODELS_DIR.glob("*.yaml")):
        with open(path, encoding="utf-8") as f:
            scales = (yaml.safe_load(f) or {}).get("scales") or {}
        m = re.match(r"^(yolo\d+)(.*)$", path.stem)
        names += [f"{m.group(1)}{s}{m.group(2)}.yaml" for s in scales] if m and scales else [path.name]
    return names


def scale_from_name(name: str) -> str | None:
    m = _NAME_RE.match(Path(str(name)).stem)
    return m.group("scale") if m else None


def load_model_config(cfg) -> dict:
    """Resolve ``cfg`` (dict, packaged name like 'yolo11n-seg.yaml', or YAML path) to a config dict with
    ``scale`` and ``yaml_file`` filled in. The input dict is not modified."""
    if isinstance(cfg, dict):
        d = copy.deepcopy(cfg)
    elif isinstance(cfg, (str, Path)):
        path = Path(cfg)
        if path.suffix not in (".yaml", ".yml"):
            raise ValueError(
                f"model config {str(cfg)!r} must be a .yaml file or a packaged name like 'yolo11n-seg.yaml'"
            )
        if path.is_file():
            src, yaml_file = path, str(path)
        else:
            candidates = [MODELS_DIR / path.name]
            m = _NAME_RE.match(path.stem)
            if m:  # 'yolo11n-seg.yaml' -> packaged 'yolo11-seg.yaml', scale 'n'
                candidates.insert(0, MODELS_DIR / f"{m.group('family')}{m.group('rest') or ''}{path.suffix}")
            src = next((c for c in candidates if c.is_file()), None) if len(path.parts) == 1 else None
            if src is None:
                known = ", ".join(packaged_configs())
                raise FileNotFoundError(f"model config {str(cfg)!r} not found (packaged: {known})")
            yaml_file = path.name
        with open(src, encoding="utf-8") as f:
            d = yaml.safe_load(f)
        if not isinstance(d, dict):
            raise ValueError(f"model config {str(cfg)!r} does not contain a mapping")
        if not d.get("scale"):
            d["scale"] = scale_from_name(path.name)
        d["yaml_file"] = yaml_file
    else:
        raise ValueError(f"model config must be a dict, YAML name or path, got {type(cfg).__name__}")
    if "layers" not in d or not isinstance(d["layers"], list):
        raise ValueError("model config needs a 'layers' list")
    scales = d.get("scales") or {}
    if scales:
        if not d.get("scale"):
            d["scale"] = next(iter(scales))
        if d["scale"] not in scales:
            raise ValueError(f"model config has no scale {d['scale']!r}; available: {list(scales)}")
    return d


def build_layers(d: dict, ch: int = 3) -> tuple[nn.Sequential, list[int], BuildContext]:
    """Build the layer stack. Each module gets ``i`` (index), ``f`` (from) and ``type`` attributes."""
    scales = d.get("scales") or {}
    sc = dict(scales.get(d.get("scale"), {})) if scales else {}
    ctx = BuildContext(
        nc=int(d.get("nc", 80)),
        depth=float(sc.pop("depth", d.get("depth", 1.0))),
        width=float(sc.pop("width", d.get("width", 1.0))),
        max_channels=int(sc.pop("max_channels", d.get("max_channels", 1 << 30))),
        scale=d.get("scale"),
        options=sc,
    )
    channels: list[int] = []
    layers, save = [], set()
    for i, spec in enumerate(d["layers"]):
        if not isinstance(spec, dict) or "type" not in spec:
            raise ValueError(f"model config layer {i} must be a mapping with a 'type', got {spec!r}")
        src = spec.get("from", -1)
        srcs = [src] if isinstance(src, int) else list(src)
        ch_in = []
        for j in srcs:
            k = i + j if j < 0 else j
            if not 0 <= k < i and not (i == 0 and j == -1):
                raise ValueError(f"model config layer {i}: 'from' index {j} does not name an earlier layer")
            ch_in.append(ch if i == 0 and j == -1 else channels[k])
            if j != -1:
                save.add(k)
        module, c_out = LAYERS.get(spec["type"])(spec, ch_in, ctx)
        module.i, module.f, module.type = i, src, spec["type"]
        layers.append(module)
        channels.append(int(c_out))
    return nn.Sequential(*layers), sorted(save), ctx
