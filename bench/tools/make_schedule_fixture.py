"""Write the training-schedule parity fixture into tests/fixtures/schedule/.

Development tooling only: it needs the side-by-side peers environment with ultralytics installed and is
never imported by yoloseg or by its tests. Run it with

    YOLO_OFFLINE=1 YOLO_AUTOINSTALL=0 YOLO_CONFIG_DIR=$(mktemp -d) \
        ../peers-venv/bin/python bench/tools/make_schedule_fixture.py

How: the reference trainer's own epoch loop (`_do_train`: scheduler step per epoch, warmup, accumulation,
optimizer step, EMA update) runs unchanged, but over a stand-in model (one conv weight, one BatchNorm, one
bias) and a stand-in loader that yields `ceil(images / batch)` empty batches, and with validation, saving and
plotting switched off. So the full schedule of a 100-epoch, 1,000-image run is recorded in seconds.

What it stores
- ``schedule.npz``: per case ``<case>/lr`` (iterations x 3, learning rate of param groups 0..2 after the
  iteration's warmup update, i.e. the value the optimizer used if it stepped), ``<case>/momentum`` (SGD
  momentum, or Adam beta1, of each group), ``<case>/accumulate`` and ``<case>/stepped`` (1 where the
  optimizer stepped after that iteration), ``<case>/epoch_lr`` (the lr/pg* columns written per epoch) and
  ``<case>/ema_decay`` (the EMA decay used at each optimizer step) and ``<case>/close_mosaic_epoch`` (the
  0-based epoch at whose start mosaic was switched off, with the default close_mosaic=10).
- ``schedule.json``: the cases (settings), the param-group names in order, the weight decay given to each
  group, the resolved optimizer name and the library versions.
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
OUT_DIR = ROOT / "tests" / "fixtures" / "schedule"

# name: (epochs, images, batch, optimizer, warmup_epochs, cos_lr)
CASES = {
    "e30_n64_b8_auto_w3": (30, 64, 8, "auto", 3.0, False),
    "e30_n64_b8_sgd_w3": (30, 64, 8, "SGD", 3.0, False),
    "e30_n64_b16_sgd_w0_cos": (30, 64, 16, "SGD", 0.0, True),
    "e100_n64_b16_auto_w3": (100, 64, 16, "auto", 3.0, False),
    "e100_n64_b8_sgd_w3_cos": (100, 64, 8, "SGD", 3.0, True),
    "e30_n1000_b16_sgd_w3_cos": (30, 1000, 16, "SGD", 3.0, True),
    "e30_n1000_b8_auto_w3": (30, 1000, 8, "auto", 3.0, False),
    "e100_n1000_b8_auto_w0": (100, 1000, 8, "auto", 0.0, False),
    "e100_n1000_b16_sgd_w3": (100, 1000, 16, "SGD", 3.0, False),
    "e2_n64_b8_sgd_w3": (2, 64, 8, "SGD", 3.0, False),  # warmup longer than the run allows
}
NC = 3


class StandIn(nn.Module):
    """One weight that decays, one BatchNorm weight, one bias: one parameter per optimizer group."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1, bias=True)
        self.bn = nn.BatchNorm2d(4)
        self.criterion = None
        self.args = None
        self.stride = torch.tensor([8.0, 16.0, 32.0])
        self.names = {i: f"c{i}" for i in range(NC)}
        self.nc = NC

    def set_head_attr(self, **kwargs):
        pass

    def forward(self, batch):
        x = batch["img"] if isinstance(batch, dict) else batch
        y = self.bn(self.conv(x))
        loss = (y**2).mean().reshape(1)
        return loss, {"loss": loss.detach()[0]}


class StandInLoader:
    def __init__(self, n, batch):
        self.dataset = list(range(n))
        self.sampler = self.dataset
        self.batch_size = batch
        self.drop_last = False
        self.num_workers = 0

    def __len__(self):
        return math.ceil(len(self.dataset) / self.batch_size)

    def __iter__(self):
        g = torch.Generator().manual_seed(0)
        for _ in range(len(self)):
            yield {"img": torch.rand(2, 3, 4, 4, generator=g)}

    def reset(self):
        pass


