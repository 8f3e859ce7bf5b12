"""Shared bench helpers: thread settings and optional peers.

Run a suite with `python -m pytest bench/bench_nms.py --benchmark-only` (add
`--benchmark-json=out.json` to keep the numbers). Peers (torchvision, ...) are imported only when
installed; their cases are skipped otherwise.
"""

from __future__ import annotations

import importlib

import pytest
import torch

DEFAULT_THREADS = torch.get_num_threads()


@pytest.fixture(params=[1, DEFAULT_THREADS], ids=lambda n: f"threads{n}")
def threads(request):
    """Runs the case with torch.set_num_threads(n) (yoloseg kernels follow that setting too)."""
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


def peer(module: str):
    """Import an optional peer library or skip the case."""
    try:
        return importlib.import_module(module)
    except ImportError:
        pytest.skip(f"{module} is not installed")
