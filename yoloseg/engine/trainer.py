"""Training engine: `Trainer(cfg, task).train()` runs a full training and returns the final metrics.

One epoch = one pass over the train loader (warmup, gradient accumulation to a nominal batch of `nbs`,
AMP on CUDA, gradient clipping at norm 10, EMA update after every optimizer step), then validation of the
EMA weights, one row in results.csv, a fresh results.png, and checkpoints written atomically:
weights/last.pt every epoch, weights/best.pt whenever fitness improves.

Fitness (what "best" means): sum over box and mask of 0.1 * mAP50 + 0.9 * mAP50-95. Without a metrics
validator, validation falls back to the EMA model's loss on the val split and fitness = -(val loss).

Checkpoints are plain dicts (torch.load(weights_only=True) works). last.pt holds everything needed to
continue exactly: training weights, EMA weights and update count, optimizer and AMP-scaler state, the
learning-rate schedule, epoch, best fitness, early-stopping state, pending accumulated gradients and the
RNG states of torch, numpy and python's random. `resume=True` (or `model=.../last.pt resume=True`)
reopens the same run folder and continues from the epoch after the one last.pt finished.

Only the main process (RANK unset, -1 or 0) writes files or prints; the train sampler comes from
`make_sampler`, which a distributed trainer can override.
"""

from __future__ import annotations

import math
import sys
import time
from types import SimpleNamespace

import numpy as np
import torch

from yoloseg.engine import train_setup as ts
from yoloseg.engine.schedule import Schedule, mosaic_closed, optimizer_iterations, scaled_weight_decay
from yoloseg.utils.ema import ModelEMA
from yoloseg.utils.plot_results import plot_results
from yoloseg.utils.torch_utils import (
    build_optimizer,
    get_rank,
    get_rng_state,
    init_seeds,
    select_device,
    set_cpu_threads,
    set_rng_state,
    unwrap_model,
)

LOSS_NAMES = ("box_loss", "seg_loss", "cls_loss", "dfl_loss")
METRIC_KEYS = (
    "metrics/precision(B)", "metrics/recall(B)", "metrics/mAP50(B)", "metrics/mAP50-95(B)",
    "metrics/precision(M)", "metrics/recall(M)", "metrics/mAP50(M)", "metrics/mAP50-95(M)",
)
CLIP_NORM = 10.0


def fitness_of(box_map50, box_map, seg_map50, seg_map) -> float:
    """0.1 * mAP50 + 0.9 * mAP50-95, summed over box and mask."""
    return 0.1 * box_map50 + 0.9 * box_map + 0.1 * seg_map50 + 0.9 * seg_map


