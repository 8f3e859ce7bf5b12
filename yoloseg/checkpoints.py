"""Checkpoints: yoloseg's own format and safe loading of Ultralytics YOLO11-seg ``.pt`` files.

Our format is a plain dict of tensors, numbers, strings, lists and dicts, so it loads with
``torch.load(weights_only=True)``. Writes are atomic (temp file + ``os.replace``).

Ultralytics checkpoints pickle whole model objects. They are read by an allow-listed unpickler that never
imports anything: ``ultralytics.*`` and ``torch.nn.modules.*`` classes become inert placeholder classes that
only record the pickled state; torch's tensor/parameter rebuild functions, storages, ``OrderedDict``, ``set``
and a few plain value types map to the real ones; every other global is refused with
:class:`UnsafeCheckpointError`. The YOLO11-seg model is then rebuilt from our own config and the weights
gathered from the placeholder tree.
"""

from __future__ import annotations

import collections
import datetime
import io
import pickle
import types
from pathlib import Path

import torch

from yoloseg.utils.files import atomic_torch_save

FORMAT_NAME = "yoloseg"
FORMAT_VERSION = 1


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint's pickle names a global outside the allow-list (it could run code when loaded)."""


class _Refused(Exception):
    def __init__(self, what: str):
        super().__init__(what)
        self.what = what


# ----------------------------------------------------------------------------------------------------------
# Inert placeholders
# ----------------------------------------------------------------------------------------------------------
class PickledObject:
    """Stand-in for an object of a foreign class: stores the pickled state, has no behaviour."""

    _qualname = "?"

    def __init__(self, *args, **kwargs):
        self.__dict__["_pickled_args"] = (args, kwargs)

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2 and (state[0] is None or isinstance(state[0], dict)):
            state, slots = state  # (dict state, slot state)
            if isinstance(slots, dict):
                self.__dict__.update(slots)
        if isinstance(state, dict):
            self.__dict__.update(state)
        elif state is not None:
            self.__dict__["_pickled_state"] = state

    def __repr__(self):
        return f"<pickled {self._qualname}>"

    @property
    def class_name(self) -> str:
        return self._qualname.rsplit(".", 1)[-1]


_PLACEHOLDERS: dict[str, type] = {}


def _placeholder(module: str, name: str) -> type:
    key = f"{module}.{name}"
    cls = _PLACEHOLDERS.get(key)
    if cls is None:
        cls = type(name, (PickledObject,), {"_qualname": key, "__module__": __name__})
        _PLACEHOLDERS[key] = cls
    return cls


class _IgnoredAttribute(PickledObject):
    """Result of the accepted ``getattr(Detect, 'forward')`` pattern (old Segment heads stored it)."""

    _qualname = "ignored getattr(Detect, 'forward')"


def _guarded_getattr(obj, name):
    if (
        isinstance(obj, type)
        and issubclass(obj, PickledObject)
        and obj._qualname.startswith("ultralytics.")
        and obj._qualname.endswith(".Detect")
        and name == "forward"
    ):
        return _IgnoredAttribute()
    target = obj._qualname if isinstance(obj, type) and issubclass(obj, PickledObject) else type(obj).__name__
    raise _Refused(f"builtins.getattr({target}, {name!r})")


def _guarded_reconstructor(cls, base, state):
    if isinstance(cls, type) and issubclass(cls, PickledObject) and base is object and state is None:
        return cls.__new__(cls)
    raise _Refused(f"copyreg._reconstructor({cls!r}, {base!r})")


def _path_as_str(*parts):
    if not all(isinstance(p, str) for p in parts):
        raise _Refused("pathlib.Path with non-string parts")
    return "/".join(parts)


_NUMPY_KINDS = "biufc?"


def _numpy_dtype(spec, align=False, copy=False):
    import numpy as np

    if not isinstance(spec, str):
        raise _Refused(f"numpy.dtype({spec!r})")
    dt = np.dtype(spec)
    if dt.kind not in _NUMPY_KINDS:
        raise _Refused(f"numpy.dtype({spec!r})")
    return dt


