"""Torch plumbing for training: device selection, seeding, RNG snapshots, optimizer parameter groups."""

from __future__ import annotations

import math
import os
import random

import numpy as np
import torch
from torch import nn

OPTIMIZERS = ("auto", "SGD", "AdamW", "Adam", "NAdam", "RAdam", "RMSProp")


def get_rank() -> int:
    """Process rank from the RANK environment variable (-1 when not distributed)."""
    try:
        return int(os.environ.get("RANK", -1))
    except ValueError:
        return -1


def is_main_process() -> bool:
    """True for the process that writes files and logs (single process or rank 0)."""
    return get_rank() in (-1, 0)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module inside DataParallel/DistributedDataParallel or torch.compile wrappers."""
    while True:
        if isinstance(model, (nn.parallel.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def select_device(device=None, batch: int | None = None) -> torch.device:
    """Parse a device request: None/'' (CUDA 0 when available, else CPU), 'cpu', 0, '0', 'cuda:1', 'mps'.

    Raises ValueError for unknown strings and for CUDA/MPS requests the machine cannot serve.
    """
    if isinstance(device, torch.device):
        return device
    text = "" if device is None else str(device).strip().lower().replace(" ", "")
    if text in ("", "none"):
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ValueError("device='mps' requested but MPS is not available on this machine")
        return torch.device("mps")
    if text.startswith("cuda"):
        text = text[4:].lstrip(":") or "0"
    indices = [t for t in text.strip("[]()").split(",") if t != ""]
    if not indices or not all(t.isdigit() for t in indices):
        raise ValueError(f"device={device!r} is not understood; use 'cpu', 'mps', 0, '0', 'cuda:0' or '0,1'")
    if not torch.cuda.is_available():
        raise ValueError(f"device={device!r} requests CUDA but torch.cuda.is_available() is False; use device=cpu")
    count = torch.cuda.device_count()
    for t in indices:
        if int(t) >= count:
            raise ValueError(f"device={device!r}: CUDA device {t} does not exist (found {count})")
    if len(indices) > 1:
        raise ValueError(f"device={device!r}: multi-GPU training is not supported yet; pick one device")
    return torch.device(f"cuda:{indices[0]}")


def usable_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def idle_cores() -> int:
    """Cores not already kept busy by other processes (usable cores minus the 1-minute load average,
    at least 1). OpenMP kernels slow down several-fold when they get more threads than free cores."""
    n = usable_cores()
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return n
    return max(1, min(n, int(n - load + 0.5)))


def set_cpu_threads(n: int | None = None) -> int:
    """Use `n` intra-op threads on CPU (default: every core that is not already busy, see idle_cores)."""
    if n is None or n <= 0:
        n = idle_cores()
    torch.set_num_threads(n)
    return n


def init_seeds(seed: int = 0, deterministic: bool = False) -> None:
    """Seed python, numpy and torch; optionally ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    # CPU kernels are already deterministic for a fixed thread count; the global switch is only needed for
    # CUDA (and importing it costs seconds), so it is left alone unless a GPU is present.
    if torch.cuda.is_available():
        if deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(bool(deterministic), warn_only=True)
        torch.backends.cudnn.deterministic = bool(deterministic)


