"""Writes that survive a kill: `export` and `convert` killed (SIGKILL) in the middle of writing leave no
half-written file under the final name, and a file already there stays as it was.

The child process slows the write down (the test wraps the writer's last step, onnx.save / os.fsync, with a
long sleep) so that the kill lands inside the write every time, not by chance."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SHARED = Path(os.environ.get("YOLOSEG_SHARED", Path(__file__).resolve().parents[2] / "shared"))
WEIGHTS = SHARED / "fixtures" / "ultralytics" / "yolo11n-seg-synth3-e100.pt"


def _run_and_kill(script: str, folder: Path, ready, timeout=240.0):
    """Start `script`, SIGKILL it once ready(folder) holds, return when it is gone."""
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=folder, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    try:
        while not ready(folder):
            if proc.poll() is not None:
                out, err = proc.communicate()
                pytest.fail(f"child ended before the write (rc {proc.returncode}):\n{out}\n{err[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail("the write never started")
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        assert proc.returncode == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        proc.stdout.close()
        proc.stderr.close()


def _temp_files(folder: Path):
    return [p for p in folder.rglob("*.tmp")]


@pytest.mark.skipif(not WEIGHTS.exists(), reason="no shared fixtures")
def test_export_killed_mid_write_leaves_no_partial_file(tmp_path):
    shutil.copy(WEIGHTS, tmp_path / "w.pt")
    final = tmp_path / "w.onnx"
    final.write_bytes(b"previous export")
    script = f"""
import time, onnx
real = onnx.save
def slow_save(model, f, *a, **k):
    real(model, f, *a, **k)
    open({str(tmp_path / 'written')!r}, 'w').close()
    time.sleep(600)
onnx.save = slow_save
from yoloseg import YOLO
YOLO({str(tmp_path / 'w.pt')!r}).export(format='onnx', imgsz=64, verbose=False)
"""
    _run_and_kill(script, tmp_path, lambda d: (d / "written").exists())
    tmp = _temp_files(tmp_path)
    assert tmp and tmp[0].stat().st_size > 100_000  # the kill came after the model bytes were written
    assert final.read_bytes() == b"previous export"  # final name untouched


def _coco(folder: Path) -> Path:
    doc = {
        "images": [{"id": i, "file_name": f"im{i}.jpg", "height": 20, "width": 30} for i in range(1, 4)],
        "categories": [{"id": 1, "name": "a"}],
        "annotations": [{"id": i, "image_id": i, "category_id": 1, "iscrowd": 0, "area": 50, "bbox": [1, 1, 10, 5],
                         "segmentation": [[1, 1, 11, 1, 11, 6, 1, 6]]} for i in range(1, 4)],
    }
    path = folder / "instances_val.json"
    path.write_text(json.dumps(doc))
    return path


def test_convert_killed_mid_write_leaves_no_partial_file(tmp_path):
    js = _coco(tmp_path)
    out = tmp_path / "out"
    script = f"""
import os, time
real = os.fsync
def slow_fsync(fd):
    real(fd)
    open({str(tmp_path / 'written')!r}, 'w').close()
    time.sleep(600)
os.fsync = slow_fsync
from yoloseg.data.convert import coco_to_yolo
coco_to_yolo({str(js)!r}, {str(out)!r}, verbose=False)
"""
    _run_and_kill(script, tmp_path, lambda d: (d / "written").exists())
    labels = out / "labels" / "val"
    assert _temp_files(out), "the kill should land inside a write"
    assert not list(labels.glob("*.txt"))  # no label file under its final name
    assert not (out / "data.yaml").exists()
    # a rerun (no overwrite needed: the interrupted run wrote no label file) completes and removes the temp files
    from yoloseg.data.convert import coco_to_yolo

    res = coco_to_yolo(js, out, verbose=False)
    assert not _temp_files(out)
    assert res.n_images == 3 and sorted(p.name for p in labels.glob("*.txt")) == ["im1.txt", "im2.txt", "im3.txt"]
    assert all(p.read_text().startswith("0 ") for p in labels.glob("*.txt"))


def test_convert_killed_writing_data_yaml_leaves_its_temp_file_for_the_rerun_to_remove(tmp_path):
    js = _coco(tmp_path)
    out = tmp_path / "out"
    script = f"""
import os, time
real = os.fsync
def slow_fsync(fd):
    real(fd)
    if os.readlink(f"/proc/self/fd/{{fd}}").rsplit("/", 1)[-1].startswith(".data.yaml."):
        open({str(tmp_path / 'written')!r}, 'w').close()
        time.sleep(600)
os.fsync = slow_fsync
from yoloseg.data.convert import coco_to_yolo
coco_to_yolo({str(js)!r}, {str(out)!r}, verbose=False)
"""
    _run_and_kill(script, tmp_path, lambda d: (d / "written").exists())
    left = _temp_files(out)
    assert [p.name.startswith(".data.yaml.") for p in left] == [True]
    assert not (out / "data.yaml").exists()
    from yoloseg.data.convert import coco_to_yolo

    coco_to_yolo(js, out, verbose=False, overwrite=True)  # the labels were all written before the YAML
    assert not _temp_files(out) and (out / "data.yaml").is_file()
