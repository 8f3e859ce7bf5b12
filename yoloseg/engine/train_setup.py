"""Set-up pieces of the training engine: run folder, data, model, loss, loaders, validation, checkpoints.

Kept apart from yoloseg/engine/trainer.py so the loop itself reads top to bottom. Every function takes the
Trainer as its first argument and reads/writes its attributes.
"""

from __future__ import annotations

import csv
import io
import math
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import torch
import yaml

from yoloseg.utils.torch_utils import unwrap_model

# Settings a resumed run may change (they do not alter what is computed); everything else comes from last.pt.
RESUME_OVERRIDABLE = ("device", "workers", "verbose", "plots")
TRAINING_ONLY_KEYS = ("train_model", "optimizer", "scaler", "pending_grads", "rng", "last_opt_step")


# ---------------------------------------------------------------------- task, run folder, args
def resolve_task(task):
    if task is None or isinstance(task, str):
        from yoloseg.tasks import get_task

        return get_task(task or "segment")
    return task


def cpu_threads_request() -> int | None:
    """Threads for CPU training: OMP_NUM_THREADS when the user set it, else all cores (None)."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    return int(env) if env.isdigit() and int(env) > 0 else None


def make_save_dir(tr) -> Path:
    from yoloseg.utils.files import increment_path

    a = tr.args
    project = Path(a.project) if getattr(a, "project", None) else Path("runs") / tr.task.name
    name = getattr(a, "name", None) or "train"
    save_dir = Path(increment_path(project / name, exist_ok=bool(getattr(a, "exist_ok", False))))
    a.save_dir = str(save_dir)
    return save_dir


def _plain(v):
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return str(v)


def args_dict(args) -> dict:
    return {k: _plain(v) for k, v in vars(args).items()}


def write_args_yaml(path: Path, args) -> None:
    from yoloseg.utils.files import atomic_write_bytes

    atomic_write_bytes(path, yaml.safe_dump(args_dict(args), sort_keys=False).encode())


# ---------------------------------------------------------------------- resume
def find_last_checkpoint(search_dir: Path = Path("runs")) -> Path | None:
    found = sorted(search_dir.glob("**/weights/last.pt"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def load_resume(tr) -> dict:
    """Locate last.pt, restore the run's arguments from it and point the trainer at its run folder."""
    a = tr.args
    if isinstance(a.resume, str) and a.resume.lower() not in ("true", "1"):
        path = Path(a.resume)
    elif getattr(a, "model", None) and str(a.model).endswith(".pt"):
        path = Path(a.model)
    else:
        project = Path(a.project) if getattr(a, "project", None) else Path("runs")
        path = find_last_checkpoint(project)
        if path is None:
            raise FileNotFoundError(f"resume=True: no weights/last.pt found under {project}; pass resume=<path>")
    if not path.is_file():
        raise FileNotFoundError(f"resume: checkpoint {path} not found")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or "train_model" not in ckpt or "train_args" not in ckpt:
        raise ValueError(f"resume: {path} holds no training state (only last.pt of a yoloseg run can be resumed)")
    saved = dict(ckpt["train_args"])
    if int(ckpt["epoch"]) + 1 >= int(saved["epochs"]):
        raise ValueError(f"resume: {path} already finished all {saved['epochs']} epochs; nothing to resume "
                         f"(start a new run with model={path} to fine-tune)")
    from yoloseg.cfg import load_defaults

    defaults = load_defaults()
    for k in RESUME_OVERRIDABLE:  # only settings given explicitly (different from the global default)
        if hasattr(a, k) and getattr(a, k) != defaults.get(k):
            saved[k] = getattr(a, k)
    saved["resume"] = str(path)
    tr.args = SimpleNamespace(**{**vars(a), **saved})
    tr.save_dir = path.resolve().parent.parent
    return ckpt


