"""Settings: packaged defaults, merging, and one validation pass against the schema.

`get_cfg(overrides)` is the only way settings enter the engine: it layers
default.yaml < per-mode defaults < `defaults` < a `cfg=` YAML file < `overrides`, coerces command-line
strings to each key's declared type, checks ranges and choices, and returns a `types.SimpleNamespace`.
An unknown key is an error that names the closest valid key.

A task may declare settings of its own (`Task.settings`, :func:`task_setting`): pass them as ``extra`` to
`get_cfg` / `check_key` / `coerce_value` and they are merged, defaulted and checked exactly like the
built-in ones.
"""

from __future__ import annotations

import difflib
import math
import re
from functools import lru_cache
from pathlib import Path
from types import SimpleNamespace

from yoloseg.cfg.schema import MODE_DEFAULTS, SCHEMA, Setting, range_text

__all__ = [
    "CfgError", "DEFAULT_CFG_PATH", "get_cfg", "load_defaults", "check_key", "coerce_value", "parse_cli_args",
    "task_setting",
]

DEFAULT_CFG_PATH = Path(__file__).with_name("default.yaml")

_NONE_WORDS = {"none", "null", "~", ""}
_TRUE_WORDS = {"true", "yes", "on", "1"}
_FALSE_WORDS = {"false", "no", "off", "0"}
_INT_RE = re.compile(r"^[+-]?\d+$")


class CfgError(ValueError):
    """A setting is unknown or its value is invalid; the message names the key and what is wrong."""


