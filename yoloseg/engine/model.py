"""The YOLO facade: one object that loads a model and dispatches train/val/predict/export to its task.

    from yoloseg import YOLO

    model = YOLO("yolo11n-seg.yaml")          # packaged config (scale from the letter after yolo11), or a path
    model.train(data="synthetic-shapes", epochs=10)
    results = YOLO("best.pt")("image.jpg")    # yoloseg or Ultralytics checkpoints
    YOLO("best.pt").export(format="onnx")
    YOLO("best.onnx").predict("images/")      # exported files: predict and val only

Every call merges, lowest first: packaged defaults, the mode's defaults, what the model remembers from its
training run (data, imgsz, single_cls, task) and the keyword arguments; `yoloseg.cfg.get_cfg` validates them
once. The engine classes come from the task (`yoloseg.tasks`), never from a task-name switch here.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["YOLO", "EXPORTED_SUFFIXES"]

EXPORTED_SUFFIXES = (".onnx", ".torchscript", ".xml")  # .xml: OpenVINO (the IR file or its folder)
_YAML_SUFFIXES = (".yaml", ".yml")
# Training arguments a checkpoint passes on to later calls (the rest describe the old run, not the model).
_REMEMBERED = ("data", "imgsz", "single_cls", "task")


class YOLO:
    """A model plus the task that knows how to train, validate, predict with and export it.

    Args:
        model: packaged model YAML name (`"yolo11s-seg.yaml"`), a model YAML path, a checkpoint (`.pt`,
            yoloseg or Ultralytics), an exported `.onnx`/`.torchscript` file, or a `torch.nn.Module`.
        task: task name (e.g. "segment"); by default taken from the checkpoint or the model config name.
    """

    def __init__(self, model="yolo11n-seg.yaml", task: str | None = None):
        from yoloseg.tasks import get_task

        self.model = None  # torch.nn.Module, or None for exported files
        self.ckpt_path: str | None = None
        self.meta: dict = {}
        self.overrides: dict = {}  # remembered arguments (see _REMEMBERED)
        self.is_exported = False
        self.exported_path: str | None = None
        self.metrics = None
        self.trainer = None
        self._backend = None
        self._predictor = None
        self._predictor_key = None
        self._task_given = task is not None

        if hasattr(model, "state_dict") and callable(getattr(model, "forward", None)):
            self.model, self.model_name = model, getattr(model, "yaml", {}).get("yaml_file", "model")
            self._task = get_task(task or getattr(model, "task", None) or "segment")
            return
        if not isinstance(model, (str, Path)):
            raise ValueError(f"model must be a YAML name, a path or a torch.nn.Module, got {type(model).__name__}")
        name = str(model).strip()
        if not name:
            raise ValueError("model must not be empty")
        self.model_name = name
        suffix = Path(name).suffix.lower()
        if Path(name).is_dir() or suffix == ".xml":
            suffix = ".xml"  # an OpenVINO export: <name>_openvino_model/ or its .xml
        if suffix in _YAML_SUFFIXES:
            self._task = get_task(task or self._task_for_yaml(name))
            self.model = self._task.build_model(name)
        elif suffix == ".pt":
            self._load_checkpoint(name, task)
        elif suffix in EXPORTED_SUFFIXES:
            if not Path(name).exists():
                raise FileNotFoundError(f"model file {name!r} not found")
            self.is_exported, self.exported_path = True, name
            from yoloseg.engine.backends import exported_defaults

            self.overrides = exported_defaults(name)  # the file's task, input size (and built-in conf)
            self._task = get_task(task or self.overrides.get("task") or "segment")
            self.overrides["task"] = self._task.name
        else:
            raise ValueError(f"model={name!r}: expected a .yaml config, a .pt checkpoint, an exported "
                             f"{'/'.join(EXPORTED_SUFFIXES)} file or an OpenVINO export folder")

    # ------------------------------------------------------------------------------------ loading
    @staticmethod
    def _task_for_yaml(name: str) -> str:
        from yoloseg.tasks import task_for_model

        owner = task_for_model(name)
        if owner is not None:
            return owner.name
        path = Path(name)
        if path.is_file():  # a user config may say which task it is for
            import yaml

            with open(path, encoding="utf-8") as f:
                d = yaml.safe_load(f)
            if isinstance(d, dict) and isinstance(d.get("task"), str):
                return d["task"]
        return "segment"

    def _load_checkpoint(self, path: str, task: str | None = None) -> None:
        from yoloseg.checkpoints import load_checkpoint
        from yoloseg.tasks import get_task

        if not Path(path).is_file():
            hint = ""
            if Path(path).parent == Path(".") and re.fullmatch(r"yolo11[nsmlx]-seg\.pt", Path(path).name):
                # an official checkpoint name: yoloseg never downloads weights
                hint = (f"; yoloseg does not download weights: put the official {Path(path).name} here (or give its"
                        f" path), or start from {Path(path).stem}.yaml to train from scratch")
            raise FileNotFoundError(f"model file {path!r} not found{hint}")
        if task is not None:
            get_task(task)  # registers the task's layer types before the checkpoint's model is rebuilt
        try:
            model, meta = load_checkpoint(path)
        except ValueError as e:
            if "unknown layer type" not in str(e):
                raise
            from yoloseg.tasks.registry import default_registry

            default_registry().load_all()  # a plugin task may provide the missing layer type
            model, meta = load_checkpoint(path)
        self.model, self.meta, self.ckpt_path, self.model_name = model, dict(meta), str(path), str(path)
        self._task = get_task(task or meta.get("task") or "segment")
        args = meta.get("train_args") or {}
        self.overrides = {k: args[k] for k in _REMEMBERED if args.get(k) is not None} if isinstance(args, dict) else {}
        self.overrides["task"] = self._task.name
        self._predictor = None

    # ------------------------------------------------------------------------------------ properties
    @property
    def task(self) -> str:
        """Name of the model's task, e.g. "segment"."""
        return self._task.name

    @property
    def task_spec(self):
        """The `yoloseg.tasks.Task` object this model dispatches to."""
        return self._task

    @property
    def names(self) -> dict:
        """Class id -> name."""
        src = self._exported_backend() if self.is_exported else self.model
        names = getattr(src, "names", None) or {}
        return dict(enumerate(names)) if isinstance(names, (list, tuple)) else dict(names)

    def __repr__(self) -> str:
        kind = "exported" if self.is_exported else type(self.model).__name__
        return f"YOLO(model={self.model_name!r}, task={self.task!r}, {kind})"

    def _require_torch(self, what: str) -> None:
        if self.is_exported:
            raise ValueError(f"{what} needs a PyTorch model; {self.exported_path!r} is an exported file "
                             f"(exported models support predict and val)")

    def _exported_backend(self, device=None, dnn: bool = False):
        """The runtime backend of an exported file, provided by the exporter module (imported lazily)."""
        if self._backend is None:
            try:
                from yoloseg.engine.exporter import load_exported
            except ImportError as e:
                raise NotImplementedError(f"running {self.exported_path!r} needs yoloseg.engine.exporter "
                                          f"({e})") from None
            self._backend = load_exported(self.exported_path, device=device, dnn=dnn)
            file_task = getattr(self._backend, "task", None)
            if not self._task_given and isinstance(file_task, str) and file_task != self._task.name:
                from yoloseg.tasks import get_task

                self._task = get_task(file_task)  # the task recorded in the exported file's metadata
        return self._backend

    def _engine_model(self, cfg):
        return self._exported_backend(cfg.device, bool(cfg.dnn)) if self.is_exported else self.model

    # ------------------------------------------------------------------------------------ settings
    def _cfg(self, mode: str, kwargs: dict, **extra):
        from yoloseg.cfg import get_cfg

        args = {**self.overrides, "model": self.exported_path or self.ckpt_path or self.model_name}
        args.update(extra)
        args.update(kwargs)
        args["mode"] = mode
        return get_cfg(args, extra=getattr(self._task, "settings", ()))

    # ------------------------------------------------------------------------------------ utilities
    def info(self, detailed: bool = False, verbose: bool = True, imgsz: int = 640):
        """Print and return (layers, parameters, gradients, GFLOPs at `imgsz`)."""
        self._require_torch("info()")
        return self.model.info(imgsz=imgsz, verbose=verbose)

    def fuse(self):
        """Fold batch norms into convolutions for faster inference; returns self."""
        self._require_torch("fuse()")
        self.model.fuse()
        self._predictor = None
        return self

    # ------------------------------------------------------------------------------------ modes
    def predict(self, source=None, stream: bool = False, **kwargs):
        """Results for every image/frame of `source` (a list, or a generator when `stream=True`)."""
        if isinstance(source, Path):
            source = str(source)
        extra = {"source": source} if isinstance(source, str) else {}
        cfg = self._cfg("predict", kwargs, **extra)
        if source is None:
            source = cfg.source
        if source is None:
            raise ValueError("predict needs a source: an image, folder, glob, video, URL, array or a list of them")
        key = tuple(sorted((k, repr(v)) for k, v in vars(cfg).items() if k not in ("source", "stream")))
        if self._predictor is None or self._predictor_key != key:
            model = self._engine_model(cfg)
            predictor_cls = self._task.resolve("predictor")
            self._predictor = predictor_cls(cfg, model, self._task)
            self._predictor_key = key
        return self._predictor(source, stream=stream)

    def __call__(self, source=None, stream: bool = False, **kwargs):
        return self.predict(source, stream=stream, **kwargs)

    def val(self, **kwargs):
        """Evaluate on a data split (the model's own training data by default); returns the metrics."""
        cfg = self._cfg("val", kwargs)
        model = self._engine_model(cfg)
        validator_cls = self._task.resolve("validator")
        validator = validator_cls(cfg, model=model, task=self._task)
        self.metrics = validator()
        return self.metrics

    def train(self, **kwargs):
        """Train (from the YAML, from this checkpoint, or resume it); afterwards the model is the best weights."""
        self._require_torch("train()")
        extra = {}
        if kwargs.get("resume") in (True, "true", "True") and self.ckpt_path:
            extra["resume"] = self.ckpt_path
            kwargs = {k: v for k, v in kwargs.items() if k != "resume"}
        cfg = self._cfg("train", kwargs, **extra)
        trainer_cls = self._task.resolve("trainer")
        self.trainer = trainer_cls(cfg, self._task)
        self.metrics = self.trainer.train()
        for attr in ("best", "last"):
            path = getattr(self.trainer, attr, None)
            if path is not None and Path(path).is_file() and getattr(self.trainer, "main", True):
                self._load_checkpoint(str(path), self._task.name)
                break
        return self.metrics

    def export(self, format: str | None = None, **kwargs):
        """Write the model as `format` ("onnx", "torchscript" or "openvino"); returns the file's (folder's) path."""
        self._require_torch("export()")
        if format is not None:
            kwargs["format"] = format
        remembered = {"imgsz": self.overrides["imgsz"]} if "imgsz" in self.overrides else {}
        cfg = self._cfg("export", {**remembered, **kwargs})
        exporter_cls = self._task.resolve("exporter")
        return exporter_cls(cfg, self.model)()
