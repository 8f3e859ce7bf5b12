"""CPU inference backends side by side: latency, batch-8 throughput, peak RSS and mask mAP50-95.

Backends (one table row each): PyTorch eager float32 (fused; the reference), onnxruntime float32, onnxruntime
int8 (QDQ, ``int8=True``), OpenVINO float32 and OpenVINO int8 (NNCF), all exported by yoloseg from the same
weights at 640x640; with the Ultralytics peer installed, its ONNX export of the same weights too (and its
OpenVINO fp32/int8 exports when openvino is installed beside it).

Data: a synthetic-shapes set from the built-in generator with its own seed (``seed=1``, 300 train images for
calibration, 100 val images held aside for mAP; the calibration never sees the val images).

Models (``YOLOSEG_BENCH_MODELS``, comma-separated .pt paths): by default the synth3 fixture checkpoint; add a
model trained by ``yoloseg train`` (its ``runs/segment/train*/weights/best.pt``).

Columns: forward latency (median ms) at batch 1 with 1 thread and with all threads (the runtime default);
throughput (images/s) at batch 8 (a static batch-8 export of the same model), all threads; peak RSS (MB) of the
batch-1 all-threads process; box and mask mAP50-95 of ``val`` through the exported model (imgsz 640, batch 1,
conf 0.001, iou 0.7, the same for every backend). Each timing runs in a process of its own
(bench/tools/cpu_infer.py), the backends interleaved over ``YOLOSEG_BENCH_BLOCKS`` blocks in rotating order; the
table gives the median over blocks, and the ratios are of those medians from this one run.

    pytest bench/bench_cpu_inference.py -s
    YOLOSEG_BENCH_MODELS=runs/segment/train/weights/best.pt pytest bench/bench_cpu_inference.py -s
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")

SHARED = Path(os.environ.get("YOLOSEG_SHARED", Path(__file__).resolve().parents[2] / "shared"))
FIXTURE = SHARED / "fixtures" / "ultralytics" / "yolo11n-seg-synth3-e100.pt"
MODELS = [Path(p) for p in os.environ.get("YOLOSEG_BENCH_MODELS", str(FIXTURE)).split(",") if p]
IMGSZ = 640
ROUNDS = int(os.environ.get("YOLOSEG_BENCH_ROUNDS", "8"))
BLOCKS = int(os.environ.get("YOLOSEG_BENCH_BLOCKS", "4"))
N_TRAIN, N_VAL = int(os.environ.get("YOLOSEG_BENCH_NTRAIN", "300")), int(os.environ.get("YOLOSEG_BENCH_NVAL", "100"))
TOOL = Path(__file__).parent / "tools" / "cpu_infer.py"
B8 = os.environ.get("YOLOSEG_BENCH_B8", "1") != "0"  # 0: skip the batch-8 exports and column (busy machine)
PEERS = os.environ.get("YOLOSEG_BENCH_PEERS", "1") != "0"  # 0: skip Ultralytics' exports


def _has(module: str) -> bool:
    try:
        __import__(module)
        return True
    except ImportError:
        return False


@pytest.fixture(scope="module")
def data():
    from yoloseg.data.synthetic import ensure_synthetic_shapes

    return str(ensure_synthetic_shapes(seed=1, n_train=N_TRAIN, n_val=N_VAL))


def _exports(pt: Path, work: Path, data: str) -> dict:
    """name -> (kind, batch-1 path, batch-8 path)."""
    from yoloseg import YOLO

    out = {"torch eager fp32": ("torch", str(pt), str(pt) if B8 else None)}
    paths = {}
    for b in (1, 8) if B8 else (1,):
        d = work / f"b{b}"
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy(pt, d / "model.pt")
        m = YOLO(str(d / "model.pt"))
        kw = dict(imgsz=IMGSZ, batch=b, verbose=False)
        paths[("ort fp32", b)] = m.export(format="onnx", **kw)
        paths[("ort int8", b)] = m.export(format="onnx", int8=True, data=data, **kw)
        if _has("openvino") and _has("nncf"):
            paths[("openvino fp32", b)] = m.export(format="openvino", **kw)
            paths[("openvino int8", b)] = m.export(format="openvino", int8=True, data=data, **kw)
    for name in ("ort fp32", "ort int8", "openvino fp32", "openvino int8"):
        if (name, 1) in paths:
            out[name] = ("ort" if name.startswith("ort") else "openvino", paths[(name, 1)], paths.get((name, 8)))
    # the float-node choice: the same calibration with other sets of nodes kept in float32 (batch 1 only)
    from yoloseg.engine.quantize import calibration_files, quantize_onnx

    for policy in [p for p in os.environ.get("YOLOSEG_BENCH_POLICIES", "").split(",") if p]:
        dst = work / f"int8-{policy}.onnx"
        quantize_onnx(paths[("ort fp32", 1)], dst, calibration_files(data), (IMGSZ, IMGSZ), 1, policy=policy)
        import onnx

        q, f = onnx.load(str(dst)), onnx.load(paths[("ort fp32", 1)])
        del q.metadata_props[:]
        q.metadata_props.extend(f.metadata_props)
        onnx.save(q, str(dst))
        out[f"ort int8 float={policy}"] = ("ort", str(dst), None)
    if PEERS:
        out.update(_ultralytics_exports(pt, work, data))
    return out


PEERS_PY = Path(os.environ.get("YOLOSEG_PEERS_PYTHON", Path(__file__).resolve().parents[2] / "peers-venv" / "bin" / "python"))
_PEER_SCRIPT = r"""
import json, os, shutil, sys
from pathlib import Path
from ultralytics import YOLO
pt, work, data = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
out = {}
try:
    import openvino  # noqa: F401
    ov = True
