"""The C++ kernels under AddressSanitizer and UndefinedBehaviorSanitizer: tests/cpp is built with
-DYOLOSEG_SANITIZE=address,undefined (errors abort, no recovery) and both programs must run clean:
check_kernels (every entry point, valid and invalid input) and embed_kernels (the embedding example)."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CMAKE = shutil.which("cmake")
CXX = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")

pytestmark = [pytest.mark.sanitize, pytest.mark.skipif(not (CMAKE and CXX), reason="needs cmake and a C++ compiler")]

SAN_ENV = {
    "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1",
    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
    "OMP_NUM_THREADS": "2",
}


@pytest.fixture(scope="module")
def sanitized_build(tmp_path_factory):
    build = tmp_path_factory.mktemp("asan-build")
    gen = ["-G", "Ninja"] if shutil.which("ninja") else []
    # The kernels build at -O1 under YOLOSEG_SANITIZE (CMakeLists.txt); OpenMP stays on, so the parallel
    # regions and their exception hand-off run under the sanitizers too (check_kernels asks for threads).
    cfg = subprocess.run([CMAKE, "-S", str(ROOT / "tests" / "cpp"), "-B", str(build), *gen,
                          "-DCMAKE_BUILD_TYPE=Debug", "-DCMAKE_CXX_FLAGS_DEBUG=-O1 -g",
                          "-DYOLOSEG_SANITIZE=address,undefined"],
                         capture_output=True, text=True, timeout=300)
    assert cfg.returncode == 0, cfg.stdout + cfg.stderr
    bld = subprocess.run([CMAKE, "--build", str(build), "--parallel", os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", "2")],
                         capture_output=True, text=True, timeout=1800)
    assert bld.returncode == 0, bld.stdout + bld.stderr
    return build


def _run(build, name):
    exe = next(p for p in build.rglob(name + "*") if p.is_file() and p.suffix in ("", ".exe"))
    return subprocess.run([str(exe)], capture_output=True, text=True, timeout=300, env={**os.environ, **SAN_ENV})


def test_check_kernels_clean_under_asan_ubsan(sanitized_build):
    run = _run(sanitized_build, "check_kernels")
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-8000:]
    assert "0 failure(s)" in run.stdout
    assert "runtime error" not in run.stderr and "AddressSanitizer" not in run.stderr, run.stderr[-8000:]
    assert run.stdout.count("\nok ") >= 40


def test_embed_example_clean_under_asan_ubsan(sanitized_build):
    run = _run(sanitized_build, "embed_kernels")
    assert run.returncode == 0, run.stderr[-8000:]
    assert "runtime error" not in run.stderr and "AddressSanitizer" not in run.stderr, run.stderr[-8000:]