# ---------------------------------------------------------------------- data
def load_data(tr) -> dict:
    from yoloseg.cfg import load_defaults
    from yoloseg.data import check_data_yaml

    a = tr.args
    data = check_data_yaml(getattr(a, "data", None) or "synthetic-shapes")
    suggested = data.get("train_defaults") or {}
    if suggested and tr.resume_ckpt is None:
        defaults = load_defaults()
        applied = {}
        for k, v in suggested.items():
            if hasattr(a, k) and getattr(a, k) == defaults.get(k):
                setattr(a, k, v)
                applied[k] = v
        if applied:
            tr.log(f"data set defaults applied (override any of them explicitly): {applied}")
    # the model's classes; the data set itself keeps its names and merges labels when single_cls is set
    tr.names = {0: "item"} if getattr(a, "single_cls", False) else dict(data["names"])
    return data


def check_imgsz(imgsz, stride: int) -> int:
    """Square train size: the largest given side rounded up to a multiple of the model's max stride."""
    size = max(imgsz) if isinstance(imgsz, (list, tuple)) else int(imgsz)
    out = max(int(math.ceil(size / stride) * stride), stride)
    return out


def build_loader(tr, split: str):
    """Loader for `split`: train shuffles (seeded per epoch, or tr.make_sampler's sampler) and augments;
    val keeps file order in rectangular batches of twice the train batch."""
    from yoloseg.data import build_dataloader, build_dataset

    a = tr.args
    train = split == "train"
    key = "train" if train else (getattr(a, "split", None) or "val")
    if not tr.data.get(key):
        raise ValueError(f"data: the data set has no '{key}' split")
    bs = tr.batch_size if train else tr.batch_size * 2
    rect = train and bool(getattr(a, "rect", False))
    if rect:
        tr.log("rect=True: rectangular training batches (images grouped by aspect ratio), no mosaic, no shuffling")
    cfg = SimpleNamespace(**{**vars(a), "imgsz": tr.imgsz, "batch": bs})
    dataset = build_dataset(tr.data, key, cfg, augment=train, batch=bs, stride=tr.stride, rect=rect if train else None)
    sampler = tr.make_sampler(dataset, shuffle=not rect) if train else None
    return build_dataloader(dataset, bs, workers=int(getattr(a, "workers", 0) or 0), shuffle=train and not rect,
                            seed=int(getattr(a, "seed", 0) or 0), sampler=sampler,
                            pin_memory=tr.device.type == "cuda")


def close_mosaic(loader) -> None:
    if getattr(loader, "_mosaic_closed", False):
        return
    loader.close_mosaic()
    loader._mosaic_closed = True


# ---------------------------------------------------------------------- model, loss
def _transfer(dst: torch.nn.Module, src_sd: dict) -> tuple[int, int]:
    dst_sd = dst.state_dict()
    matched = {k: v for k, v in src_sd.items() if k in dst_sd and v.shape == dst_sd[k].shape}
    dst.load_state_dict(matched, strict=False)
    return len(matched), len(dst_sd)