@lru_cache(maxsize=1)
def _load_defaults_cached() -> tuple:
    import yaml

    with open(DEFAULT_CFG_PATH, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    return tuple(data.items())


def load_defaults() -> dict:
    """The packaged defaults (default.yaml) as a fresh dict, in file order."""
    return {k: (list(v) if isinstance(v, list) else v) for k, v in _load_defaults_cached()}


# Ultralytics settings that yoloseg does not have, with why: a command line carried over from `yolo segment`
# gets a clear answer instead of a "did you mean" guess.
FOREIGN_KEYS = {
    "cls_remap": "fine-tuning across data sets keeps the pretrained rows of matching class names; yoloseg loads "
                 "every weight whose shape fits and starts a new class head when the class count differs",
    "profile": "speed profiling of ONNX/TensorRT during training is not part of yoloseg",
    "compile": "torch.compile is not wired into yoloseg's engine",
    "channels_last": "yoloseg keeps torch's default memory format",
    "dropout": "dropout applies to classification models only",
    "quantize": "yoloseg quantizes at export: int8=true with format=onnx or format=openvino",
    "stream_buffer": "yoloseg reads files, folders, globs and videos, not live streams",
    "visualize": "feature-map visualisation is not part of yoloseg",
    "embed": "feature-embedding output is not part of yoloseg",
    "workspace": "TensorRT export is not part of yoloseg (formats: onnx, torchscript, openvino)",
    "distill_model": "knowledge distillation is not part of yoloseg",
    "dis": "knowledge distillation is not part of yoloseg",
    "cls_pw": "class-frequency weighting of the classification loss is not part of yoloseg",
    "pose": "a pose-model loss gain; yoloseg has segmentation models",
    "kobj": "a pose-model loss gain; yoloseg has segmentation models",
    "rle": "a pose-model loss gain; yoloseg has segmentation models",
    "angle": "an oriented-box loss gain; yoloseg has segmentation models",
    "dlog": "a depth-model loss gain; yoloseg has segmentation models",
    "dgrad": "a depth-model loss gain; yoloseg has segmentation models",
    "dlam": "a depth-model loss setting; yoloseg has segmentation models",
    "auto_augment": "a classification augmentation policy",
    "erasing": "a classification augmentation",
    "tracker": "tracking is not part of yoloseg",
    "keras": "Keras export is not part of yoloseg",
}


def _schema(extra=()) -> dict:
    """The built-in schema plus a task's own settings (``extra``: Setting objects)."""
    if not extra:
        return SCHEMA
    return {**SCHEMA, **{s.key: s for s in extra}}


def task_setting(key: str, default, type: str, help: str, range: str | None = None, choices=None,
                 task: str = "task") -> Setting:
    """A setting declared by a task (``Task.settings``): same types, ranges and choices as the built-in
    ones (type one of int, float, bool, str, list[int], any; ``?`` allows empty). Checked here: the key is a
    new identifier and the default passes its own checks."""
    if not isinstance(key, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", key):
        raise ValueError(f"task {task!r}: setting key must be a lowercase identifier, got {key!r}")
    if key in SCHEMA:
        raise ValueError(f"task {task!r}: setting '{key}' is already a yoloseg setting; choose another name")
    unknown = [t for t in str(type).rstrip("?").split("|") if t not in _PARSERS and t != "any"]
    if unknown:
        raise ValueError(f"task {task!r}: setting '{key}' has unknown type {type!r} (use {', '.join(_PARSERS)}, any)")
    s = Setting(key, default, str(type), str(help), f"task:{task}", range, tuple(choices) if choices else None)
    try:
        coerce_value(key, default, extra=(s,))
    except CfgError as e:
        raise ValueError(f"task {task!r}: the default of setting '{key}' is not valid: {e}") from None
    return s


def check_key(key: str, where: str = "", extra=()) -> str:
    """Normalise a key (`save-txt` -> `save_txt`) and fail with a suggestion when it is unknown."""
    if not isinstance(key, str):
        raise CfgError(f"setting names must be strings, got {key!r}{where}")
    schema = _schema(extra)
    norm = key.strip().replace("-", "_")
    if norm in schema:
        return norm
    if norm in FOREIGN_KEYS:
        raise CfgError(f"'{key}'{where} is an Ultralytics setting that yoloseg does not have: {FOREIGN_KEYS[norm]}")
    close = difflib.get_close_matches(norm, list(schema), n=1, cutoff=0.6)
    hint = f"; did you mean '{close[0]}'?" if close else "; run `yoloseg train --help` for the list of settings"
    raise CfgError(f"unknown setting '{key}'{where}{hint}")


# ---------------------------------------------------------------------------------------------- coercion
class _NoMatch(Exception):
    pass


def _as_int(v):
    if isinstance(v, bool):
        raise _NoMatch
    if isinstance(v, int):
        return v
    if isinstance(v, float) and math.isfinite(v) and v.is_integer():
        return int(v)
    if isinstance(v, str):
        t = v.strip()
        if _INT_RE.match(t):
            return int(t)
        try:
            f = float(t)
        except ValueError:
            raise _NoMatch from None
        if math.isfinite(f) and f.is_integer() and "." in t and "e" not in t.lower():
            return int(f)
    raise _NoMatch


def _as_float(v):
    if isinstance(v, bool):
        raise _NoMatch
    if isinstance(v, (int, float)):
        f = float(v)
    elif isinstance(v, str):
        try:
            f = float(v.strip())
        except ValueError:
            raise _NoMatch from None
    else:
        try:  # numpy scalars, 0-d tensors
            f = float(v)
        except (TypeError, ValueError):
            raise _NoMatch from None
    if math.isnan(f):
        raise _NoMatch
    return f


def _as_bool(v):
    if isinstance(v, bool):
        return v
    if isinstance(v, int) and v in (0, 1):
        return bool(v)
    if isinstance(v, str):
        t = v.strip().lower()
        if t in _TRUE_WORDS:
            return True
        if t in _FALSE_WORDS:
            return False
    raise _NoMatch


def _as_str(v):
    if isinstance(v, str):
        return v
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return str(v)
    raise _NoMatch


def _as_int_list(v):
    if isinstance(v, str):
        t = v.strip()
        if t[:1] in "[(" and t[-1:] in "])":
            t = t[1:-1]
        parts = [p for p in re.split(r"[,\s]+", t) if p]
        if not parts:
            raise _NoMatch
        return [_as_int(p) for p in parts]
    if isinstance(v, (list, tuple)):
        return [_as_int(x) for x in v]
    raise _NoMatch


_PARSERS = {"int": _as_int, "float": _as_float, "bool": _as_bool, "str": _as_str, "list[int]": _as_int_list}
_TYPE_WORDS = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
               "list[int]": "a list of integers"}


def _expected(s: Setting) -> str:
    words = [_TYPE_WORDS.get(t, t) for t in s.types]
    if s.choices:
        words = [w if w != "a string" else "one of " + ", ".join(s.choices) for w in words]
    text = " or ".join(words)
    return text + (" (or empty)" if s.nullable else "")


def _check_range(s: Setting, value, raw):
    if not s.range:
        return
    lo, lo_in, hi, hi_in = s.bounds()
    items = value if isinstance(value, list) else [value]
    for x in items:
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            continue
        ok = (x >= lo if lo_in else x > lo) and (x <= hi if hi_in else x < hi)
        if not ok:
            raise CfgError(f"{s.key}={raw!r} is out of range: need {range_text(s.range, s.key)}")


def _match_choice(s: Setting, value: str) -> str:
    for c in s.choices:
        if c.lower() == value.strip().lower():
            return c
    raise CfgError(f"{s.key}={value!r} is not valid: choose one of {', '.join(s.choices)}")


def coerce_value(key: str, value, extra=()):
    """Convert `value` (a Python object or a command-line string) to the declared type of `key` and check it."""
    s = _schema(extra)[check_key(key, extra=extra)]
    empty = value is None or (isinstance(value, str) and value.strip().lower() in _NONE_WORDS)
    if empty and s.nullable:
        return None
    if value is None or (empty and ("str" not in s.types or not value.strip())):
        raise CfgError(f"{s.key} must not be empty: expected {_expected(s)}")
    if "any" in s.types:
        return value
    pre = _PRE.get(s.key)
    if pre is not None:
        value = pre(value)
    for t in s.types:
        try:
            out = _PARSERS[t](value)
        except _NoMatch:
            continue
        if t == "str" and s.choices:
            out = _match_choice(s, out)
        _check_range(s, out, value)
        post = _POST.get(s.key)
        return post(out) if post else out
    raise CfgError(f"{s.key}={value!r} is not valid: expected {_expected(s)}")


def _device_pre(v):
    if isinstance(v, (list, tuple)):
        return ",".join(str(x) for x in v)
    return v


def _imgsz_post(v):
    if isinstance(v, list):
        if len(v) == 1:
            return v[0]
        if len(v) != 2:
            raise CfgError(f"imgsz={v!r} is not valid: give one size or [h, w]")
    return v


def _batch_post(v):
    if isinstance(v, float) and not (0.0 < v < 1.0):
        raise CfgError(f"batch={v!r} is not valid: a fraction must satisfy 0 < batch < 1 (or give a whole number)")
    if isinstance(v, int) and not (v >= 1 or v == -1):
        raise CfgError(f"batch={v!r} is not valid: need batch >= 1, or -1 for automatic")
    return v


_PRE = {"device": _device_pre}
_POST = {"imgsz": _imgsz_post, "batch": _batch_post}


# ---------------------------------------------------------------------------------------------- merging
def _normalise(d, where: str, extra=()) -> dict:
    if d is None:
        return {}
    if isinstance(d, SimpleNamespace):
        d = vars(d)
    if not isinstance(d, dict):
        raise CfgError(f"settings{where} must be a dict, got {type(d).__name__}")
    return {check_key(k, where, extra): v for k, v in d.items()}


def _load_cfg_file(path, extra=()) -> dict:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"cfg={str(path)!r}: settings file not found")
    with open(p, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise CfgError(f"cfg={str(path)!r}: expected a mapping of settings, got {type(data).__name__}")
    data.pop("cfg", None)
    return _normalise(data, f" in {p}", extra)


def get_cfg(overrides: dict | None = None, defaults: dict | None = None, extra=()) -> SimpleNamespace:
    """Merge and validate settings once; returns a `types.SimpleNamespace` with every key of the schema.

    Layers, lowest first: default.yaml, the defaults of the selected mode (e.g. predict: batch=1, conf=0.25),
    `defaults` (e.g. saved run arguments), the YAML named by a `cfg=` key, then `overrides`.
    ``extra``: a task's own settings (`Task.settings`), added to the schema with their defaults.
    Raises `CfgError` (a ValueError) naming the key for unknown keys, bad types, ranges and choices.
    """
    extra = tuple(extra or ())
    schema = _schema(extra)
    over = _normalise(overrides, "", extra)
    base_over = _normalise(defaults, " (defaults)", extra)
    cfg_path = over.pop("cfg", None)
    if cfg_path is None:
        cfg_path = base_over.pop("cfg", None)
    file_over = _load_cfg_file(coerce_value("cfg", cfg_path), extra) if cfg_path not in (None, "") else {}

    merged = load_defaults()
    merged.update({s.key: s.default for s in extra})
    mode = over.get("mode", file_over.get("mode", base_over.get("mode", merged["mode"])))
    if isinstance(mode, str):
        merged.update(MODE_DEFAULTS.get(mode.strip().lower(), {}))
    merged.update(base_over)
    merged.update(file_over)
    merged.update(over)
    merged["cfg"] = None if cfg_path in (None, "") else str(cfg_path)
    missing = [k for k in SCHEMA if k not in merged]
    if missing:  # default.yaml out of date with the schema: a packaging bug, not a user error
        raise RuntimeError(f"default.yaml lacks settings {missing}; regenerate it from yoloseg/cfg/schema.py")
    return SimpleNamespace(**{k: coerce_value(k, merged[k], extra) for k in schema})


def parse_cli_args(args, unknown: dict | None = None) -> dict:
    """Turn `key=value` words into a dict of raw (string) overrides; keys are checked, values are not yet.

    With an ``unknown`` dict, words whose key is not a built-in setting go there (normalised, unchecked)
    instead of raising: a task's own settings are checked once the task is known."""
    out = {}
    for word in args:
        if "=" not in word:
            raise CfgError(f"expected key=value, got '{word}'")
        key, value = word.split("=", 1)
        if not key:
            raise CfgError(f"missing key in '{word}'")
        norm = key.strip().replace("-", "_")
        if unknown is not None and norm not in SCHEMA:
            unknown[norm] = value
            continue
        out[check_key(key)] = value
    return out
