"""End to end: `yoloseg val` and `yoloseg predict` wall time against Ultralytics' `yolo`, same weights, data,
settings and torch, interleaved in one run; plus the eager forward of each tool's prepared model.

Weights: the trained 3-class fixture yolo11n-seg-synth3-e100.pt (an Ultralytics checkpoint both tools load).
Data: the real photos of ../shared/data/coco_permissive_seg.

* val: its val split (20 photos, 127 instances), labels mapped to the model's 3 classes (class id mod 3:
  the metrics mean nothing, the work is that of a real val run), imgsz=640, batch=16, conf=0.001, iou=0.7,
  plots=False, each tool's default workers (8, capped at the cores by both).
* predict: a folder of 36 photos (all 20 val + the first 16 train photos, by name), imgsz=640, batch=1,
  conf=0.05 (a few dozen masks drawn per photo), save=True (annotated images written).
* threads: "1" runs both commands with OMP_NUM_THREADS=1; "all" leaves it unset, so each tool picks its own
  forward threads (yoloseg: cores - max(1, cores // 4); Ultralytics: min(8, cores - 1)).
* forward: the fused model as each tool's predictor prepares it (layout included), the same 448x640 input,
  at 1 thread and at all cores (torch.set_num_threads in this process, the same for both).

Every wall time is a whole command in a fresh process (interpreter start, imports, model load, data scan,
loop, metrics, files), as a user times it. Rounds alternate the tools (A B A B ...); the report gives the
median of the per-round ratios and each tool's own "Speed:" line (ms per image: preprocess, inference,
postprocess) from its last round.

Run it in an environment with both packages and the same torch (see bench/README.md):

    ../peers-venv/bin/python bench/bench_e2e.py --rounds 3
    ../peers-venv/bin/python -m pytest bench/bench_e2e.py -s        # skips without Ultralytics

Targets: forward <= 1.0x, val wall <= 0.7x and predict wall <= 0.7x Ultralytics', at 1 thread and at all.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "shared"
WEIGHTS = ROOT / "fixtures" / "ultralytics" / "yolo11n-seg-synth3-e100.pt"
DATA = ROOT / "data" / "coco_permissive_seg"
N_PHOTOS = 36
VAL_ARGS = ["imgsz=640", "batch=16", "conf=0.001", "iou=0.7", "plots=False", "save_json=False", "device=cpu"]
PREDICT_ARGS = ["imgsz=640", "batch=1", "conf=0.05", "save=True", "device=cpu"]
SPEED = re.compile(r"Speed: ([\d.]+)ms preprocess, ([\d.]+)ms inference, (?:[\d.]+ms loss, )?([\d.]+)ms postprocess")


def make_case(root: Path) -> dict:
    """A 3-class copy of the val split (images linked, labels class id mod 3) and a folder of N_PHOTOS photos."""
    val = root / "val3"
    (val / "images" / "val").mkdir(parents=True)
    (val / "labels" / "val").mkdir(parents=True)
    for img in sorted((DATA / "images" / "val").glob("*.jpg")):
        (val / "images" / "val" / img.name).symlink_to(img)
        lines = (DATA / "labels" / "val" / f"{img.stem}.txt").read_text().splitlines()
        out = [" ".join([str(int(ln.split()[0]) % 3)] + ln.split()[1:]) for ln in lines if ln.strip()]
        (val / "labels" / "val" / f"{img.stem}.txt").write_text("\n".join(out) + "\n")
    yaml = val / "data.yaml"
    yaml.write_text(f"path: {val}\ntrain: images/val\nval: images/val\nnc: 3\n"
                    "names:\n  0: ellipse\n  1: triangle\n  2: rectangle\n")
    photos = root / "photos"
    photos.mkdir()
    files = sorted((DATA / "images" / "val").glob("*.jpg")) + sorted((DATA / "images" / "train").glob("*.jpg"))
    for img in files[:N_PHOTOS]:
        (photos / img.name).symlink_to(img)
    return {"root": root, "data": yaml, "photos": photos}


def command(tool: str, mode: str, case: dict, tag: str) -> list[str]:
    exe = Path(sys.executable)
    project = case["root"] / "runs" / tool
    common = [f"model={WEIGHTS}", f"project={project}", f"name={mode}{tag}", "exist_ok=True"]
    args = (VAL_ARGS + [f"data={case['data']}"]) if mode == "val" else (PREDICT_ARGS + [f"source={case['photos']}"])
    if tool == "yoloseg":
        return [str(exe), "-m", "yoloseg", mode] + common + args
    return [str(exe.parent / "yolo"), "segment", mode] + common + args


def run(argv: list[str], threads: int | None, cwd: Path) -> tuple[float, tuple | None, str]:
    env = dict(os.environ, YOLO_OFFLINE="1", YOLO_AUTOINSTALL="0", YOLO_CONFIG_DIR=str(cwd / "ultra-cfg"))
    env.pop("OMP_NUM_THREADS", None)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    t = time.perf_counter()
    p = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    out = p.stdout + p.stderr
    if p.returncode:
        raise RuntimeError(f"{' '.join(argv[:4])} failed ({p.returncode}):\n{out[-3000:]}")
    m = SPEED.findall(out)
    return wall, (tuple(float(v) for v in m[-1]) if m else None), out


def forward_times(rounds: int, threads: int) -> tuple[float, float, float]:
    """(ours ms, Ultralytics ms, median ratio): the predict-ready fused models on the same 448x640 input."""
    import torch

    os.environ.update(YOLO_OFFLINE="1", YOLO_AUTOINSTALL="0")
    os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="yoloseg-e2e-ultra-"))
    from ultralytics import YOLO as UYOLO

    from yoloseg.checkpoints import load_checkpoint
    from yoloseg.engine.pipeline import inference_memory_format

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        fmt = inference_memory_format("cpu")
        ours = load_checkpoint(str(WEIGHTS))[0].fuse().eval().to(memory_format=fmt)
        u = UYOLO(str(WEIGHTS))
        u.predict(torch.zeros(1, 3, 448, 640), verbose=False)  # builds its predictor: fused, its own layout
        theirs = u.predictor.model
        x = torch.rand(1, 3, 448, 640, generator=torch.Generator().manual_seed(0))
        xo = x.contiguous(memory_format=fmt)
        a, b = [], []
        with torch.inference_mode():
            for _ in range(2):
                ours(xo), theirs(x)
            for _ in range(rounds):
                t = time.perf_counter()
                ours(xo)
                a.append(time.perf_counter() - t)
                t = time.perf_counter()
                theirs(x)
                b.append(time.perf_counter() - t)
        return statistics.median(a) * 1e3, statistics.median(b) * 1e3, statistics.median(x / y for x, y in zip(a, b))
    finally:
        torch.set_num_threads(before)


def report(rounds: int = 3, thread_settings=(1, None), modes=("val", "predict"), forward_rounds: int = 9) -> list[dict]:
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="yoloseg-e2e-"))
    try:
        case = make_case(tmp)
        for threads in thread_settings:
            fo, fu, fr = forward_times(forward_rounds, threads or cores)
            rows.append(dict(what="forward 448x640", threads=threads or "all", ours=fo, theirs=fu, ratio=fr,
                             speeds=None))
            print(f"forward threads={threads or cores}: yoloseg {fo:.1f} ms, ultralytics {fu:.1f} ms, ratio {fr:.3f}",
                  flush=True)
            for mode in modes:
                walls = {"yoloseg": [], "ultralytics": []}
                speeds = {}
                for r in range(rounds):
                    for tool in ("yoloseg", "ultralytics") if r % 2 == 0 else ("ultralytics", "yoloseg"):
                        wall, speed, _ = run(command(tool, mode, case, f"{threads or 'all'}"), threads, tmp)
                        walls[tool].append(wall)
                        speeds[tool] = speed
                        print(f"{mode} threads={threads or 'all'} round {r}: {tool} {wall:.2f} s, Speed {speed}",
                              flush=True)
                ratios = [a / b for a, b in zip(walls["yoloseg"], walls["ultralytics"])]
                rows.append(dict(what=f"{mode} wall s", threads=threads or "all",
                                 ours=statistics.median(walls["yoloseg"]),
                                 theirs=statistics.median(walls["ultralytics"]), ratio=statistics.median(ratios),
                                 speeds=speeds))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nend to end, {cores} cores, torch {torch.__version__}, {rounds} interleaved rounds per case "
          "(forward: ms, medians; val/predict: whole-command seconds)")
    print(f"{'case':<16} {'threads':>7} {'yoloseg':>9} {'ultralytics':>11} {'ratio':>7}   "
          "Speed ms/img pre/inf/post: yoloseg | ultralytics")
    for r in rows:
        sp = ""
        if r["speeds"]:
            f = [("/".join(f"{v:.1f}" for v in s) if s else "-") for s in (r["speeds"]["yoloseg"],
                                                                            r["speeds"]["ultralytics"])]
            sp = f"{f[0]} | {f[1]}"
        print(f"{r['what']:<16} {r['threads']!s:>7} {r['ours']:>9.2f} {r['theirs']:>11.2f} {r['ratio']:>7.3f}   {sp}")
    print("targets: forward <= 1.0, val wall <= 0.7, predict wall <= 0.7")
    return rows


# ------------------------------------------------------------------------------------------- pytest
pytestmark = pytest.mark.skipif(not (WEIGHTS.exists() and DATA.exists()), reason="no shared fixtures or data")


def test_e2e_report():
    pytest.importorskip("ultralytics")
    rows = report(rounds=3)
    assert all(r["ours"] > 0 and r["theirs"] > 0 for r in rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", default="1,all", help="comma list of 1..N or 'all'")
    ap.add_argument("--modes", default="val,predict")
    args = ap.parse_args()
    ts = tuple(None if t == "all" else int(t) for t in args.threads.split(","))
    report(rounds=args.rounds, thread_settings=ts, modes=tuple(args.modes.split(",")))


if __name__ == "__main__":
    main()