def get_rng_state() -> dict:
    """Snapshot of every RNG the training loop draws from, as tensors/ints (loadable with weights_only=True)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": {"version": int(version), "internal": torch.tensor(internal, dtype=torch.int64),
                   "gauss_next": gauss_next},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict | None) -> None:
    """Restore a snapshot made by get_rng_state (missing parts are left alone)."""
    if not state:
        return
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu().to(torch.uint8))
    if "numpy" in state:
        s = state["numpy"]
        keys = s["keys"].numpy().astype(np.uint32) if torch.is_tensor(s["keys"]) else np.asarray(s["keys"], np.uint32)
        np.random.set_state((s["kind"], keys, int(s["pos"]), int(s["has_gauss"]), float(s["cached"])))
    if "python" in state:
        s = state["python"]
        internal = tuple(int(v) for v in (s["internal"].tolist() if torch.is_tensor(s["internal"]) else s["internal"]))
        random.setstate((int(s["version"]), internal, s["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        try:
            torch.cuda.set_rng_state_all([t.cpu().to(torch.uint8) for t in state["cuda"]])
        except (RuntimeError, IndexError):
            pass  # a different GPU count than at save time: keep the fresh CUDA seeds


def split_param_groups(model: nn.Module) -> tuple[list, list, list]:
    """Trainable parameters split three ways: (decayed weights, norm-layer weights, biases).

    Only conv/linear style weights get weight decay; biases and normalization weights never do.
    """
    decay, norm, bias = [], [], []
    seen = set()
    for module in model.modules():
        is_norm = isinstance(module, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm))
        for pname, p in module.named_parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            if pname == "bias" or pname.endswith("bias"):
                bias.append(p)
            elif is_norm or p.ndim <= 1:
                norm.append(p)
            else:
                decay.append(p)
    return decay, norm, bias


def auto_optimizer(nc: int, iterations: float) -> tuple[str, float, float]:
    """The optimizer that `optimizer=auto` chooses: (name, lr0, momentum).

    Short schedules (<= 10k optimizer steps) use AdamW with a learning rate that shrinks as the number of
    classes grows (lr = 0.01 / (4 + nc), rounded to 6 decimals); long ones use SGD at lr 0.01.
    """
    if iterations > 10_000:
        return "SGD", 0.01, 0.9
    return "AdamW", round(0.01 / (4 + max(int(nc), 1)), 6), 0.9


def build_optimizer(model: nn.Module, name: str = "auto", lr: float = 0.01, momentum: float = 0.937,
                    decay: float = 5e-4, iterations: float = 1e5, nc: int = 80):
    """Create an optimizer with 3 parameter groups (group 0 decayed weights, 1 norm weights, 2 biases).

    Returns (optimizer, resolved_name, lr, momentum). Each group carries a "param_group" tag
    ("weight"/"norm"/"bias") so warmup can treat biases differently.
    """
    choices = {o.lower(): o for o in OPTIMIZERS}
    key = str(name).lower()
    if key not in choices:
        raise ValueError(f"optimizer={name!r} is not supported; choose one of {', '.join(OPTIMIZERS)}")
    name = choices[key]
    if name == "auto":
        name, lr, momentum = auto_optimizer(nc, iterations)
    g_decay, g_norm, g_bias = split_param_groups(model)
    g_decay = [p for p in g_decay if p.requires_grad]
    g_norm = [p for p in g_norm if p.requires_grad]
    g_bias = [p for p in g_bias if p.requires_grad]
    if name in ("Adam", "AdamW", "NAdam", "RAdam"):
        cls = {"Adam": torch.optim.Adam, "AdamW": torch.optim.AdamW, "NAdam": torch.optim.NAdam,
               "RAdam": torch.optim.RAdam}[name]
        kw = {"lr": lr, "betas": (momentum, 0.999)}
    elif name == "RMSProp":
        cls, kw = torch.optim.RMSprop, {"lr": lr, "momentum": momentum}
    else:
        cls, kw = torch.optim.SGD, {"lr": lr, "momentum": momentum, "nesterov": True}
    groups = [
        {"params": g_decay, "weight_decay": decay, "param_group": "weight"},
        {"params": g_norm, "weight_decay": 0.0, "param_group": "norm"},
        {"params": g_bias, "weight_decay": 0.0, "param_group": "bias"},
    ]
    optimizer = cls(groups, **kw)
    return optimizer, name, lr, momentum


def lr_lambda(epochs: int, lrf: float, cos_lr: bool):
    """Learning-rate multiplier per epoch: linear from 1 to lrf, or a half-cosine from 1 to lrf."""
    epochs = max(int(epochs), 1)
    if cos_lr:
        return lambda e: ((1 - math.cos(min(e, epochs) * math.pi / epochs)) / 2) * (lrf - 1) + 1
    return lambda e: max(1 - e / epochs, 0) * (1.0 - lrf) + lrf
