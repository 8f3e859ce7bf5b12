"""Training side by side: yoloseg vs Ultralytics on the same synthetic data, from one script run.

Case: synthetic-shapes generated at 320 px (32 train / 16 val images), yolo11n-seg from scratch, imgsz 320,
batch 8, workers 0, CPU, 1 thread, the same settings (optimizer=auto, default augmentation, seed 0) for both.
Reported per framework: seconds per training epoch (median over epochs after the first), seconds per
validation pass (median), and the final mask and box mAP50-95; then short interleaved timing rounds
(3 epochs of ours, 3 of theirs, repeated) give the median epoch-time ratio, which is steadier on a shared
machine than the two long runs. Each framework reports its own mAP; when
the yoloseg validator is available both best.pt files are also scored by it (COCO-exact), which is the
like-for-like number. Ultralytics is skipped cleanly when it is not importable.

    python bench/bench_train.py [--epochs 100] [--threads 1] [--timing-rounds 3] [--skip-theirs]
    pytest bench/bench_train.py -s          # a 3-epoch smoke run of the same comparison

Target (issue 5): our epoch time <= 0.85x theirs; final mask mAP50-95 >= theirs - 0.02.
Run it with the peers venv after `pip install --no-deps /path/to/yoloseg` so both share one torch.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pytest


def _env(threads: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "0")
    os.environ.setdefault("YOLO_VERBOSE", "False")
    if "YOLO_CONFIG_DIR" not in os.environ:
        os.environ["YOLO_CONFIG_DIR"] = tempfile.mkdtemp(prefix="ucfg")


def make_data(root: Path, n_train: int, n_val: int, imgsz: int) -> Path:
    from yoloseg.data.synthetic import generate_synthetic_shapes

    out = root / f"shapes_{n_train}_{n_val}_{imgsz}"
    if not (out / "data.yaml").is_file():
        generate_synthetic_shapes(out, n_train=n_train, n_val=n_val, imgsz=imgsz, seed=0)
    both = out / "data_abs.yaml"  # absolute root: Ultralytics resolves a relative `path` against its own dirs
    text = (out / "data.yaml").read_text().replace("path: .", f"path: {out.resolve()}")
    both.write_text(text)
    return both


def _median_after_first(xs):
    xs = list(xs)
    return statistics.median(xs[1:] if len(xs) > 1 else xs) if xs else float("nan")


def run_ours(data: Path, project: Path, epochs: int, imgsz: int, batch: int, threads: int) -> dict:
    import torch

    from yoloseg.cfg import get_cfg
    from yoloseg.engine.trainer import Trainer

    torch.set_num_threads(threads)
    cfg = get_cfg(dict(model="yolo11n-seg.yaml", data=str(data), epochs=epochs, imgsz=imgsz, batch=batch,
                       workers=0, device="cpu", project=str(project), name="ours", exist_ok=True, seed=0,
                       plots=False, verbose=False))
    t0 = time.perf_counter()
    tr = Trainer(cfg, "segment")
    metrics = tr.train()
    wall = time.perf_counter() - t0
    train_s = [a for a, _ in tr.epoch_times]
    val_s = [b for _, b in tr.epoch_times]
    row = tr.csv_rows[-1] if tr.csv_rows else {}
    return {
        "epoch_s": _median_after_first(train_s), "val_s": _median_after_first(val_s), "wall_s": wall,
        "mask_map": row.get("metrics/mAP50-95(M)"), "mask_map50": row.get("metrics/mAP50(M)"),
        "box_map": row.get("metrics/mAP50-95(B)"), "best": str(tr.best), "metrics": _final(metrics),
        "train_s": train_s, "val_s_all": val_s,
    }


def _final(metrics) -> dict:
    d = getattr(metrics, "results_dict", None)
    return {k: (float(v) if isinstance(v, (int, float)) else v) for k, v in (d or {}).items()}


def run_theirs(data: Path, project: Path, epochs: int, imgsz: int, batch: int, threads: int) -> dict:
    import torch
    from ultralytics import YOLO

    torch.set_num_threads(threads)
    marks: dict[str, list[float]] = {"train": [], "val": []}
    state = {}

    def epoch_start(trainer):
        state["t"] = time.perf_counter()

    def epoch_end(trainer):
        marks["train"].append(time.perf_counter() - state["t"])

    def val_start(validator):
        state["v"] = time.perf_counter()

    def val_end(validator):
        if "v" in state:
            marks["val"].append(time.perf_counter() - state.pop("v"))

    model = YOLO("yolo11n-seg.yaml")
    model.add_callback("on_train_epoch_start", epoch_start)
    model.add_callback("on_train_epoch_end", epoch_end)
    model.add_callback("on_val_start", val_start)
    model.add_callback("on_val_end", val_end)
    t0 = time.perf_counter()
    model.train(data=str(data), epochs=epochs, imgsz=imgsz, batch=batch, workers=0, device="cpu", amp=False,
                project=str(project), name="theirs", exist_ok=True, seed=0, plots=False, verbose=False)
    wall = time.perf_counter() - t0
    tr = model.trainer
    m = tr.metrics or {}
    val_during = marks["val"][: len(marks["train"])]  # the last one is the final best.pt evaluation
    return {
        "epoch_s": _median_after_first(marks["train"]), "val_s": _median_after_first(val_during), "wall_s": wall,
        "mask_map": m.get("metrics/mAP50-95(M)"), "mask_map50": m.get("metrics/mAP50(M)"),
        "box_map": m.get("metrics/mAP50-95(B)"), "best": str(Path(tr.save_dir) / "weights" / "best.pt"),
        "train_s": marks["train"], "val_s_all": marks["val"],
    }


def score_with_our_validator(weights: str, data: Path, imgsz: int) -> dict | None:
    """COCO-exact box/mask mAP of a checkpoint (ours or Ultralytics') by the yoloseg validator."""
    try:
        from yoloseg import YOLO
    except ImportError:
        return None
    try:
        m = YOLO(weights).val(data=str(data), imgsz=imgsz, batch=16, workers=0, device="cpu", plots=False,
                              verbose=False)
    except (ImportError, NotImplementedError) as e:
        print(f"(our validator unavailable: {e})")
        return None
    return {"box_map": float(m.box.map), "box_map50": float(m.box.map50), "mask_map": float(m.seg.map),
            "mask_map50": float(m.seg.map50)}


def have_ultralytics() -> bool:
    """Whether ultralytics is installed (found without importing it: importing writes its settings file)."""
    import importlib.util

    return importlib.util.find_spec("ultralytics") is not None


def compare(epochs: int = 100, threads: int = 1, imgsz: int = 320, batch: int = 8, n_train: int = 32,
            n_val: int = 16, skip_theirs: bool = False, workdir: str | None = None, timing_rounds: int = 3,
            timing_epochs: int = 3) -> dict:
    _env(threads)
    root = Path(workdir or tempfile.mkdtemp(prefix="bench_train_"))
    root.mkdir(parents=True, exist_ok=True)
    data = make_data(root, n_train, n_val, imgsz)
    out = {"case": dict(epochs=epochs, threads=threads, imgsz=imgsz, batch=batch, n_train=n_train, n_val=n_val)}
    out["ours"] = run_ours(data, root / "runs", epochs, imgsz, batch, threads)
    if not skip_theirs and have_ultralytics():
        out["theirs"] = run_theirs(data, root / "runs", epochs, imgsz, batch, threads)
    else:
        print("ultralytics is not importable (or --skip-theirs): yoloseg only")
    for who in ("ours", "theirs"):
        if who in out:
            out[who]["coco_exact"] = score_with_our_validator(out[who]["best"], data, imgsz)
    if "theirs" in out and timing_rounds > 0:
        # the machine is shared: time short runs interleaved (ours, theirs, ours, ...) and take the median
        # of the per-round ratios, which drifts less with the background load than two long runs do
        ratios = []
        for r in range(timing_rounds):
            o = run_ours(data, root / "runs_t", timing_epochs, imgsz, batch, threads)["epoch_s"]
            t = run_theirs(data, root / "runs_t", timing_epochs, imgsz, batch, threads)["epoch_s"]
            ratios.append(o / t)
            print(f"timing round {r + 1}: ours {o:.2f} s/epoch, theirs {t:.2f} s/epoch, ratio {o / t:.3f}")
        out["interleaved_ratio"] = statistics.median(ratios)
        out["interleaved_ratios"] = ratios
    report(out)
    (root / "bench_train.json").write_text(json.dumps(out, indent=1, default=str))
    print(f"details: {root / 'bench_train.json'}")
    return out


def _f(v, nd=4):
    return "n/a" if v is None or v != v else f"{v:.{nd}f}"


def report(out: dict) -> None:
    c = out["case"]
    print(f"\ntrain bench: {c['n_train']} train / {c['n_val']} val images, imgsz {c['imgsz']}, batch {c['batch']}, "
          f"{c['epochs']} epochs, {c['threads']} thread(s), CPU")
    print(f"{'':8s}{'s/epoch':>9s}{'val s':>8s}{'wall s':>8s}{'mask mAP50-95':>15s}{'mask mAP50':>12s}"
          f"{'box mAP50-95':>14s}{'COCO mask mAP50-95':>20s}")
    for who in ("ours", "theirs"):
        r = out.get(who)
        if not r:
            continue
        ce = r.get("coco_exact") or {}
        print(f"{who:8s}{_f(r['epoch_s'], 2):>9s}{_f(r['val_s'], 2):>8s}{_f(r['wall_s'], 0):>8s}"
              f"{_f(r['mask_map']):>15s}{_f(r['mask_map50']):>12s}{_f(r['box_map']):>14s}"
              f"{_f(ce.get('mask_map')):>20s}")
    if "theirs" in out:
        o, t = out["ours"], out["theirs"]
        print(f"epoch time ratio ours/theirs (long runs): {o['epoch_s'] / t['epoch_s']:.3f} (target <= 0.85); "
              f"val time ratio: {o['val_s'] / t['val_s']:.3f}")
        if "interleaved_ratio" in out:
            print(f"epoch time ratio ours/theirs, median of interleaved rounds: {out['interleaved_ratio']:.3f}")


@pytest.mark.skipif(not have_ultralytics(), reason="ultralytics not installed")
def test_bench_train_smoke(tmp_path):
    out = compare(epochs=3, workdir=str(tmp_path), timing_rounds=1)
    assert out["ours"]["epoch_s"] > 0 and out["theirs"]["epoch_s"] > 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--n-train", type=int, default=32)
    p.add_argument("--n-val", type=int, default=16)
    p.add_argument("--skip-theirs", action="store_true")
    p.add_argument("--workdir", default=None)
    p.add_argument("--timing-rounds", type=int, default=3, help="interleaved short timing runs of each")
    p.add_argument("--timing-epochs", type=int, default=3, help="epochs per timing run")
    a = p.parse_args(argv)
    compare(a.epochs, a.threads, a.imgsz, a.batch, a.n_train, a.n_val, a.skip_theirs, a.workdir, a.timing_rounds,
            a.timing_epochs)


if __name__ == "__main__":
    sys.exit(main())