def _numpy_scalar(dtype, data=None):
    import numpy as np

    if not isinstance(dtype, np.dtype) or dtype.kind not in _NUMPY_KINDS or not isinstance(data, bytes):
        raise _Refused("numpy scalar of a non-numeric dtype")
    return np.frombuffer(data, dtype=dtype, count=1)[0].item()


def _no_hooks(hooks) -> collections.OrderedDict:
    if hooks:  # tensors from a checkpoint never need backward hooks; they would be callables from the pickle
        raise _Refused("tensor backward hooks")
    return collections.OrderedDict()


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks, metadata=None):
    hooks = _no_hooks(backward_hooks)
    return torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, hooks, metadata)


def _rebuild_parameter(data, requires_grad, backward_hooks):
    return torch._utils._rebuild_parameter(data, requires_grad, _no_hooks(backward_hooks))


_TORCH_DTYPES = {name for name in dir(torch) if isinstance(getattr(torch, name, None), torch.dtype)}

_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("builtins", "getattr"): _guarded_getattr,
    ("copyreg", "_reconstructor"): _guarded_reconstructor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("pathlib", "PosixPath"): _path_as_str,
    ("pathlib", "WindowsPath"): _path_as_str,
    ("pathlib", "PurePosixPath"): _path_as_str,
    ("pathlib", "PureWindowsPath"): _path_as_str,
    ("numpy", "dtype"): _numpy_dtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
}
_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


class AllowListUnpickler(pickle.Unpickler):
    """Unpickler that resolves globals only through the allow-list above (see module docstring)."""

    def find_class(self, module, name):
        module = _PY2_MODULES.get(module, module)
        fn = _ALLOWED.get((module, name))
        if fn is not None:
            return fn
        if module == "torch" and name in _TORCH_DTYPES:
            return getattr(torch, name)
        if module == "torch" and name.endswith("Storage"):
            from torch.serialization import StorageType

            try:
                return StorageType(name)
            except KeyError:
                pass
        foreign = module == "ultralytics" or module.startswith(("ultralytics.", "torch.nn.modules."))
        if foreign and name.isidentifier() and not name.startswith("_"):
            return _placeholder(module, name)
        raise _Refused(f"{module}.{name}")


def _make_pickle_module() -> types.ModuleType:
    mod = types.ModuleType("yoloseg_allow_list_pickle")
    mod.Unpickler = AllowListUnpickler
    mod.UnpicklingError = pickle.UnpicklingError
    mod.load = lambda f, **kw: AllowListUnpickler(f, **kw).load()
    mod.loads = lambda b, **kw: AllowListUnpickler(io.BytesIO(b), **kw).load()
    return mod


def safe_torch_load(path: str | Path, map_location="cpu"):
    """``torch.load`` through the allow-listed unpickler. Refused globals raise UnsafeCheckpointError."""
    try:
        return torch.load(str(path), map_location=map_location, pickle_module=_make_pickle_module(), weights_only=False)
    except _Refused as e:
        raise UnsafeCheckpointError(f"{path}: refuses to load global '{e.what}'") from None


# ----------------------------------------------------------------------------------------------------------
# Ultralytics checkpoints
# ----------------------------------------------------------------------------------------------------------
def _gather_state(obj, prefix: str, out: dict, seen: set | None = None) -> None:
    seen = set() if seen is None else seen  # ancestors on the current path (shared submodules are fine)
    if id(obj) in seen:  # a pickle can make cycles; module trees have none
        raise ValueError(f"pickled module tree has a cycle at {prefix or '<root>'}")
    seen.add(id(obj))
    d = obj.__dict__
    for k, v in (d.get("_parameters") or {}).items():
        if v is not None:
            out[prefix + k] = v
    skip = d.get("_non_persistent_buffers_set") or set()
    for k, v in (d.get("_buffers") or {}).items():
        if v is not None and k not in skip:
            out[prefix + k] = v
    for k, m in (d.get("_modules") or {}).items():
        if isinstance(m, PickledObject):
            _gather_state(m, f"{prefix}{k}.", out, seen)
    seen.discard(id(obj))