def build_train_model(tr) -> torch.nn.Module:
    """Model for training: last.pt (resume), a checkpoint (fine-tune) or a YAML (scratch, or with
    `pretrained=<ckpt>` whose matching-shape weights are transferred)."""
    from yoloseg.checkpoints import load_checkpoint

    build_model = tr.task.resolve("build_model")
    a, names = tr.args, tr.names
    nc = len(names)
    model_arg = str(getattr(a, "model", None) or "yolo11n-seg.yaml")
    if tr.resume_ckpt is not None:
        model, _ = load_checkpoint(a.resume)
        model = build_model(model.yaml, nc=nc) if getattr(model, "nc", nc) != nc else model
    elif model_arg.endswith(".pt"):
        src, meta = load_checkpoint(model_arg)
        if getattr(src, "nc", None) == nc:
            model = src
            tr.log(f"Fine-tuning from {model_arg} (all weights)")
        else:
            model = build_model(src.yaml, nc=nc)
            k, n = _transfer(model, src.state_dict())
            tr.log(f"Transferred {k}/{n} items from {model_arg} (nc {getattr(src, 'nc', '?')} -> {nc})")
    else:
        model = build_model(model_arg, nc=nc)
        pre = getattr(a, "pretrained", None)
        if isinstance(pre, str) and pre.lower() not in ("true", "false", ""):
            src, _ = load_checkpoint(pre)
            k, n = _transfer(model, src.state_dict())
            tr.log(f"Transferred {k}/{n} items from pretrained weights {pre}")
    model.names = dict(names)
    model.float().train()
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def freeze_layers(tr) -> None:
    """freeze=N freezes layers 0..N-1, freeze=[i, j] the listed ones; the fixed DFL projection never trains."""
    f = getattr(tr.args, "freeze", None)
    idx = list(range(f)) if isinstance(f, int) else list(f or [])
    prefixes = tuple(f"model.{i}." for i in idx)
    frozen = 0
    for name, p in tr.model.named_parameters():
        if name.startswith(prefixes) or ".dfl" in name:
            p.requires_grad_(False)
            frozen += 1
    if not any(p.requires_grad for p in tr.model.parameters()):
        raise ValueError(f"freeze={f} leaves no trainable parameters")
    if idx:
        tr.log(f"Froze {frozen} parameter tensors (layers {idx})")


def build_loss(tr):
    keys = ("box", "cls", "dfl", "overlap_mask", *(s.key for s in getattr(tr.task, "settings", ())))
    hyp = {k: getattr(tr.args, k) for k in keys if hasattr(tr.args, k)}
    return tr.task.resolve("loss")(unwrap_model(tr.model), hyp)


# ---------------------------------------------------------------------- validation
def build_validator(tr):
    """The task's metrics validator, or None (loss-only validation) while it is unavailable."""
    try:
        cls = tr.task.resolve("validator")
    except (ImportError, NotImplementedError) as e:
        tr.log(f"metrics validator not available ({e}): validating with the loss only")
        return None
    vargs = SimpleNamespace(**{**vars(tr.args), "mode": "val", "imgsz": tr.imgsz, "batch": tr.batch_size * 2,
                               "conf": tr.args.conf if getattr(tr.args, "conf", None) is not None else 0.001,
                               "plots": False, "save_json": False})
    import inspect

    extra = {"loss_fn": tr.loss_fn} if "loss_fn" in inspect.signature(cls).parameters else {}
    return cls(vargs, model=None, task=tr.task, dataloader=tr.val_loader, **extra)


class _HeadTrainOutputs:
    """Model in eval mode (BatchNorm uses running stats) but the head returns its training outputs."""

    def __init__(self, model):
        self.model, self.head = model, unwrap_model(model).model[-1]

    def __enter__(self):
        self.was = self.model.training
        self.model.eval()
        self.head.training = True
        return self.model

    def __exit__(self, *exc):
        self.head.training = False
        self.model.train(self.was)


@torch.no_grad()
def val_losses(tr, model) -> list[float]:
    """Mean loss items (box, seg, cls, dfl) of `model` over the val loader."""
    total, n = None, 0
    with _HeadTrainOutputs(model):
        for batch in tr.val_loader:
            if batch is None or len(batch.get("img", ())) == 0:
                continue
            batch = tr.preprocess_batch(batch)
            _, items = tr.loss_fn(model(batch["img"]), batch)
            items = items.detach().float().cpu()
            total = items if total is None else total + items
            n += 1
    return [float("nan")] * 4 if total is None else (total / n).tolist()


def run_validation(tr, model):
    """-> (metrics dict keyed like results.csv, fitness, val losses or None)."""
    if tr.validator is None:
        # Loss-only fallback (no metrics validator yet): fitness = -(sum of val loss items).
        vl = val_losses(tr, model)
        fit = -sum(vl) if all(math.isfinite(v) for v in vl) else -float("inf")
        return {}, fit, vl
    # SWITCH POINT: metrics validator.
    m = tr.validator(model=model)
    return metrics_dict(m), float(metric_fitness(m)), getattr(m, "loss", None)


