"""NMS speed: yoloseg's C++ kernel vs its pure-torch reference vs torchvision (when installed).

Boxes: random centres over a 640x640 scene, sides 8..128 px, uniform random scores; for batched
NMS, 80 random classes. 5k and 30k boxes, IoU 0.7, 1 thread and the default thread count.
torchvision runs in the same process on the same tensors when it is importable (install yoloseg
into a venv that has it: `pip install --no-deps --config-settings=build-dir=/tmp/yoloseg-build .`).
"""

from __future__ import annotations

import pytest
import torch

from yoloseg import ops
from yoloseg.ops import reference

from conftest import peer

IOU = 0.7


def scene(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centre = torch.rand(n, 2, generator=g) * 640
    side = torch.rand(n, 2, generator=g) * 120 + 8
    boxes = torch.cat([centre - side / 2, centre + side / 2], 1)
    return boxes, torch.rand(n, generator=g), torch.randint(0, 80, (n,), generator=g)


def implementation(name: str, batched: bool):
    if name == "yoloseg":
        return ops.batched_nms if batched else ops.nms
    if name == "reference":
        return reference.batched_nms if batched else reference.nms
    tv = peer("torchvision")
    return tv.ops.batched_nms if batched else tv.ops.nms


def run(benchmark, impl, batched, n):
    fn = implementation(impl, batched)
    boxes, scores, classes = scene(n)
    args = (boxes, scores, classes, IOU) if batched else (boxes, scores, IOU)
    slow = impl == "reference" and n > 5000 or impl == "torchvision" and n > 5000 and not batched
    keep = benchmark.pedantic(fn, args, rounds=2 if slow else 10, iterations=1, warmup_rounds=1)
    benchmark.extra_info["kept"] = int(keep.numel())


@pytest.mark.parametrize("impl", ["yoloseg", "reference", "torchvision"])
@pytest.mark.parametrize("n", [5000, 30000])
def test_nms(benchmark, threads, impl, n):
    benchmark.group = f"nms n={n} threads={threads}"
    run(benchmark, impl, False, n)


@pytest.mark.parametrize("impl", ["yoloseg", "reference", "torchvision"])
@pytest.mark.parametrize("n", [5000, 30000])
def test_batched_nms(benchmark, threads, impl, n):
    benchmark.group = f"batched_nms 80 classes n={n} threads={threads}"
    run(benchmark, impl, True, n)
