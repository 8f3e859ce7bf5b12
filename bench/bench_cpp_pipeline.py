"""Predict latency per image: the C++ pipeline (examples/cpp `predict`) vs `yoloseg predict` vs Ultralytics.

Case: the trained fixture model yolo11n-seg-synth3-e100 on coffee.png (600x400 -> 448x640 input), masks at the
original size (retina_masks=True, what the C++ example reports), iou=0.7, at conf=0.25 (no detection passes: this
model's best score is 0.13) and conf=0.001 (300 detections), with 1 thread and with torch's default thread count.

- C++: `predict MODEL.torchscript coffee.png --repeat N`: letterbox (csrc/pipeline.h) + libtorch forward of the
  TorchScript export + postprocess, each stage timed in the program;
- yoloseg: `YOLO(MODEL.torchscript).predict(image)`, Results.speed (preprocess, inference, postprocess);
- Ultralytics (optional, from the peers' environment: $YOLOSEG_PEERS_PYTHON or ../peers-venv/bin/python):
  `YOLO(synth3.pt).predict(image)` with the same weights, Results.speed.

Every side decodes the photo once before timing. Each round runs the three sides one after the other (fresh
processes, A B C A B C ...), each doing `iters` timed calls per setting after two warm-up calls; ratios are taken
within a round and the median over rounds is reported ("non-inference" = letterbox/preprocess + postprocess).

    python bench/bench_cpp_pipeline.py [--rounds 5] [--iters 20] [--exe path/to/predict]
    pytest bench/bench_cpp_pipeline.py -s

Targets (issue 16): C++ non-inference time <= 0.5x yoloseg's and <= 0.05x Ultralytics'.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "fixtures"
COFFEE = SHARED / "images" / "coffee.png"
SYNTH3 = SHARED / "ultralytics" / "yolo11n-seg-synth3-e100.pt"
WORKER = Path(__file__).resolve().parent / "tools" / "predict_worker.py"
CONFS = (0.25, 0.001)


def default_threads() -> int:
    import torch

    return torch.get_num_threads()


def build_example(build_dir: Path) -> Path:
    """Configure and build examples/cpp against the installed torch (incremental when build_dir exists)."""
    import torch

    torch_dir = Path(torch.utils.cmake_prefix_path) / "Torch"
    gen = ["-G", "Ninja"] if shutil.which("ninja") and not (build_dir / "Makefile").exists() else []
    subprocess.run(["cmake", "-S", str(ROOT / "examples" / "cpp"), "-B", str(build_dir), *gen,
                    "-DCMAKE_BUILD_TYPE=Release", f"-DTorch_DIR={torch_dir}"], check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(build_dir), "--parallel", "1"], check=True, capture_output=True)
    return build_dir / "predict"


def export_torchscript(folder: Path) -> Path:
    from yoloseg import YOLO

    pt = folder / SYNTH3.name
    shutil.copyfile(SYNTH3, pt)
    return Path(YOLO(str(pt)).export(format="torchscript", imgsz=640, dynamic=True, verbose=False))


def peers_python() -> str | None:
    p = os.environ.get("YOLOSEG_PEERS_PYTHON") or str(ROOT.parent / "peers-venv" / "bin" / "python")
    if not Path(p).exists():
        return None
    ok = subprocess.run([p, "-c", "import ultralytics"], capture_output=True).returncode == 0
    return p if ok else None


def run_cpp(exe: Path, model: Path, conf: float, threads: int, iters: int) -> dict:
    r = subprocess.run([str(exe), str(model), str(COFFEE), "--conf", str(conf), "--iou", "0.7", "--threads",
                        str(threads), "--repeat", str(iters), "--out", ""], capture_output=True, text=True, check=True)
    t = json.loads(r.stderr.strip().splitlines()[-1])
    return {"preprocess": t["letterbox_ms"], "inference": t["inference_ms"], "postprocess": t["postprocess_ms"],
            "detections": len(json.loads(r.stdout))}


def run_python(python: str, impl: str, model: Path, configs, iters: int) -> dict:
    spec = ",".join(f"{c}:{t}" for c, t in configs)
    env = dict(os.environ)
    if impl == "ultralytics":
        env.pop("PYTHONPATH", None)
    r = subprocess.run([python, str(WORKER), impl, str(model), str(COFFEE), "--configs", spec, "--iters", str(iters)],
                       capture_output=True, text=True, check=True, env=env)
    out = {}
    for line in r.stdout.splitlines():
        if line.startswith("{"):
            d = json.loads(line)
            out[(d["conf"], d["threads"])] = d
    return out


def _med(d: dict, keys) -> float:
    return statistics.median([sum(v) for v in zip(*(d[k] for k in keys))])


def ratio_report(rounds: int = 5, iters: int = 20, exe: Path | None = None) -> list[dict]:
    work = Path(tempfile.mkdtemp(prefix="yoloseg-bench-cpp-"))
    try:
        exe = exe or build_example(Path(tempfile.gettempdir()) / "yoloseg-bench-predict-build")
        ts = export_torchscript(work)
        peers = peers_python()
        configs = [(c, t) for c in CONFS for t in sorted({1, default_threads()})]
        per = {cfg: {"cpp": [], "yoloseg": [], "ultralytics": []} for cfg in configs}
        for _ in range(rounds):
            cpp = {cfg: run_cpp(exe, ts, cfg[0], cfg[1], iters) for cfg in configs}
            ys = run_python(sys.executable, "yoloseg", ts, configs, iters)
            ul = run_python(peers, "ultralytics", SYNTH3, configs, iters) if peers else {}
            for cfg in configs:
                per[cfg]["cpp"].append(cpp[cfg])
                per[cfg]["yoloseg"].append(ys[cfg])
                if cfg in ul:
                    per[cfg]["ultralytics"].append(ul[cfg])
        rows = []
        non_inf, total = ("preprocess", "postprocess"), ("preprocess", "inference", "postprocess")
        for cfg in configs:
            p = per[cfg]
            row = {"conf": cfg[0], "threads": cfg[1], "detections": {k: v[0]["detections"] for k, v in p.items() if v}}
            for side, runs in p.items():
                if runs:
                    for stage in total:
                        row[f"{side}_{stage}_ms"] = statistics.median(statistics.median(r[stage]) for r in runs)
                    row[f"{side}_non_inference_ms"] = statistics.median(_med(r, non_inf) for r in runs)
                    row[f"{side}_total_ms"] = statistics.median(_med(r, total) for r in runs)
            for ref in ("yoloseg", "ultralytics"):
                if p[ref]:
                    row[f"non_inference_vs_{ref}"] = statistics.median(
                        _med(a, non_inf) / _med(b, non_inf) for a, b in zip(p["cpp"], p[ref]))
                    row[f"total_vs_{ref}"] = statistics.median(
                        _med(a, total) / _med(b, total) for a, b in zip(p["cpp"], p[ref]))
            rows.append(row)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _print(rows, rounds, iters)
    return rows


def _print(rows, rounds, iters):
    print(f"\nper-image latency, coffee.png 600x400 -> 448x640, synth3, retina masks ({rounds} interleaved rounds x "
          f"{iters} calls, medians; ms)")
    sides = [s for s in ("cpp", "yoloseg", "ultralytics") if f"{s}_total_ms" in rows[0]]
    head = f"{'conf':>6} {'thr':>3} {'side':>11} {'dets':>4} {'letterbox':>9} {'infer':>7} {'post':>7} {'non-inf':>7}"
    print(head + f" {'total':>7}")
    for r in rows:
        for s in sides:
            print(f"{r['conf']:>6} {r['threads']:>3} {s:>11} {r['detections'][s]:>4} {r[f'{s}_preprocess_ms']:>9.2f} "
                  f"{r[f'{s}_inference_ms']:>7.1f} {r[f'{s}_postprocess_ms']:>7.2f} "
                  f"{r[f'{s}_non_inference_ms']:>7.2f} {r[f'{s}_total_ms']:>7.1f}")
        ratios = [f"{k} {r[k]:.3f}" for k in ("non_inference_vs_yoloseg", "non_inference_vs_ultralytics",
                                                "total_vs_yoloseg", "total_vs_ultralytics") if k in r]
        print("       C++ / other (same-round medians): " + ", ".join(ratios))
    print("targets: non_inference_vs_yoloseg <= 0.5, non_inference_vs_ultralytics <= 0.05")


# ------------------------------------------------------------------------------------------- pytest
pytestmark = pytest.mark.skipif(
    not (COFFEE.exists() and SYNTH3.exists() and shutil.which("cmake")), reason="no shared fixtures or no cmake"
)


def test_ratio_report():
    rows = ratio_report(rounds=3, iters=10)
    assert {r["detections"]["cpp"] for r in rows if r["conf"] == 0.001} == {300}
    assert all(r["detections"]["cpp"] == r["detections"]["yoloseg"] for r in rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--exe", type=Path, default=None, help="a built examples/cpp predict (default: build one)")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args()
    rows = ratio_report(args.rounds, args.iters, args.exe)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=str))


if __name__ == "__main__":
    main()
