"""SegmentationModel: the YOLO11-seg network built from a model YAML."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from yoloseg.nn.builder import build_layers, load_model_config
from yoloseg.nn.conv import Conv
from yoloseg.nn.head import Segment


class SegmentationModel(nn.Module):
    """YOLO11-seg model.

    Args:
        cfg: packaged config name (``"yolo11n-seg.yaml"``: the letter after ``yolo11`` picks the scale),
            a YAML path, or a config dict.
        nc: number of classes (overrides the config's ``nc``).
        ch: input channels.

    ``model`` is an ``nn.Sequential`` of the layers (state-dict names ``model.0.*`` ... ``model.23.*``).
    Eval forward: ``(pred (B, 4+nc+nm, A), protos (B, nm, H/4, W/4))``; train forward:
    ``(feats, coeffs, protos)`` (see :mod:`yoloseg.nn.head`).
    """

    task = "segment"

    def __init__(
        self, cfg: dict | str | Path = "yolo11n-seg.yaml", nc: int | None = None, ch: int = 3, box_bias: float = 2.0
    ):
        super().__init__()
        d = load_model_config(cfg)
        if nc is not None:
            nc = int(nc)
            if nc < 1:
                raise ValueError(f"nc must be >= 1, got {nc}")
            d["nc"] = nc
        d["channels"] = int(ch)
        self.yaml = d
        self.model, self.save, _ = build_layers(d, ch)
        self.nc = int(d.get("nc", 80))
        self.names = {i: f"class{i}" for i in range(self.nc)}
        head = self.head
        if isinstance(head, Segment):
            self.stride = self._probe_strides(ch)
            head.init_biases(box_bias)

    # -- attributes -------------------------------------------------------------------------------------------
    @property
    def head(self) -> nn.Module:
        return self.model[-1]

    @property
    def stride(self) -> torch.Tensor:
        """Output strides of the head levels, float32 CPU tensor (e.g. [8, 16, 32])."""
        return self.head.stride

    @stride.setter
    def stride(self, value) -> None:
        self.head.stride = torch.as_tensor(value, dtype=torch.float32, device="cpu").clone()

    @torch.no_grad()
    def _probe_strides(self, ch: int, size: int = 256) -> torch.Tensor:
        """Strides measured from one zero-input pass: input size / head input size per level."""
        was_training = self.training
        self.eval()
        try:
            feats = self._run_to_head(torch.zeros(1, ch, size, size))
        finally:
            self.train(was_training)
        return torch.tensor([size / f.shape[-2] for f in feats], dtype=torch.float32)

    # -- forward ------------------------------------------------------------------------------------------------
    def _gather(self, m: nn.Module, x, outputs: list):
        f = m.f
        if isinstance(f, int):
            return x if f == -1 else outputs[f]
        return [x if j == -1 else outputs[j] for j in f]

    def _run_to_head(self, x: torch.Tensor):
        outputs: list = []
        keep = set(self.save)
        for m in self.model[:-1]:
            x = m(self._gather(m, x, outputs))
            outputs.append(x if m.i in keep else None)
        return self._gather(self.head, x, outputs)

    def forward(self, x: torch.Tensor):
        return self.head(self._run_to_head(x))

    # -- utilities ------------------------------------------------------------------------------------------------
    def is_fused(self) -> bool:
        return not any(isinstance(m, Conv) and m.bn is not None for m in self.modules())

    def fuse(self, verbose: bool = False) -> SegmentationModel:
        """Fold every Conv's batch norm into its convolution (inference only). Returns ``self``."""
        for m in self.modules():
            if isinstance(m, Conv):
                m.fuse_bn()
        if verbose:
            self.info()
        return self

    def info(self, imgsz: int = 640, verbose: bool = True) -> tuple[int, int, int, float]:
        """Print and return (layers, parameters, gradients, GFLOPs at ``imgsz``)."""
        from yoloseg.nn.info import model_info

        return model_info(self, imgsz=imgsz, verbose=verbose)


def build_model(
    name_or_path: dict | str | Path = "yolo11n-seg.yaml", nc: int | None = None, ch: int = 3
) -> SegmentationModel:
    """Build a SegmentationModel from a packaged config name, YAML path or config dict."""
    return SegmentationModel(name_or_path, nc=nc, ch=ch)