except ImportError:
    ov = False
for b in (1, 8):
    d = work / f"ultralytics-b{b}"
    d.mkdir(parents=True, exist_ok=True)
    shutil.copy(pt, d / "theirs.pt")
    m = YOLO(str(d / "theirs.pt"))
    kw = dict(imgsz=640, batch=b, verbose=False)
    out.setdefault("Ultralytics ort fp32", ["ort"]).append(str(m.export(format="onnx", **kw)))
    if ov:
        out.setdefault("Ultralytics openvino fp32", ["openvino"]).append(str(m.export(format="openvino", **kw)))
        out.setdefault("Ultralytics openvino int8", ["openvino"]).append(
            str(m.export(format="openvino", int8=True, data=data, **kw)))
print("EXPORTS " + json.dumps(out))
"""


def _ultralytics_exports(pt: Path, work: Path, data: str) -> dict:
    """Ultralytics' own exports of the same weights, made in the peers venv (run here by our runtimes)."""
    import json

    if not PEERS_PY.exists():
        return {}
    env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "0", "YOLO_CONFIG_DIR": str(work / "ucfg")}
    r = subprocess.run([str(PEERS_PY), "-c", _PEER_SCRIPT, str(pt), str(work), data], capture_output=True,
                       text=True, env=env, cwd=work)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("EXPORTS ")), None)
    if r.returncode or line is None:
        print(f"Ultralytics exports failed:\n{r.stderr[-3000:]}")
        return {}
    return {k: tuple(v) for k, v in json.loads(line[8:]).items()}


def _time(kind, path, threads, batch) -> tuple[float, float]:
    cmd = [sys.executable, str(TOOL), kind, str(path), str(threads), str(batch), str(ROUNDS)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)} if threads else dict(os.environ)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout.split()
    return float(out[-2]), float(out[-1])


def _val(path: str, data: str) -> tuple[float, float]:
    from yoloseg import YOLO

    m = YOLO(path).val(data=data, imgsz=IMGSZ, batch=1, conf=0.001, iou=0.7, plots=False, verbose=False,
                       project=tempfile.mkdtemp(prefix="yoloseg-bench-val-"))
    return float(m.box.map), float(m.seg.map)


@pytest.mark.parametrize("pt", MODELS, ids=lambda p: p.stem)
def test_cpu_backends(pt, data, tmp_path):
    if not pt.exists():
        pytest.skip(f"{pt} not found")
    backends = _exports(pt, tmp_path, data)
    names = list(backends)
    cols = {n: {"t1": [], "tall": [], "b8": [], "rss": []} for n in names}
    for block in range(BLOCKS):
        order = names[block % len(names):] + names[: block % len(names)]
        for n in order:
            kind, p1, p8 = backends[n]
            ms1, _ = _time(kind, p1, 1, 1)
            msa, rss = _time(kind, p1, 0, 1)
            ms8 = _time(kind, p8, 0, 8)[0] if p8 else float("nan")
            cols[n]["t1"].append(ms1), cols[n]["tall"].append(msa), cols[n]["rss"].append(rss)
            cols[n]["b8"].append(8e3 / ms8)
    acc = {n: _val(backends[n][1], data) for n in names}
    med = {n: {k: statistics.median(v) for k, v in c.items()} for n, c in cols.items()}
    ref = med["ort fp32"]
    print(f"\n{pt.name}: CPU inference at {IMGSZ}x{IMGSZ}, {BLOCKS} interleaved blocks x {ROUNDS} rounds "
          f"(data {Path(data).parent.name}: {N_TRAIN} calibration train images, {N_VAL} held-aside val images)")
    print(f"| backend | 1 thread ms (x ORT fp32) | all threads ms (x ORT fp32) | batch 8 img/s | peak RSS MB "
          f"| box mAP50-95 | mask mAP50-95 |")
    print("|---|---|---|---|---|---|---|")
    for n in names:
        m, (bm, sm) = med[n], acc[n]
        print(f"| {n} | {m['t1']:.1f} ({m['t1'] / ref['t1']:.2f}) | {m['tall']:.1f} ({m['tall'] / ref['tall']:.2f}) "
              f"| {m['b8']:.1f} | {m['rss']:.0f} | {bm:.4f} | {sm:.4f} |")
    print("per-block 1-thread ms:", {n: [round(v, 1) for v in cols[n]["t1"]] for n in names})
    print("per-block all-thread ms:", {n: [round(v, 1) for v in cols[n]["tall"]] for n in names})
    for n in names:
        assert med[n]["t1"] > 0 and 0 <= acc[n][1] <= 1