def metrics_dict(m) -> dict:
    """results.csv metric columns: the segment metrics' eight, or a task's own ``keys`` from its
    ``results_dict`` (the metrics object of a plugin task)."""
    keys = getattr(m, "keys", None)
    if getattr(m, "box", None) is None or getattr(m, "seg", None) is None:
        rd = getattr(m, "results_dict", None) or {}
        keys = list(keys) if keys else [k for k in rd if k != "fitness"]
        return {k: float(rd.get(k, float("nan"))) for k in keys}
    return {
        "metrics/precision(B)": float(m.box.mp), "metrics/recall(B)": float(m.box.mr),
        "metrics/mAP50(B)": float(m.box.map50), "metrics/mAP50-95(B)": float(m.box.map),
        "metrics/precision(M)": float(m.seg.mp), "metrics/recall(M)": float(m.seg.mr),
        "metrics/mAP50(M)": float(m.seg.map50), "metrics/mAP50-95(M)": float(m.seg.map),
    }


def metric_fitness(m) -> float:
    """The metrics' own ``fitness`` when they define one (a task decides what "best" means), else the
    segment formula."""
    own = getattr(m, "fitness", None)
    if own is not None and not callable(own):
        return float(own)
    from yoloseg.engine.trainer import fitness_of

    return fitness_of(float(m.box.map50), float(m.box.map), float(m.seg.map50), float(m.seg.map))


def final_metrics(tr):
    """Validate best.pt once more when a metrics validator exists; else return the last epoch's numbers."""
    if not tr.main:
        return None
    if tr.best.is_file():
        strip_training_state(tr.best)  # best.pt is for using the model; last.pt keeps the full state
    if tr.validator is not None and tr.best.is_file():
        from yoloseg.checkpoints import load_checkpoint

        model, _ = load_checkpoint(tr.best, device=tr.device)
        tr.log(f"Validating {tr.best} ...")
        if getattr(tr.args, "plots", True) is False:
            return tr.validator(model=model)
        # the final evaluation (only) draws curves, confusion matrix and val batch pictures into the run folder
        v = tr.validator
        saved = (v.cfg, v.save_dir)
        v.cfg, v.save_dir = SimpleNamespace(**{**vars(v.cfg), "plots": True}), Path(tr.save_dir)
        try:
            return v(model=model)
        finally:
            v.cfg, v.save_dir = saved
    row = tr.csv_rows[-1] if tr.csv_rows else {}
    return SimpleNamespace(results_dict=row, fitness=tr.best_fitness, box=None, seg=None, save_dir=tr.save_dir)


# ---------------------------------------------------------------------- files
def write_results_csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    keys = list(rows[0].keys())
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(keys)
    for r in rows:
        w.writerow([_cell(r.get(k)) for k in keys])
    from yoloseg.utils.files import atomic_write_bytes

    atomic_write_bytes(path, buf.getvalue().encode())


def _cell(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return v


def copy_atomic(src: Path, dst: Path) -> None:
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def strip_training_state(path: Path) -> None:
    """Drop what only resuming needs (optimizer, raw weights, RNG, ...) from a finished run's checkpoint."""
    from yoloseg.utils.files import atomic_torch_save

    ck = torch.load(path, map_location="cpu", weights_only=True)
    for k in TRAINING_ONLY_KEYS:
        ck.pop(k, None)
    atomic_torch_save(ck, path)


def save_ckpt(tr, path: Path, state: dict) -> None:
    """EMA weights as the checkpoint's model, plus run metadata and the full training state."""
    from yoloseg.checkpoints import save_checkpoint

    ema = tr.ema.ema
    save_checkpoint(path, ema, train_args=args_dict(tr.args), task=tr.task.name, names=dict(tr.names),
                    data=str(tr.data.get("yaml_file", "")), **state)
