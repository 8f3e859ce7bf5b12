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
    python bench/bench_train.py --seeds 3 [--datasets synthetic,coco] [--epochs-list 30,100]

Seeds mode: for each data set (synthetic: 64 train / 16 val at 320 from yoloseg's generator with seed 1; coco:
../shared/data/coco_permissive_seg), each epoch count and seeds 0..N-1, both tools train at their defaults
(batch 8, imgsz 320); the table gives mean ± standard deviation over seeds of the final (best.pt) mask and box
mAP50 / mAP50-95 and of the epoch time. Hours long at 30 + 100 epochs: run it by hand, never in CI.
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


def make_data(root: Path, n_train: int, n_val: int, imgsz: int, seed: int = 0) -> Path:
    from yoloseg.data.synthetic import generate_synthetic_shapes

    out = root / (f"shapes_{n_train}_{n_val}_{imgsz}" + (f"_s{seed}" if seed else ""))
    if not (out / "data.yaml").is_file():
        generate_synthetic_shapes(out, n_train=n_train, n_val=n_val, imgsz=imgsz, seed=seed)
    both = out / "data_abs.yaml"  # absolute root: Ultralytics resolves a relative `path` against its own dirs
    text = (out / "data.yaml").read_text().replace("path: .", f"path: {out.resolve()}")
    both.write_text(text)
    return both


def _median_after_first(xs):
    xs = list(xs)
    return statistics.median(xs[1:] if len(xs) > 1 else xs) if xs else float("nan")


def run_ours(data: Path, project: Path, epochs: int, imgsz: int, batch: int, threads: int, seed: int = 0,
             name: str = "ours") -> dict:
    import torch

    from yoloseg.cfg import get_cfg
    from yoloseg.engine.trainer import Trainer

    torch.set_num_threads(threads)
    cfg = get_cfg(dict(model="yolo11n-seg.yaml", data=str(data), epochs=epochs, imgsz=imgsz, batch=batch,
                       workers=0, device="cpu", project=str(project), name=name, exist_ok=True, seed=seed,
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
        "train_s": train_s, "val_s_all": val_s, "final": _final_maps(_final(metrics) or row),
    }


def _final_maps(d: dict) -> dict:
    """Mask/box mAP50 and mAP50-95 from a results dict (the best.pt evaluation at the end of training)."""
    keys = {"mask_map50": "metrics/mAP50(M)", "mask_map": "metrics/mAP50-95(M)",
            "box_map50": "metrics/mAP50(B)", "box_map": "metrics/mAP50-95(B)"}
    return {k: (float(d[v]) if d.get(v) is not None else float("nan")) for k, v in keys.items()}


def _final(metrics) -> dict:
    d = getattr(metrics, "results_dict", None)
    return {k: (float(v) if isinstance(v, (int, float)) else v) for k, v in (d or {}).items()}


def run_theirs(data: Path, project: Path, epochs: int, imgsz: int, batch: int, threads: int, seed: int = 0,
               name: str = "theirs") -> dict:
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
                project=str(project), name=name, exist_ok=True, seed=seed, plots=False, verbose=False)
    wall = time.perf_counter() - t0
    tr = model.trainer
    m = tr.metrics or {}
    val_during = marks["val"][: len(marks["train"])]  # the last one is the final best.pt evaluation
    return {
        "epoch_s": _median_after_first(marks["train"]), "val_s": _median_after_first(val_during), "wall_s": wall,
        "mask_map": m.get("metrics/mAP50-95(M)"), "mask_map50": m.get("metrics/mAP50(M)"),
        "box_map": m.get("metrics/mAP50-95(B)"), "best": str(Path(tr.save_dir) / "weights" / "best.pt"),
        "train_s": marks["train"], "val_s_all": marks["val"], "final": _final_maps(m),
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


# ---------------------------------------------------------------------------------------------- --seeds mode
COCO_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco_permissive_seg"
SEED_DATASETS = ("synthetic", "coco")
SYNTH_SEED = 1  # the synthetic set of the seeds mode: 64 train / 16 val at 320, another seed than the default


def seed_data(name: str, root: Path, imgsz: int) -> Path:
    """data.yaml (absolute root) of a seeds-mode data set: 'synthetic' or 'coco' (../shared/data)."""
    if name == "synthetic":
        return make_data(root, 64, 16, imgsz, seed=SYNTH_SEED)
    if name == "coco":
        src = COCO_DIR / "data.yaml"
        if not src.is_file():
            raise FileNotFoundError(f"{src}: the coco_permissive_seg data set is not there")
        out = root / "coco_permissive_seg_abs.yaml"
        out.write_text(src.read_text().replace("path: .", f"path: {COCO_DIR}", 1))
        return out
    raise ValueError(f"unknown data set {name!r}; choose from {', '.join(SEED_DATASETS)}")


def _mean_std(xs):
    xs = [x for x in xs if x == x]
    if not xs:
        return float("nan"), float("nan")
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def summarize_seeds(runs: list[dict]) -> list[dict]:
    """Per (data set, epochs, tool): mean and standard deviation over seeds of the final maps and epoch time."""
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["data"], r["epochs"], r["tool"]), []).append(r)
    rows = []
    for (data, epochs, tool), rs in groups.items():
        row = {"data": data, "epochs": epochs, "tool": tool, "n": len(rs), "seeds": [r["seed"] for r in rs]}
        for k in ("mask_map50", "mask_map", "box_map50", "box_map", "epoch_s"):
            row[k] = _mean_std([r[k] for r in rs])
        rows.append(row)
    return rows


