"""The kernels as a plain C++ library: tests/cpp builds a program against the CMake target yoloseg_kernels
(no Python, no pybind11) and its results must equal the Python module's on the same inputs."""

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from yoloseg import _C as C
from yoloseg.metrics import rle

ROOT = Path(__file__).resolve().parents[1]
CMAKE = shutil.which("cmake")
CXX = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")

pytestmark = pytest.mark.skipif(not (CMAKE and CXX), reason="needs cmake and a C++ compiler")


@pytest.fixture(scope="module")
def program_output(tmp_path_factory):
    build = tmp_path_factory.mktemp("embed-build")
    gen = ["-G", "Ninja"] if shutil.which("ninja") else []
    cfg = subprocess.run([CMAKE, "-S", str(ROOT / "tests" / "cpp"), "-B", str(build), *gen,
                          "-DCMAKE_BUILD_TYPE=Release"], capture_output=True, text=True, timeout=300)
    assert cfg.returncode == 0, cfg.stdout + cfg.stderr
    bld = subprocess.run([CMAKE, "--build", str(build), "--parallel", "2"], capture_output=True, text=True,
                         timeout=600)
    assert bld.returncode == 0, bld.stdout + bld.stderr
    exe = next(p for p in build.rglob("embed_kernels*") if p.is_file() and p.suffix in ("", ".exe"))
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    out = {}
    for line in run.stdout.splitlines():
        name, _, rest = line.partition(" ")
        out[name] = rest
    return out


def _nums(text, dtype):
    return np.array(text.split(), dtype=np.float64).astype(dtype)


def test_nms_from_cpp_equals_python(program_output):
    boxes = _nums(program_output["boxes"], np.float32).reshape(-1, 4)
    scores = _nums(program_output["scores"], np.float32)
    classes = _nums(program_output["classes"], np.int64)
    keep = _nums(program_output["keep"], np.int64)
    assert len(boxes) == 300 and 0 < len(keep) < 300
    np.testing.assert_array_equal(C.batched_nms(boxes, scores, classes, 0.5), keep)


def test_polygon_and_rle_from_cpp_equal_python(program_output):
    mask = _nums(program_output["mask"], np.uint8).reshape(24, 32)
    pts, ends = C.mask_polygons(mask[None], np.array([[0, 0, 32, 24]], np.int64), "all", 1)
    np.testing.assert_array_equal(pts.reshape(-1), _nums(program_output["polygon"], np.int32))
    assert rle.encode(mask)[0]["counts"] == program_output["rle"]