class Trainer:
    """Trains a segmentation model as configured by `cfg` (a validated namespace from yoloseg.cfg.get_cfg)."""

    def __init__(self, cfg, task=None):
        self.args = cfg if isinstance(cfg, SimpleNamespace) else SimpleNamespace(**dict(cfg))
        self.task = ts.resolve_task(task)
        self.loss_names = tuple(getattr(self.task, "loss_names", ()) or LOSS_NAMES)
        self.rank = get_rank()
        self.main = self.rank in (-1, 0)
        self.resume_ckpt = None
        self.metrics = None
        self.epoch_times: list[tuple[float, float]] = []  # (train seconds, val seconds) per epoch run here
        self.csv_rows: list[dict] = []

    # ------------------------------------------------------------------ logging
    def log(self, msg: str) -> None:
        if self.main and getattr(self.args, "verbose", True) is not False:
            print(msg, file=sys.stderr, flush=True)

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        a = self.args
        if getattr(a, "resume", False):
            self.resume_ckpt = ts.load_resume(self)  # replaces self.args with the run's own args
            a = self.args
        self.device = select_device(getattr(a, "device", None))
        if self.device.type == "cpu":
            self.threads = set_cpu_threads(ts.cpu_threads_request())
        init_seeds(int(getattr(a, "seed", 0) or 0) + 1 + max(self.rank, 0), bool(getattr(a, "deterministic", False)))
        self.data = ts.load_data(self)
        self.save_dir = ts.make_save_dir(self) if self.resume_ckpt is None else self.save_dir
        self.wdir = self.save_dir / "weights"
        self.last, self.best = self.wdir / "last.pt", self.wdir / "best.pt"
        if self.main:
            self.wdir.mkdir(parents=True, exist_ok=True)
        self.model = ts.build_train_model(self).to(self.device)
        ts.freeze_layers(self)
        self.stride = int(max(float(unwrap_model(self.model).stride.max()), 32))
        self.imgsz = ts.check_imgsz(a.imgsz, self.stride)
        self.amp = bool(getattr(a, "amp", True)) and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.loss_fn = ts.build_loss(self)
        self.batch_size = max(int(a.batch), 1)
        self.train_loader = self.build_loader("train")
        self.val_loader = self.build_loader("val") if self.main else None
        self.epochs = int(a.epochs)
        self.nb = max(len(self.train_loader), 1)
        self.nbs = int(getattr(a, "nbs", 64) or 64)
        weight_decay = scaled_weight_decay(float(a.weight_decay), self.batch_size, self.nbs)
        iterations = optimizer_iterations(len(self.train_loader.dataset), self.batch_size, self.nbs, self.epochs)
        self.optimizer, opt_name, lr0, momentum = build_optimizer(
            self.model, getattr(a, "optimizer", "auto"), float(a.lr0), float(a.momentum), weight_decay,
            iterations, nc=len(self.names))
        if str(getattr(a, "optimizer", "auto")).lower() == "auto":
            self.log(f"optimizer: 'auto' chose {opt_name}(lr={lr0}, momentum={momentum}) for {iterations} "
                     f"iterations; lr0/momentum settings ignored")
            a.optimizer, a.lr0, a.momentum, a.warmup_bias_lr = opt_name, lr0, momentum, 0.0
        for g in self.optimizer.param_groups:
            g["initial_lr"] = g["lr"]
        self.sched = Schedule(
            self.optimizer, epochs=self.epochs, nb=self.nb, batch=self.batch_size, nbs=self.nbs,
            lrf=float(a.lrf), cos_lr=bool(getattr(a, "cos_lr", False)), warmup_epochs=float(a.warmup_epochs),
            warmup_bias_lr=float(a.warmup_bias_lr), warmup_momentum=float(a.warmup_momentum),
            momentum=float(a.momentum))
        self.ema = ModelEMA(self.model)
        self.start_epoch, self.best_fitness, self.best_epoch = 0, None, 0
        self.last_opt_step = -1
        self.validator = ts.build_validator(self) if self.main else None
        if self.resume_ckpt is not None:
            self.restore_training_state(self.resume_ckpt)
            self.resume_ckpt = None
        if self.main:
            ts.write_args_yaml(self.save_dir / "args.yaml", self.args)

    def make_sampler(self, dataset, shuffle: bool):
        """Sampler for the train loader; None means plain shuffling (a distributed trainer overrides this)."""
        return None

    def build_loader(self, split: str):
        return ts.build_loader(self, split)

    # ------------------------------------------------------------------ train loop
    def train(self):
        """Run (or continue) training; returns the final validation metrics."""
        self.setup()
        a = self.args
        close_mosaic = int(getattr(a, "close_mosaic", 0) or 0)
        patience = int(getattr(a, "patience", 100) or 0)
        self.log(f"Training for {self.epochs} epochs (starting at {self.start_epoch + 1}) on {self.device}: "
                 f"{len(self.train_loader.dataset)} train images, batch {self.batch_size}, imgsz {self.imgsz}, "
                 f"accumulate {self.sched.nominal}, results to {self.save_dir}"
                 + (f", {self.threads} CPU thread(s)" if self.device.type == "cpu" else ""))
        if self.start_epoch == 0:
            self.plot_labels()
        t_start = time.time()
        budget = float(a.time) * 3600 if getattr(a, "time", None) else None
        epoch = self.start_epoch
        while epoch < self.epochs:
            self.epoch = epoch
            if mosaic_closed(epoch, self.epochs, close_mosaic):
                ts.close_mosaic(self.train_loader)
            t0 = time.time()
            tloss = self.train_one_epoch(epoch)
            t1 = time.time()
            final = epoch + 1 == self.epochs
            metrics, fitness, val_losses = self.validate(final)
            t2 = time.time()
            self.epoch_times.append((t1 - t0, t2 - t1))
            if budget and not final:  # before saving, so last.pt records the re-planned length
                self.fit_epochs_to_budget(epoch, budget, t2 - t_start)
                final = epoch + 1 == self.epochs
            improved = self.best_fitness is None or fitness >= self.best_fitness
            if improved:
                self.best_fitness, self.best_epoch = fitness, epoch
            if self.main:
                self.record(epoch, tloss, metrics, val_losses, t2 - t_start)
                self.save(epoch, fitness, improved)
            stop = patience > 0 and (epoch - self.best_epoch) >= patience and not final
            if self.main:
                done = epoch + 1 - self.start_epoch
                eta = (time.time() - t_start) / done * (self.epochs - epoch - 1)
                summary = self.metric_summary(metrics, fitness)
                self.log(f"epoch {epoch + 1}/{self.epochs}: train {t1 - t0:.1f}s, val {t2 - t1:.1f}s, "
                         f"{summary}, ETA {eta / 60:.1f} min")
            if stop:
                self.log(f"Early stopping: no fitness improvement in the last {patience} epochs "
                         f"(best epoch {self.best_epoch + 1}).")
                break
            epoch += 1
        ran = len(self.epoch_times)
        self.log(f"{ran} epoch{'s' if ran != 1 else ''} done in {(time.time() - t_start) / 60:.2f} min. "
                 f"Weights: {self.last}, {self.best}")
        return self.final_eval()

    def fit_epochs_to_budget(self, epoch: int, budget: float, elapsed: float) -> None:
        """time=H: re-plan the number of epochs from the mean epoch time so the run ends within H hours
        (the learning-rate schedule is stretched or shrunk to match)."""
        per_epoch = elapsed / (epoch + 1 - self.start_epoch)
        planned = max(epoch + 1, int(self.start_epoch + budget / max(per_epoch, 1e-9)))
        if planned != self.epochs:
            self.epochs = self.args.epochs = planned
            self.sched.set_epochs(planned)

    def train_one_epoch(self, epoch: int) -> np.ndarray:
        model, opt = self.model, self.optimizer
        model.train()
        if hasattr(self.train_loader, "set_epoch"):
            self.train_loader.set_epoch(epoch)
        self.sched.epoch_start(epoch)
        tloss, seen = None, 0
        pbar = self.progress(epoch)
        for i, batch in enumerate(self.train_loader):
            ni = i + self.nb * epoch
            self.sched.iteration(ni, epoch)
            if batch is None or len(batch.get("img", ())) == 0:
                if pbar is not None:
                    pbar.update(1)
                continue  # every sample of this batch was unreadable
            if i < 3 and epoch == self.start_epoch:
                self.plot_train_batch(batch, i)
            batch = self.rescale_batch(self.preprocess_batch(batch), epoch, i)
            with torch.autocast(self.device.type, enabled=self.amp):
                preds = model(batch["img"])
                loss, items = self.loss_fn(preds, batch)
            if not torch.isfinite(loss):
                self.log(f"WARNING: non-finite loss at epoch {epoch + 1} batch {i}; batch skipped")
                opt.zero_grad(set_to_none=True)
                self.last_opt_step = ni
                if pbar is not None:
                    pbar.update(1)
                continue
            self.scaler.scale(loss).backward()
            if self.sched.due(ni, self.last_opt_step):
                self.optimizer_step()
                self.last_opt_step = ni
            items = items.detach().float().cpu()
            tloss = items if tloss is None else (tloss * seen + items) / (seen + 1)
            seen += 1
            if pbar is not None:
                pbar.set_description(self.progress_text(epoch, tloss, batch), refresh=False)
                pbar.update(1)
        if pbar is not None:
            pbar.close()
        return np.full(len(self.loss_names), np.nan) if tloss is None else tloss.numpy()

    def optimizer_step(self) -> None:
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm=CLIP_NORM)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.update(self.model)

    def preprocess_batch(self, batch: dict) -> dict:
        dev = self.device
        nb = dev.type != "cpu"
        img = batch["img"].to(dev, non_blocking=nb)
        batch["img"] = img.float().div_(255) if img.dtype == torch.uint8 else img.float()
        for k in ("batch_idx", "cls", "bboxes", "masks"):
            if k in batch and torch.is_tensor(batch[k]):
                batch[k] = batch[k].to(dev, non_blocking=nb)
        return batch

    def plot_labels(self) -> None:
        """labels.jpg: statistics of the train split's labels (instances per class, box sizes, aspect ratios,
        centres), the picture `yoloseg check plots=True` draws."""
        if not self.main or getattr(self.args, "plots", True) is False:
            return
        try:
            from yoloseg.utils.plot_labels import plot_label_stats

            labels = getattr(self.train_loader.dataset, "labels", [])
            plot_label_stats(self.save_dir / "labels.jpg", [int(c) for lb in labels for c in lb["cls"]],
                             [p for lb in labels for p in lb["segments"]], dict(self.data.get("names", {})),
                             [lb["shape"] for lb in labels for _ in lb["segments"]])
        except Exception as e:  # a picture must never stop training
            self.log(f"WARNING: labels.jpg not drawn: {e}")

    def plot_train_batch(self, batch: dict, i: int) -> None:
        """train_batch{i}.jpg: the first batches as the model sees them (augmented), with their labels."""
        if not self.main or getattr(self.args, "plots", True) is False:
            return
        try:
            from yoloseg.utils.plot_val import plot_train_batch

            plot_train_batch(self.save_dir, i, batch, dict(self.data.get("names", {})))
        except Exception as e:  # a picture must never stop training
            self.log(f"WARNING: train_batch{i}.jpg not drawn: {e}")

    def rescale_batch(self, batch: dict, epoch: int, i: int) -> dict:
        """multi_scale: resize the batch's images so the long side is a random multiple of the stride in
        [imgsz * (1 - multi_scale), imgsz * (1 + multi_scale)], drawn from (seed, epoch, batch index) so a
        resumed run sees the same sizes. Boxes are normalized and the loss resamples the prototypes to the
        masks, so only the images change."""
        ms = float(getattr(self.args, "multi_scale", 0.0) or 0.0)
        if ms <= 0:
            return batch
        s = self.stride
        lo, hi = max(s, int(self.imgsz * (1 - ms))), int(self.imgsz * (1 + ms))
        seed = int(getattr(self.args, "seed", 0) or 0)
        size = max(int(np.random.default_rng([seed, epoch, i, 0x5CA1E]).integers(lo, hi + 1)) // s * s, s)
        img = batch["img"]
        h, w = img.shape[-2:]
        f = size / max(h, w)
        new = (max(round(h * f / s) * s, s), max(round(w * f / s) * s, s))
        if new != (h, w):
            batch["img"] = torch.nn.functional.interpolate(img, size=new, mode="bilinear", align_corners=False)
        return batch

    # ------------------------------------------------------------------ progress
    def progress(self, epoch: int):
        if not self.main or getattr(self.args, "verbose", True) is False:
            return None
        from tqdm import tqdm

        names = self.loss_names
        self.log(("%11s" * (4 + len(names))) % ("Epoch", "GPU_mem", *names, "Instances", "Size"))
        return tqdm(total=self.nb, file=sys.stderr, desc=("%11s" * 2) % (f"{epoch + 1}/{self.epochs}", ""),
                    bar_format="{desc}{percentage:3.0f}%|{bar:10}| "
                    "{n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}]", mininterval=0.5)

    def progress_text(self, epoch, tloss, batch) -> str:
        mem = f"{torch.cuda.memory_reserved() / 1e9:.3g}G" if self.device.type == "cuda" else "0G"
        return ("%11s" * 2 + "%11.4g" * len(tloss) + "%11d" + "%11d") % (
            f"{epoch + 1}/{self.epochs}", mem, *tloss.tolist(), int(batch["cls"].shape[0]), batch["img"].shape[-1])

    def metric_summary(self, metrics: dict, fitness: float) -> str:
        if metrics.get("metrics/mAP50(M)") is not None and not math.isnan(metrics.get("metrics/mAP50(M)", math.nan)):
            return (f"box mAP50 {metrics['metrics/mAP50(B)']:.4f} mAP50-95 {metrics['metrics/mAP50-95(B)']:.4f}, "
                    f"mask mAP50 {metrics['metrics/mAP50(M)']:.4f} mAP50-95 {metrics['metrics/mAP50-95(M)']:.4f}")
        if metrics:  # a task's own metrics
            return ", ".join(f"{k.removeprefix('metrics/')} {v:.4f}" for k, v in metrics.items()) + f", fitness {fitness:.4f}"
        return f"val loss {-fitness:.4f}"

    # ------------------------------------------------------------------ validation
    def validate(self, final: bool = False):
        """Validate the EMA model -> (metrics dict, fitness, val losses or None)."""
        if not self.main:
            return {}, 0.0, None
        if getattr(self.args, "val", True) is False and not final:
            return {}, float(self.best_fitness or 0.0), None
        return ts.run_validation(self, self.ema.ema)

    def final_eval(self):
        """Metrics of best.pt (falls back to the last EMA metrics)."""
        self.metrics = ts.final_metrics(self)
        if self.main and self.best.is_file():
            self.log(self.predict_hint(self.metrics))
        return self.metrics

    def predict_hint(self, metrics) -> str:
        """One line telling how to predict with best.pt, at the mask best-F1 confidence when it is below
        the default 0.25 (short runs give low scores; 0.25 would show nothing)."""
        seg = getattr(metrics, "seg", None)
        best = float(getattr(seg, "conf", 0.0) or 0.0) if seg is not None else 0.0
        conf = max(round(best, 3), 0.001) if 0.0 < best < 0.25 else 0.25
        val = self.data.get(getattr(self.args, "split", None) or "val") or self.data.get("val")
        val = val[0] if isinstance(val, (list, tuple)) and val else val
        return (f"Predict with this model: yoloseg predict model={self.best} source={val} conf={conf:g}"
                + ("  (the mask best-F1 confidence; scores are still low)" if conf < 0.25 else ""))

    # ------------------------------------------------------------------ results and checkpoints
    def record(self, epoch, tloss, metrics, val_losses, elapsed) -> None:
        row = {"epoch": epoch + 1, "time": round(elapsed, 3)}
        row.update({f"train/{n}": float(v) for n, v in zip(self.loss_names, tloss)})
        if not getattr(self, "metric_keys", None):  # fixed by the first epoch's metrics: stable CSV columns
            self.metric_keys = tuple(metrics) if metrics else METRIC_KEYS
        row.update({k: metrics.get(k, float("nan")) for k in self.metric_keys})
        vl = val_losses if val_losses is not None else [float("nan")] * len(self.loss_names)
        row.update({f"val/{n}": float(v) for n, v in zip(self.loss_names, vl)})
        row.update({f"lr/pg{j}": g["lr"] for j, g in enumerate(self.optimizer.param_groups)})
        self.csv_rows = [r for r in self.csv_rows if r["epoch"] < epoch + 1] + [row]
        ts.write_results_csv(self.save_dir / "results.csv", self.csv_rows)
        if getattr(self.args, "plots", True) is not False:
            try:
                plot_results(self.save_dir / "results.csv")
            except Exception as e:  # a plot must never stop training
                self.log(f"WARNING: results.png not drawn: {e}")

    def training_state(self, epoch: int, fitness: float) -> dict:
        pending = None
        if self.last_opt_step < epoch * self.nb + self.nb - 1:  # gradients accumulated but not yet applied
            pending = [p.grad.detach() if p.grad is not None else None for p in self.model.parameters()]
            if all(g is None for g in pending):
                pending = None
        return {
            "epoch": epoch,
            "best_fitness": self.best_fitness,
            "fitness": fitness,
            "best_epoch": self.best_epoch,
            # the checkpoint's model is the EMA; the raw training weights ride along for an exact resume
            "train_model": {k: v.detach() for k, v in unwrap_model(self.model).state_dict().items()},
            "ema": self.ema.state_dict(with_weights=False),
            "updates": self.ema.updates,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "scheduler": {"last_epoch": epoch, "initial_lr": [g["initial_lr"] for g in self.optimizer.param_groups],
                          "lrf": float(self.args.lrf), "cos_lr": bool(getattr(self.args, "cos_lr", False))},
            "last_opt_step": self.last_opt_step,
            "pending_grads": pending,
            "rng": get_rng_state(),
            "results": self.csv_rows,
        }

    def save(self, epoch: int, fitness: float, improved: bool) -> None:
        ts.save_ckpt(self, self.last, self.training_state(epoch, fitness))
        if improved:
            ts.copy_atomic(self.last, self.best)
        period = int(getattr(self.args, "save_period", -1) or -1)
        if period > 0 and (epoch + 1) % period == 0:
            ts.copy_atomic(self.last, self.wdir / f"epoch{epoch + 1}.pt")

    def restore_training_state(self, ckpt: dict) -> None:
        st = ckpt
        unwrap_model(self.model).load_state_dict(st["train_model"])
        self.ema.load_state_dict(st["ema"], weights=st["state_dict"])
        self.optimizer.load_state_dict(st["optimizer"])
        if st.get("scaler"):
            self.scaler.load_state_dict(st["scaler"])
        self.start_epoch = int(st["epoch"]) + 1
        self.best_fitness, self.best_epoch = st.get("best_fitness"), int(st.get("best_epoch", 0))
        self.last_opt_step = int(st.get("last_opt_step", -1))
        pending = st.get("pending_grads")
        if pending is not None:
            for p, g in zip(self.model.parameters(), pending):
                p.grad = None if g is None else g.to(p.device)
        self.csv_rows = [r for r in (st.get("results") or []) if int(r["epoch"]) <= self.start_epoch]
        set_rng_state(st.get("rng"))
        self.log(f"Resuming {self.save_dir} from epoch {self.start_epoch + 1}/{self.epochs}")