def run_case(name, epochs, images, batch, optimizer, warmup_epochs, cos_lr):
    from ultralytics.models.yolo.segment import SegmentationTrainer

    rec = {"lr": [], "momentum": [], "accumulate": [], "stepped": [], "epoch_lr": [], "ema_decay": [],
           "close_mosaic_epoch": []}
    state = {"stepped": False}

    class T(SegmentationTrainer):
        def get_dataset(self):
            return {"train": "x", "val": "x", "nc": NC, "names": {i: f"c{i}" for i in range(NC)}, "channels": 3}

        def get_model(self, cfg=None, weights=None, verbose=True):
            return StandIn()

        def setup_model(self):
            self.model = StandIn()
            return None

        def get_dataloader(self, dataset_path, batch_size=16, rank=0, mode="train"):
            return StandInLoader(images if mode == "train" else 1, batch_size)

        def preprocess_batch(self, batch):
            return batch

        def validate(self):
            return {}, 0.0

        def save_model(self):
            return False

        def save_metrics(self, metrics):
            rec["epoch_lr"].append([metrics[f"lr/pg{j}"] for j in range(3)])

        def final_eval(self):
            pass

        def plot_training_labels(self):
            pass

        def plot_metrics(self):
            pass

        def set_class_weights(self):
            pass

        def _clear_memory(self, threshold=None):
            pass

        def _close_dataloader_mosaic(self):
            rec["close_mosaic_epoch"].append(self.epoch)

        def optimizer_step(self):
            rec["ema_decay"].append(self.ema.decay(self.ema.updates + 1))
            super().optimizer_step()
            state["stepped"] = True

    tmp = tempfile.mkdtemp()
    t = T(overrides={
        "model": "yolo11n-seg.yaml", "data": "x.yaml", "epochs": epochs, "batch": batch, "optimizer": optimizer,
        "warmup_epochs": warmup_epochs, "cos_lr": cos_lr, "device": "cpu", "workers": 0, "plots": False,
        "val": False, "amp": False, "project": tmp, "name": name, "imgsz": 32, "verbose": False, "patience": 0,
    })

    def on_batch_start(tr):
        state["stepped"] = False

    def on_batch_end(tr):
        groups = tr.optimizer.param_groups
        rec["lr"].append([g["lr"] for g in groups])
        rec["momentum"].append([g["momentum"] if "momentum" in g else g["betas"][0] for g in groups])
        rec["accumulate"].append(tr.accumulate)
        rec["stepped"].append(state["stepped"])

    t.add_callback("on_train_batch_start", on_batch_start)
    t.add_callback("on_train_batch_end", on_batch_end)
    t.train()
    groups = t.optimizer.param_groups
    meta = {
        "epochs": epochs, "images": images, "batch": batch, "optimizer": optimizer,
        "warmup_epochs": warmup_epochs, "cos_lr": cos_lr, "resolved_optimizer": type(t.optimizer).__name__,
        "group_names": [g.get("param_group") for g in groups],
        "group_weight_decay": [g["weight_decay"] for g in groups],
        "initial_lr": [g["initial_lr"] for g in groups],
        "nb": len(t.train_loader),
        "args": {k: getattr(t.args, k) for k in ("lr0", "lrf", "momentum", "weight_decay", "warmup_momentum",
                                                   "warmup_bias_lr", "nbs", "close_mosaic")},
    }
    arrays = {f"{name}/{k}": np.asarray(v, dtype=np.float64 if k in ("lr", "momentum", "epoch_lr", "ema_decay")
                                        else np.int16) for k, v in rec.items()}
    return meta, arrays


def main():
    import ultralytics

    torch.set_num_threads(1)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    cases, arrays = {}, {}
    for name, spec in CASES.items():
        meta, arr = run_case(name, *spec)
        cases[name] = meta
        arrays.update(arr)
        print(name, meta["resolved_optimizer"], meta["nb"], len(arr[f"{name}/lr"]), file=sys.stderr)
    np.savez_compressed(OUT_DIR / "schedule.npz", **arrays)
    info = {"ultralytics": ultralytics.__version__, "torch": torch.__version__, "nc": NC, "cases": cases}
    (OUT_DIR / "schedule.json").write_text(json.dumps(info, indent=1) + "\n")


if __name__ == "__main__":
    main()