def report_seeds(rows: list[dict]) -> None:
    def ms(v, nd=3):
        return f"{_f(v[0], nd)}±{_f(v[1], nd)}"

    print(f"\n{'data':10s}{'epochs':>7s} {'tool':7s}{'n':>3s}{'mask mAP50':>16s}{'mask mAP50-95':>16s}"
          f"{'box mAP50':>16s}{'box mAP50-95':>16s}{'s/epoch':>14s}")
    for r in sorted(rows, key=lambda r: (r["data"], r["epochs"], r["tool"] != "ours")):
        print(f"{r['data']:10s}{r['epochs']:>7d} {r['tool']:7s}{r['n']:>3d}{ms(r['mask_map50']):>16s}"
              f"{ms(r['mask_map']):>16s}{ms(r['box_map50']):>16s}{ms(r['box_map']):>16s}{ms(r['epoch_s'], 2):>14s}")
    by = {(r["data"], r["epochs"], r["tool"]): r for r in rows}
    for (data, epochs, tool), o in sorted(by.items()):
        t = by.get((data, epochs, "theirs"))
        if tool != "ours" or t is None:
            continue
        target = t["mask_map"][0] - (t["mask_map"][1] if epochs < 100 else 0.0)
        print(f"{data} {epochs} epochs: ours mask mAP50-95 {_f(o['mask_map'][0])} vs target {_f(target)} "
              f"({'met' if o['mask_map'][0] >= target else 'NOT met'}); epoch time ratio "
              f"{_f(o['epoch_s'][0] / t['epoch_s'][0], 3)} (target <= 0.85)")


def compare_seeds(seeds: int = 3, datasets=SEED_DATASETS, epochs_list=(30, 100), threads: int = 1, imgsz: int = 320,
                  batch: int = 8, skip_theirs: bool = False, workdir: str | None = None) -> dict:
    """Both tools, `seeds` seeds each (0..seeds-1), every data set and epoch count; the two tools alternate run by
    run so the background load hits both alike. Results are written after every run (bench_train_seeds.json)."""
    _env(threads)
    root = Path(workdir or tempfile.mkdtemp(prefix="bench_train_seeds_"))
    root.mkdir(parents=True, exist_ok=True)
    tools = ["ours"] + ([] if skip_theirs or not have_ultralytics() else ["theirs"])
    if len(tools) == 1:
        print("ultralytics is not importable (or --skip-theirs): yoloseg only")
    out = {"case": dict(seeds=seeds, datasets=list(datasets), epochs=list(epochs_list), threads=threads,
                        imgsz=imgsz, batch=batch), "runs": []}
    dest = root / "bench_train_seeds.json"
    for data_name in datasets:
        data = seed_data(data_name, root, imgsz)
        for epochs in epochs_list:
            for seed in range(seeds):
                for tool in tools:
                    run = run_ours if tool == "ours" else run_theirs
                    r = run(data, root / "runs", epochs, imgsz, batch, threads, seed=seed,
                            name=f"{tool}_{data_name}_e{epochs}_s{seed}")
                    out["runs"].append({"data": data_name, "epochs": epochs, "seed": seed, "tool": tool,
                                        "epoch_s": r["epoch_s"], **r["final"]})
                    print(f"{data_name} {epochs} epochs seed {seed} {tool}: " + ", ".join(
                        f"{k} {_f(v)}" for k, v in r["final"].items()) + f", {_f(r['epoch_s'], 2)} s/epoch",
                        flush=True)
                    out["summary"] = summarize_seeds(out["runs"])
                    dest.write_text(json.dumps(out, indent=1, default=str))
    report_seeds(out["summary"])
    print(f"details: {dest}")
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


def test_seeds_summary():
    runs = [{"data": "d", "epochs": 2, "seed": s, "tool": "ours", "epoch_s": 1.0 + s, "mask_map50": 0.1 * s,
             "mask_map": 0.2, "box_map50": float("nan"), "box_map": 0.3} for s in range(3)]
    (row,) = summarize_seeds(runs)
    assert row["n"] == 3 and row["seeds"] == [0, 1, 2]
    assert row["epoch_s"] == (2.0, 1.0) and abs(row["mask_map50"][0] - 0.1) < 1e-12
    assert row["mask_map"][1] == 0.0 and row["box_map50"][0] != row["box_map50"][0]  # all-nan stays nan


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
    p.add_argument("--seeds", type=int, default=0, help="seeds mode: this many seeds (0, 1, ...) per tool, data set "
                   "and epoch count; mean/std of the final maps and epoch time side by side")
    p.add_argument("--datasets", default=",".join(SEED_DATASETS), help="seeds mode: comma-separated data sets")
    p.add_argument("--epochs-list", default="30,100", help="seeds mode: comma-separated epoch counts")
    a = p.parse_args(argv)
    if a.seeds:
        compare_seeds(a.seeds, [d for d in a.datasets.split(",") if d], [int(e) for e in a.epochs_list.split(",")],
                      a.threads, a.imgsz, a.batch, a.skip_theirs, a.workdir)
        return 0
    compare(a.epochs, a.threads, a.imgsz, a.batch, a.n_train, a.n_val, a.skip_theirs, a.workdir, a.timing_rounds,
            a.timing_epochs)


if __name__ == "__main__":
    sys.exit(main())
