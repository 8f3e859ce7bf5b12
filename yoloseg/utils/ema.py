"""Exponential moving average of model weights, with a decay that ramps up over the first updates."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from yoloseg.utils.torch_utils import unwrap_model


class ModelEMA:
    """Keeps `ema`, a frozen copy of the model whose floating-point state follows the training weights.

    After update k the EMA weight of the old average is `decay * (1 - exp(-k / tau))`, so early updates track
    the (fast-changing) model closely and later ones average over roughly 1 / (1 - decay) steps.
    Integer buffers (e.g. BatchNorm's num_batches_tracked) are copied, not averaged.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = 2000.0, updates: int = 0):
        self.ema = copy.deepcopy(unwrap_model(model)).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.decay_max = float(decay)
        self.tau = float(tau)
        self.updates = int(updates)
        self._pairs = None

    def decay(self, updates: int | None = None) -> float:
        k = self.updates if updates is None else updates
        return self.decay_max * (1.0 - math.exp(-k / self.tau))

    def _build_pairs(self, model: nn.Module):
        src = unwrap_model(model).state_dict()
        dst = self.ema.state_dict()
        if src.keys() != dst.keys():
            raise ValueError("EMA and model have different state-dict keys")
        floats, others = ([], []), ([], [])
        for k, v in dst.items():
            target = floats if v.dtype.is_floating_point else others
            target[0].append(v)
            target[1].append(src[k])
        self._pairs = floats, others

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average one step toward `model`'s current weights."""
        if self._pairs is None:
            self._build_pairs(model)
        self.updates += 1
        d = self.decay()
        (ema_f, model_f), (ema_o, model_o) = self._pairs
        if ema_f:
            model_f = [m.detach().to(e.dtype) if m.dtype != e.dtype else m.detach() for e, m in zip(ema_f, model_f)]
            torch._foreach_lerp_(ema_f, model_f, 1.0 - d)
        for e, m in zip(ema_o, model_o):
            e.copy_(m)

    def state_dict(self, with_weights: bool = True) -> dict:
        """Update counter and decay settings, plus the EMA weights unless `with_weights=False` (a checkpoint
        that already stores them as its model)."""
        out = {"updates": self.updates, "decay": self.decay_max, "tau": self.tau}
        if with_weights:
            out["model"] = {k: v.detach().clone() for k, v in self.ema.state_dict().items()}
        return out

    def load_state_dict(self, state: dict, weights: dict | None = None) -> None:
        """Restore from `state`; EMA weights come from `state["model"]` or, when absent, from `weights`."""
        weights = state.get("model", weights)
        if weights is None:
            raise ValueError("EMA state has no weights: pass them as `weights`")
        self.ema.load_state_dict(weights)
        self.updates = int(state.get("updates", 0))
        self.decay_max = float(state.get("decay", self.decay_max))
        self.tau = float(state.get("tau", self.tau))
        self._pairs = None
