"""The training schedule equals the reference trainer's, iteration by iteration.

tests/fixtures/schedule/ holds, for several runs (30 and 100 epochs; 64 and 1,000 images; batch 8 and 16; SGD and
optimizer=auto; warmup_epochs 0 and 3; linear and cosine lr), the reference trainer's per-iteration learning rate
of each param group, momentum (SGD) or beta1 (Adam), gradient accumulation, whether the optimizer stepped, the
lr/pg* values written per epoch, the EMA decay at each optimizer step and the epoch mosaic closes (bench/tools/make_schedule_fixture.py).
Here the same runs go through yoloseg's Schedule, optimizer and EMA, driven the way Trainer.train_one_epoch
drives them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from yoloseg.cfg import get_cfg
from yoloseg.engine.schedule import (
    Schedule,
    mosaic_closed,
    optimizer_iterations,
    scaled_weight_decay,
    warmup_iterations,
)
from yoloseg.utils.ema import ModelEMA
from yoloseg.utils.torch_utils import build_optimizer

FIX = Path(__file__).parent / "fixtures" / "schedule"
INFO = json.loads((FIX / "schedule.json").read_text())
CASES = sorted(INFO["cases"])
# the reference calls the normalization-weight group "bn"; the groups' order (hence lr/pg0..2) is the same
GROUP_TAGS = {"weight": "weight", "bn": "norm", "bias": "bias"}


@pytest.fixture(scope="module")
def ref():
    with np.load(FIX / "schedule.npz") as z:
        return {k: z[k] for k in z.files}


class StandIn(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1, bias=True)
        self.bn = nn.BatchNorm2d(4)


def simulate(case: dict):
    """Run yoloseg's schedule for a reference case exactly as the trainer's epoch loop does."""
    cfg = get_cfg()
    a = {k: getattr(cfg, k) for k in ("lr0", "lrf", "momentum", "weight_decay", "warmup_momentum",
                                      "warmup_bias_lr", "nbs", "close_mosaic")}
    epochs, images, batch = case["epochs"], case["images"], case["batch"]
    nb = -(-images // batch)
    model = StandIn()
    wd = scaled_weight_decay(a["weight_decay"], batch, a["nbs"])
    opt, name, lr0, momentum = build_optimizer(model, case["optimizer"], a["lr0"], a["momentum"], wd,
                                               optimizer_iterations(images, batch, a["nbs"], epochs), nc=INFO["nc"])
    if case["optimizer"].lower() == "auto":
        a.update(lr0=lr0, momentum=momentum, warmup_bias_lr=0.0)
    for g in opt.param_groups:
        g["initial_lr"] = g["lr"]
    sched = Schedule(opt, epochs=epochs, nb=nb, batch=batch, nbs=a["nbs"], lrf=a["lrf"],
                     cos_lr=case["cos_lr"], warmup_epochs=case["warmup_epochs"], warmup_bias_lr=a["warmup_bias_lr"],
                     warmup_momentum=a["warmup_momentum"], momentum=a["momentum"])
    ema = ModelEMA(model)
    rec = {k: [] for k in ("lr", "momentum", "accumulate", "stepped", "epoch_lr", "ema_decay", "close_mosaic_epoch")}
    last = -1
    for epoch in range(epochs):
        if mosaic_closed(epoch, epochs, a["close_mosaic"]) and not rec["close_mosaic_epoch"]:
            rec["close_mosaic_epoch"].append(epoch)
        sched.epoch_start(epoch)
        for i in range(nb):
            ni = i + nb * epoch
            sched.iteration(ni, epoch)
            step = sched.due(ni, last)
            if step:
                rec["ema_decay"].append(ema.decay(ema.updates + 1))
                ema.updates += 1
                last = ni
            rec["lr"].append([g["lr"] for g in opt.param_groups])
            rec["momentum"].append([g["momentum"] if "momentum" in g else g["betas"][0] for g in opt.param_groups])
            rec["accumulate"].append(sched.accumulate)
            rec["stepped"].append(int(step))
        rec["epoch_lr"].append([g["lr"] for g in opt.param_groups])
    return name, opt, nb, {k: np.asarray(v) for k, v in rec.items()}


def test_fixture_covers_the_settings():
    cases = INFO["cases"].values()
    assert {c["epochs"] for c in cases} >= {30, 100}
    assert {c["images"] for c in cases} >= {64, 1000}
    assert {c["batch"] for c in cases} >= {8, 16}
    assert {c["optimizer"] for c in cases} >= {"SGD", "auto"}
    assert {c["warmup_epochs"] for c in cases} >= {0.0, 3.0}
    assert {c["cos_lr"] for c in cases} == {False, True}


@pytest.mark.parametrize("name", CASES)
def test_schedule_matches_reference(ref, name):
    case = INFO["cases"][name]
    opt_name, opt, nb, got = simulate(case)
    assert nb == case["nb"]
    assert opt_name == case["resolved_optimizer"]
    assert [g["param_group"] for g in opt.param_groups] == [GROUP_TAGS[t] for t in case["group_names"]]
    np.testing.assert_allclose([g["weight_decay"] for g in opt.param_groups], case["group_weight_decay"], rtol=1e-12)
    np.testing.assert_allclose([g["initial_lr"] for g in opt.param_groups], case["initial_lr"], rtol=1e-12)
    for key in ("accumulate", "stepped", "close_mosaic_epoch"):
        want = ref[f"{name}/{key}"]
        assert got[key].shape == want.shape, key
        bad = np.flatnonzero(got[key] != want)
        assert bad.size == 0, f"{key} differs first at iteration {bad[:1]}: {got[key][bad[:3]]} vs {want[bad[:3]]}"
    for key in ("lr", "momentum", "epoch_lr", "ema_decay"):
        want = ref[f"{name}/{key}"]
        assert got[key].shape == want.shape, key
        np.testing.assert_allclose(got[key], want, rtol=1e-9, atol=1e-15, err_msg=f"{name}: {key}")


def test_warmup_leaves_the_last_epoch_and_has_no_floor():
    assert warmup_iterations(3.0, 30, 8) == 24  # 3 epochs of 8 batches: no 100-iteration floor, no cap
    assert warmup_iterations(3.0, 2, 8) == 8  # capped to epochs - 1
    assert warmup_iterations(3.0, 1, 8) == 0
    assert warmup_iterations(0.0, 30, 8) == 0
    assert warmup_iterations(0.5, 30, 7) == 4  # round(3.5) -> 4 (banker's rounding, as the reference)
