"""The optimization schedule of a training run: learning rate and momentum per iteration, gradient accumulation
and when the optimizer steps. Pure bookkeeping on the optimizer's param groups, so it can be checked without
training.

- Nominal batch: gradients accumulate over `accumulate = max(round(nbs / batch), 1)` batches (capped at the run's
  number of iterations); weight decay scales by `batch * accumulate / nbs` with the uncapped accumulate.
- Per epoch: every group's lr = initial lr * lf(epoch), lf linear from 1 to lrf, or a half cosine with cos_lr.
- Warmup: over `nw = round(min(warmup_epochs, epochs - 1) * batches per epoch)` iterations (never into the last
  epoch), accumulation ramps from 1 to the nominal value, bias lr falls from warmup_bias_lr and the other lrs rise
  from 0 to the epoch's scheduled lr, and SGD/RMSProp momentum rises from warmup_momentum to momentum (Adam's
  beta1 stays at momentum). At ni == nw everything lands on its target.
- The optimizer steps after iteration ni when `ni - last step >= accumulate`.
- Mosaic, mixup, cutmix and copy-paste stop for the last `close_mosaic` epochs.
"""

from __future__ import annotations

import math

import numpy as np

from yoloseg.utils.torch_utils import lr_lambda


def nominal_accumulate(nbs: int, batch: int) -> int:
    """Batches whose gradients add up before one optimizer step (nominal batch size `nbs`)."""
    return max(round(nbs / max(batch, 1)), 1)


def scaled_weight_decay(weight_decay: float, batch: int, nbs: int) -> float:
    """Weight decay for the decayed group, scaled to the batch actually accumulated per step."""
    return weight_decay * batch * nominal_accumulate(nbs, batch) / nbs


def optimizer_iterations(images: int, batch: int, nbs: int, epochs: int) -> int:
    """The run's length in nominal batches, which `optimizer=auto` chooses by."""
    return math.ceil(images / max(batch, nbs)) * epochs


def warmup_iterations(warmup_epochs: float, epochs: int, nb: int) -> int:
    """Warmup length in iterations: warmup_epochs of `nb` batches, leaving at least the final epoch."""
    we = min(float(warmup_epochs), max(int(epochs) - 1, 0))
    return round(we * nb) if we > 0 else 0


def mosaic_closed(epoch: int, epochs: int, close_mosaic: int) -> bool:
    """Whether mosaic (with mixup, cutmix and copy-paste) is off in `epoch` (0-based): the last close_mosaic
    epochs of the run; 0 keeps it on throughout."""
    return bool(close_mosaic) and epoch >= epochs - int(close_mosaic)


class Schedule:
    """Applies the schedule to the param groups of `optimizer` (each with "initial_lr" and a "param_group" tag;
    read afresh each time, so a loaded optimizer state is followed) of a run of
    `epochs` epochs of `nb` batches. Call `epoch_start(epoch)` before an epoch, `iteration(ni, epoch)` before
    each batch (ni = batches seen since the start of training), and `due(ni, last_opt_step)` after its backward
    pass."""

    def __init__(self, optimizer, *, epochs: int, nb: int, batch: int, nbs: int, lrf: float, cos_lr: bool,
                 warmup_epochs: float, warmup_bias_lr: float, warmup_momentum: float, momentum: float):
        self.optimizer = optimizer
        self.nb = max(int(nb), 1)
        self.nominal = min(nominal_accumulate(nbs, batch), self.nb * max(int(epochs), 1))
        self.accumulate = self.nominal
        self.warmup_epochs = float(warmup_epochs)
        self.warmup_bias_lr, self.warmup_momentum, self.momentum = (
            float(warmup_bias_lr), float(warmup_momentum), float(momentum))
        self.lrf, self.cos_lr = float(lrf), bool(cos_lr)
        self.set_epochs(epochs)

    def set_epochs(self, epochs: int) -> None:
        """(Re)plan the run's length: the lr curve and the warmup follow."""
        self.epochs = max(int(epochs), 1)
        self.lf = lr_lambda(self.epochs, self.lrf, self.cos_lr)
        self.nw = warmup_iterations(self.warmup_epochs, self.epochs, self.nb)

    def epoch_start(self, epoch: int) -> None:
        for g in self.optimizer.param_groups:
            g["lr"] = g["initial_lr"] * self.lf(epoch)

    def iteration(self, ni: int, epoch: int) -> None:
        nw = self.nw
        if not nw or ni > nw:
            return
        xi = [0, nw]
        self.accumulate = max(1, int(np.interp(ni, xi, [1, self.nominal]).round()))
        lr_mult = self.lf(epoch)
        for g in self.optimizer.param_groups:
            start = self.warmup_bias_lr if g.get("param_group") == "bias" else 0.0
            g["lr"] = float(np.interp(ni, xi, [start, g["initial_lr"] * lr_mult]))
            if "momentum" in g:
                g["momentum"] = float(np.interp(ni, xi, [self.warmup_momentum, self.momentum]))

    def due(self, ni: int, last_opt_step: int) -> bool:
        """Whether the optimizer steps after iteration ni (last_opt_step: the iteration of the previous step)."""
        return ni - last_opt_step >= self.accumulate
