"""The val/predict execution plan: thread rule, memory format, load and finish stages, and that overlapping the
stages changes neither the Results nor the files nor the metrics."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from yoloseg.data.sources import load_sources
from yoloseg.engine import pipeline
from yoloseg.engine.pipeline import FinishStage, forward_threads, loader_workers, prefetch

SHARED = Path(os.environ.get("YOLOSEG_SHARED", Path(__file__).resolve().parents[2] / "shared"))
COFFEE = SHARED / "fixtures" / "images" / "coffee.png"
SYNTH3 = SHARED / "fixtures" / "ultralytics" / "yolo11n-seg-synth3-e100.pt"
needs_fixtures = pytest.mark.skipif(not (COFFEE.exists() and SYNTH3.exists()), reason="no shared fixtures")


# ------------------------------------------------------------------------------------------- thread rule
def test_forward_threads_rule(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert [forward_threads(n) for n in (1, 2, 3, 4, 8, 16, 64)] == [1, 1, 2, 3, 6, 12, 48]
    monkeypatch.setattr(pipeline, "usable_cores", lambda: 8)
    assert forward_threads() == 6


def test_forward_threads_ignore_load_and_follow_omp_num_threads(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(pipeline, "usable_cores", lambda: 8)
    monkeypatch.setattr(os, "getloadavg", lambda: (50.0, 50.0, 50.0))
    assert forward_threads() == 6  # the machine's load plays no part
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert forward_threads() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "junk")
    assert forward_threads() == 6


def test_thread_plan_sets_and_restores(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    before = torch.get_num_threads()
    with pipeline.thread_plan("cpu") as n:
        assert n == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pipeline.thread_plan("meta") as n:  # not a CPU run: untouched
        assert n is None and torch.get_num_threads() == before


def test_pipeline_threads_do_not_change_the_forward_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen = []
        with FinishStage() as f:
            f.submit(lambda: seen.append(torch.get_num_threads())).result()
        assert seen == [1]  # the finish thread runs single-threaded ...
        assert torch.get_num_threads() == 2  # ... and the caller's count is its own
    finally:
        torch.set_num_threads(before)


def test_loader_workers():
    assert loader_workers(0) == 0 and loader_workers(None) == 0
    assert loader_workers(3, cores=2) == 2 and loader_workers(1, cores=8) == 1
    for bad in (-1, "many"):
        with pytest.raises(ValueError, match="workers"):
            loader_workers(bad)


def test_memory_format_choice(monkeypatch):
    assert pipeline.inference_memory_format("meta") is torch.contiguous_format
    for isa, fmt in (("AVX2", torch.channels_last), ("AVX512", torch.channels_last), ("DEFAULT", torch.contiguous_format),
                     ("NEON", torch.contiguous_format)):
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda isa=isa: isa)
        assert pipeline.inference_memory_format("cpu") is fmt, isa


def test_memory_format_context_restores_a_contiguous_model():
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    with pipeline.memory_format(m, torch.channels_last):
        assert m[0].weight.is_contiguous(memory_format=torch.channels_last) and not m[0].weight.is_contiguous()
    assert m[0].weight.is_contiguous()


# ------------------------------------------------------------------------------------------- stages
def test_finish_stage_keeps_order_and_reports_errors():
    out = []

    def job(i):
        time.sleep(0.002 * (5 - i))
        out.append(i)
        return i * i

    for enabled in (True, False):
        out.clear()
        with FinishStage(enabled=enabled) as f:
            futs = [f.submit(job, i) for i in range(5)]
            assert [x.result() for x in futs] == [0, 1, 4, 9, 16]
            assert out == list(range(5))
            bad = f.submit(lambda: 1 / 0)
            with pytest.raises(ZeroDivisionError):
                bad.result()


def test_finish_stage_runs_beside_the_caller():
    gate = threading.Event()
    with FinishStage() as f:
        fut = f.submit(gate.wait, 5)
        assert not fut.done()  # the caller goes on while the job waits
        gate.set()
        assert fut.result() is True


def test_prefetch_order_errors_and_early_close():
    assert list(prefetch(iter(range(20)), depth=3)) == list(range(20))
    assert list(prefetch(iter(range(5)), enabled=False)) == list(range(5))

    def broken():
        yield 1
        raise ValueError("bad item 2")

    g = prefetch(broken())
    assert next(g) == 1
    with pytest.raises(ValueError, match="bad item 2"):
        next(g)

    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    before = threading.active_count()
    g = prefetch(endless(), depth=2)
    assert [next(g) for _ in range(3)] == [0, 1, 2]
    g.close()
    time.sleep(0.05)
    n = len(produced)
    time.sleep(0.05)
    assert len(produced) == n and n <= 3 + 2 + 1  # stopped, at most depth (+ the item in hand) ahead
    assert threading.active_count() <= before


def _write(path, value):
    cv2.imwrite(str(path), np.full((40, 56, 3), value, np.uint8))


def test_source_decode_pool_gives_the_same_frames(tmp_path, caplog):
    from concurrent.futures import ThreadPoolExecutor

    for i in range(6):
        _write(tmp_path / f"{i}.png", 10 * i)
    (tmp_path / "empty.jpg").write_bytes(b"")
    items = [tmp_path / "0.png", tmp_path / "missing.png", tmp_path / "1.png", np.zeros((8, 8, 3), np.uint8),
             tmp_path / "empty.jpg"] + [tmp_path / f"{i}.png" for i in range(2, 6)]
    src = load_sources([str(p) if isinstance(p, Path) else p for p in items])
    with caplog.at_level(logging.WARNING, logger="yoloseg"):
        plain = list(src)
        skipped = list(src.skipped)
        with ThreadPoolExecutor(3) as pool:
            pooled = list(src.frames(pool=pool, ahead=4))
    assert [(f.path, f.index, f.kind) for f in pooled] == [(f.path, f.index, f.kind) for f in plain]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(plain, pooled))
    assert len(plain) == 7 and [p for p, _ in src.skipped] == [p for p, _ in skipped] and len(skipped) == 2
    _write(tmp_path / "gone.png", 0)
    strict = load_sources(str(tmp_path / "gone.png"))  # a single path: a bad file raises, also when pooled
    (tmp_path / "gone.png").unlink()
    with ThreadPoolExecutor(2) as pool, pytest.raises(FileNotFoundError, match="gone.png"):
        list(strict.frames(pool=pool, ahead=2))


# ------------------------------------------------------------------------------------------- end to end
def _predictor(tmp_path, **kw):
    from yoloseg.checkpoints import load_checkpoint
    from yoloseg.engine.predictor import Predictor

    cfg = dict(imgsz=320, conf=0.05, iou=0.7, max_det=300, device="cpu", batch=1, save=True, save_txt=True,
               verbose=False, retina_masks=False, vid_stride=1, project=str(tmp_path), exist_ok=True)
    cfg.update(kw)
    return Predictor(SimpleNamespace(**cfg), load_checkpoint(str(SYNTH3))[0], None)


@needs_fixtures
@pytest.mark.parametrize("batch", [1, 2])
def test_pipelined_predict_equals_serial(tmp_path, batch):
    img = cv2.imread(str(COFFEE))
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, im in enumerate([img, img[:, ::-1], img[::2], img[50:350, 100:]]):
        cv2.imwrite(str(folder / f"im{i}.png"), np.ascontiguousarray(im))
    (folder / "broken.png").write_bytes(b"not an image")
    runs = {}
    for workers in (0, 1, 3):
        p = _predictor(tmp_path, workers=workers, batch=batch, name=f"w{workers}")
        res = p(str(folder))
        runs[workers] = (res, p.save_dir, p.skipped)
    ref, ref_dir, ref_skipped = runs[0]
    assert [Path(r.path).name for r in ref] == [f"im{i}.png" for i in range(4)]
    assert sum(len(r) for r in ref) > 0 and len(ref_skipped) == 1
    for workers in (1, 3):
        res, d, skipped = runs[workers]
        assert [r.path for r in res] == [r.path for r in ref] and skipped == ref_skipped
        for a, b in zip(res, ref):
            assert torch.equal(a.boxes.data, b.boxes.data)
            assert torch.equal(a.masks.data, b.masks.data)
            assert set(a.speed) == {"preprocess", "inference", "postprocess"}
        files = sorted(p.relative_to(d) for p in d.rglob("*") if p.is_file())
        assert files == sorted(p.relative_to(ref_dir) for p in ref_dir.rglob("*") if p.is_file())
        for f in files:
            if f.suffix == ".txt":
                assert (d / f).read_bytes() == (ref_dir / f).read_bytes()
            else:  # annotated images: the same pixels
                assert np.array_equal(cv2.imread(str(d / f)), cv2.imread(str(ref_dir / f)))


@needs_fixtures
def test_pipelined_predict_stops_cleanly(tmp_path):
    img = cv2.imread(str(COFFEE))
    p = _predictor(tmp_path, workers=2, save=False, save_txt=False)
    before = threading.active_count()
    gen = p([img] * 6, stream=True)
    first = next(gen)
    assert len(first) > 0
    gen.close()  # the load and finish threads end with the generator
    time.sleep(0.1)
    assert threading.active_count() <= before


@needs_fixtures
def test_predict_input_is_channels_last_on_x86(tmp_path):
    from yoloseg.engine.pipeline import inference_memory_format

    p = _predictor(tmp_path, save=False, save_txt=False)
    p.setup_model()
    x = p.preprocess(list(load_sources(str(COFFEE))))
    fmt = inference_memory_format("cpu")
    assert x.dtype == torch.float32 and x.is_contiguous(memory_format=fmt)
    conv = next(m for m in p.net.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=fmt)
    from yoloseg.data.letterbox import LetterBox

    lb, _ = LetterBox(320, auto=True, stride=32)(cv2.imread(str(COFFEE)))
    ref = torch.from_numpy(lb).permute(2, 0, 1).flip(0).float() / 255  # RGB, then /255: the same numbers
    assert torch.equal(x[0], ref)


@needs_fixtures
def test_trainer_style_validation_pipelined_equals_serial(tmp_path, monkeypatch):
    """The trainer's per-epoch call (its loader, the EMA model as it is): channels_last and the finish thread
    during the run, the model's layout and mode restored afterwards, the same metrics as a serial run."""
    from yoloseg.checkpoints import load_checkpoint
    from yoloseg.data import build_dataloader, build_dataset, check_data_yaml
    from yoloseg.data.synthetic import generate_synthetic_shapes
    from yoloseg.engine import validator as vmod

    yaml_path = generate_synthetic_shapes(tmp_path / "ds", n_train=1, n_val=6, imgsz=128, seed=5, max_instances=4)
    data = check_data_yaml(str(yaml_path))
    ds = build_dataset(data, "val", SimpleNamespace(imgsz=128, batch=2), augment=False, batch=2, stride=32)
    loader = build_dataloader(ds, 2, workers=0, shuffle=False)
    model = load_checkpoint(str(SYNTH3))[0].train()
    cfg = SimpleNamespace(conf=0.001, iou=0.7, max_det=300, plots=False, save_json=False, verbose=False,
                          mode="val", imgsz=128, batch=2)
    seen = []
    real = vmod.Validator._finish_batch

    def spy(self, *a):
        seen.append(threading.current_thread() is threading.main_thread())
        return real(self, *a)

    monkeypatch.setattr(vmod.Validator, "_finish_batch", spy)
    piped = vmod.Validator(cfg, dataloader=loader)(model=model)
    assert model.training and all(p.is_contiguous() for p in model.parameters())
    monkeypatch.setattr(vmod, "FinishStage", lambda: FinishStage(enabled=False))
    serial = vmod.Validator(cfg, dataloader=loader)(model=model)
    assert seen == [False] * 3 + [True] * 3  # 3 batches finished beside the forward, then 3 in the main thread
    assert piped.results_dict == serial.results_dict and piped.n_images == 6


def test_memory_format_context_keeps_the_tensors_others_hold():
    """The trainer's EMA caches its parameter tensors and updates them in place after validation."""
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
    held = m[0].weight.data
    with pipeline.memory_format(m, torch.channels_last):
        assert m[0].weight.is_contiguous(memory_format=torch.channels_last)
    held.add_(1.0)  # an in-place update through the held tensor reaches the module
    assert m[0].weight.data.data_ptr() == held.data_ptr() and torch.equal(m[0].weight.data, held)