def _plain(value, depth: int = 0):
    """Placeholders -> dicts of their attributes; containers recursively; other values unchanged."""
    if depth > 20:
        return None
    if isinstance(value, PickledObject):
        return {k: _plain(v, depth + 1) for k, v in value.__dict__.items() if not k.startswith("_")}
    if isinstance(value, dict):
        return {k: _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [_plain(v, depth + 1) for v in value]
        return items if isinstance(value, list) else tuple(items)
    return value


def _layer_types(root: PickledObject) -> list[str]:
    seq = root.__dict__.get("_modules", {}).get("model")
    mods = seq.__dict__.get("_modules", {}) if isinstance(seq, PickledObject) else {}
    return [m.class_name for m in mods.values() if isinstance(m, PickledObject)]


def _infer_scale(state: dict) -> str | None:
    """Scale letter from the first conv's width (16/32/64/64/96) and C3k inner blocks (m/l/x)."""
    w = state.get("model.0.conv.weight")
    if w is None:
        return None
    c3k = any(k.startswith("model.2.m.0.cv3.") for k in state)
    deep = any(k.startswith("model.2.m.1.") for k in state)
    table = {
        (16, False, False): "n",
        (32, False, False): "s",
        (64, True, False): "m",
        (64, True, True): "l",
        (96, True, True): "x",
    }
    return table.get((int(w.shape[0]), c3k, deep))


def _load_ultralytics(path: Path, ckpt: dict, device) -> tuple:
    from yoloseg.nn.model import SegmentationModel

    root = ckpt.get("ema") if isinstance(ckpt.get("ema"), PickledObject) else ckpt.get("model")
    if not isinstance(root, PickledObject):
        raise ValueError(f"{path}: checkpoint has no pickled model under 'ema' or 'model'")
    attrs = root.__dict__
    state: dict = {}
    _gather_state(root, "", state)
    types_ = _layer_types(root)
    from yoloseg.nn.builder import load_model_config

    ours = [spec["type"] for spec in load_model_config("yolo11n-seg.yaml")["layers"]]
    if types_ != ours:
        raise ValueError(f"{path}: not a YOLO11-seg model (layers {types_}); supported: {ours}")
    y = attrs.get("yaml") if isinstance(attrs.get("yaml"), dict) else {}
    scale = y.get("scale") or _infer_scale(state)
    if scale not in ("n", "s", "m", "l", "x"):
        raise ValueError(f"{path}: cannot tell the YOLO11-seg scale (yaml scale={y.get('scale')!r})")
    nc = int(attrs.get("nc") or y.get("nc") or 80)
    model = SegmentationModel(f"yolo11{scale}-seg.yaml", nc=nc, ch=int(y.get("channels", 3)))
    if "model.0.bn.weight" not in state and "model.0.conv.bias" in state:
        model.fuse()  # the checkpoint holds a fused model
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{path}: weights do not match YOLO11{scale}-seg with nc={nc}: {e}") from None
    names = attrs.get("names")
    if isinstance(names, (list, tuple)):
        names = dict(enumerate(names))
    model.names = {int(k): str(v) for k, v in (names or {i: f"class{i}" for i in range(nc)}).items()}
    model.nc = nc
    if isinstance(attrs.get("stride"), torch.Tensor):
        model.stride = attrs["stride"].float()
    model.yaml["source"] = {"format": "ultralytics", "yaml_file": y.get("yaml_file"), "version": ckpt.get("version")}
    train_args = ckpt.get("train_args") or _plain(attrs.get("args")) or {}
    meta = {
        "format": "ultralytics",
        "version": ckpt.get("version"),
        "date": ckpt.get("date"),
        "names": dict(model.names),
        "nc": nc,
        "stride": model.stride.tolist(),
        "task": attrs.get("task", "segment"),
        "scale": scale,
        "train_args": _plain(train_args),
        "epoch": ckpt.get("epoch", -1),
        "best_fitness": ckpt.get("best_fitness"),
        "train_metrics": _plain(ckpt.get("train_metrics") or {}),
    }
    return model.float().eval().to(device), meta


# ----------------------------------------------------------------------------------------------------------
# Our format
# ----------------------------------------------------------------------------------------------------------
_PLAIN_SCALARS = (str, int, float, bool, type(None), torch.Tensor, torch.dtype)


def _check_plain(value, where: str):
    """Values must survive ``torch.load(weights_only=True)``; convert Paths/numpy scalars, refuse the rest."""
    if isinstance(value, Path):
        return str(value)
    if type(value).__module__ == "numpy" and hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()  # numpy scalar -> Python number (np.float64 is a float subclass: check first)
    if isinstance(value, bool) or value is None or type(value) in _PLAIN_SCALARS:
        return value
    if isinstance(value, (torch.Tensor, torch.dtype)):
        return value
    for base in (str, int, float):  # subclasses (enums, ...) -> the plain type
        if isinstance(value, base):
            return base(value)
    if isinstance(value, dict):
        return {k: _check_plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [_check_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    raise ValueError(f"checkpoint value {where} has unsupported type {type(value).__name__} (use plain values)")


def checkpoint_dict(model, **extra) -> dict:
    """The plain dict we save for ``model`` plus ``extra`` keys (train_args, epoch, best_fitness, optimizer,
    ema, updates, ...). Floating tensors of ``model`` are saved as they are (``half=True`` stores fp16)."""
    half = bool(extra.pop("half", False))
    state = {}
    for k, v in model.state_dict().items():
        v = v.detach()
        state[k] = (v.half() if half and v.is_floating_point() else v).cpu().clone()
    stride = getattr(model, "stride", None)
    ckpt = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "task": getattr(model, "task", "segment"),
        "model_cfg": dict(getattr(model, "yaml", {})),
        "fused": bool(getattr(model, "is_fused", lambda: False)()),
        "state_dict": state,
        "names": {int(k): str(v) for k, v in getattr(model, "names", {}).items()},
        "nc": int(getattr(model, "nc", 0)),
        "stride": [float(s) for s in stride.tolist()] if isinstance(stride, torch.Tensor) else None,
        "train_args": {},
        "epoch": -1,
        "best_fitness": None,
    }
    ckpt.update(extra)
    return _check_plain(ckpt, "ckpt")


def save_checkpoint(path: str | Path, model, **extra) -> Path:
    """Atomically write ``model`` (+ ``extra`` plain values) in our format; loadable with weights_only=True."""
    from yoloseg import __version__

    extra.setdefault("version", __version__)
    return atomic_torch_save(checkpoint_dict(model, **extra), path)


def _load_ours(path: Path, ckpt: dict, device) -> tuple:
    from yoloseg.nn.model import SegmentationModel

    cfg = ckpt.get("model_cfg")
    if not isinstance(cfg, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise ValueError(f"{path}: yoloseg checkpoint lacks 'model_cfg' or 'state_dict'")
    cfg = dict(cfg)
    model = SegmentationModel(cfg, nc=ckpt.get("nc") or cfg.get("nc"), ch=int(cfg.get("channels", 3)))
    if ckpt.get("fused"):
        model.fuse()
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in ckpt["state_dict"].items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{path}: state_dict does not match its model_cfg: {e}") from None
    if ckpt.get("names"):
        model.names = {int(k): str(v) for k, v in ckpt["names"].items()}
    if ckpt.get("stride"):
        model.stride = torch.tensor(ckpt["stride"], dtype=torch.float32)
    meta = {k: v for k, v in ckpt.items() if k not in ("state_dict", "model_cfg")}
    meta["names"], meta["nc"], meta["stride"] = dict(model.names), model.nc, model.stride.tolist()
    meta.setdefault("task", "segment")
    return model.float().eval().to(device), meta


def load_checkpoint(path: str | Path, device="cpu") -> tuple:
    """Load a yoloseg or Ultralytics YOLO11-seg checkpoint -> (model float32 in eval mode, meta dict).

    meta holds names, nc, stride, task, train_args, epoch, best_fitness (and more when present).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} not found")
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception:  # foreign classes inside: go through the allow-listed unpickler
        ckpt = None
    if isinstance(ckpt, dict) and ckpt.get("format") == FORMAT_NAME:
        return _load_ours(path, ckpt, device)
    if ckpt is None:
        try:
            ckpt = safe_torch_load(path, map_location="cpu")
        except UnsafeCheckpointError:
            raise
        except (Exception, RecursionError) as e:  # truncated, bit-flipped, not a torch file, odd pickle
            raise ValueError(f"{path}: not a readable checkpoint ({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path}: not a model checkpoint (top level is {type(ckpt).__name__}, expected dict)")
    return _load_ultralytics(path, ckpt, device)
