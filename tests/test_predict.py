"""Prediction pipeline: letterbox geometry, sources and bad input, batching, streaming, outputs."""

from __future__ import annotations

import logging
import os
import types
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from yoloseg.data.letterbox import LetterBox, unpad_region
from yoloseg.data.sources import load_sources

SHARED = Path(os.environ.get("YOLOSEG_SHARED", Path(__file__).resolve().parents[2] / "shared"))
COFFEE = SHARED / "fixtures" / "images" / "coffee.png"
SYNTH3 = SHARED / "fixtures" / "ultralytics" / "yolo11n-seg-synth3-e100.pt"
needs_fixtures = pytest.mark.skipif(not (COFFEE.exists() and SYNTH3.exists()), reason="no shared fixtures")


# ---------------------------------------------------------------------------------------------- letterbox
def test_letterbox_coffee_geometry():
    img = np.zeros((400, 600, 3), np.uint8)
    out, (r, (pw, ph)) = LetterBox(640)(img)
    assert out.shape == (448, 640, 3) and r == pytest.approx(640 / 600) and (pw, ph) == (0, 10)
    assert (out[:10] == 114).all() and (out[437:] == 114).all() and (out[10:437] == 0).all()  # 10 top, 11 bottom
    out, _ = LetterBox(640, auto=False)(img)
    assert out.shape == (640, 640, 3)
    out, (r, _) = LetterBox(640, scaleup=False, auto=False)(np.zeros((100, 50, 3), np.uint8))
    assert r == 1.0 and out.shape == (640, 640, 3)
    out, _ = LetterBox((320, 480), auto=False)(img)
    assert out.shape == (320, 480, 3)


@pytest.mark.parametrize("seed", range(5))
def test_letterbox_stride_and_inverse(seed):
    rng = np.random.default_rng(seed)
    h, w = (int(v) for v in rng.integers(1, 1500, 2))
    img = np.zeros((h, w), np.uint8)
    img[h // 4 : h // 2 + 1, w // 4 : w // 2 + 1] = 255
    out, (r, (pw, ph)) = LetterBox(640, auto=True, stride=32)(img)
    assert out.shape[0] % 32 == 0 and out.shape[1] % 32 == 0 and max(out.shape) == 640
    gy, gx, top, left, nh, nw = unpad_region(out.shape, (h, w))
    assert (top, left) == (ph, pw) and abs(gx - r) < 1 / w + 1e-9 and abs(gy - r) < 1 / h + 1e-9
    assert (out[:top] == 114).all() and (out[top + nh :] == 114).all()


def test_letterbox_bad_input():
    with pytest.raises(ValueError):
        LetterBox(640)(np.zeros((0, 10, 3), np.uint8))
    with pytest.raises(ValueError):
        LetterBox("big")


# ---------------------------------------------------------------------------------------------- sources
def _write_img(path, h=48, w=64, value=90):
    img = np.full((h, w, 3), value, np.uint8)
    cv2.imwrite(str(path), img)
    return img


def _write_video(path, n=7, h=64, w=96):
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (w, h))
    assert vw.isOpened()
    for i in range(n):
        vw.write(np.full((h, w, 3), 20 * i, np.uint8))
    vw.release()


def test_sources_kinds(tmp_path):
    for name in ("b.jpg", "a.png", "c.bmp"):
        _write_img(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    folder = [f.path for f in load_sources(tmp_path)]
    assert [Path(p).name for p in folder] == ["a.png", "b.jpg", "c.bmp"]  # sorted, non-media ignored
    assert [Path(f.path).name for f in load_sources(str(tmp_path / "*.jpg"))] == ["b.jpg"]
    assert len(list(load_sources([tmp_path / "a.png", str(tmp_path / "b.jpg")]))) == 2
    arr = np.zeros((30, 40, 3), np.uint8)
    (f,) = list(load_sources(arr))
    assert f.image.shape == (30, 40, 3) and f.path == "image0.jpg"
    assert list(load_sources(np.zeros((30, 40), np.uint8)))[0].image.shape == (30, 40, 3)
    assert list(load_sources(np.zeros((30, 40, 4), np.uint8)))[0].image.shape == (30, 40, 3)
    assert len(list(load_sources([arr, arr]))) == 2
    from PIL import Image

    pil = Image.fromarray(np.dstack([np.full((5, 6), 200, np.uint8), np.zeros((5, 6), np.uint8), np.zeros((5, 6), np.uint8)]))
    (f,) = list(load_sources(pil))
    assert f.image[0, 0].tolist() == [0, 0, 200]  # RGB red -> BGR
    t = torch.zeros(2, 3, 32, 32)
    t[:, 0] = 1.0  # red
    frames = list(load_sources(t))
    assert len(frames) == 2 and frames[0].image[0, 0].tolist() == [0, 0, 255] and frames[0].tensor.shape == (3, 32, 32)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        load_sources(t * 255)
    with pytest.raises(ValueError, match="dtype"):
        load_sources(np.zeros((5, 5, 3), np.float32))
    with pytest.raises(ValueError, match="unsupported source type"):
        load_sources(3.5)


def test_video_frames_and_stride(tmp_path):
    v = tmp_path / "clip.mp4"
    _write_video(v, n=7)
    frames = list(load_sources(v))
    assert len(frames) == 7 and [f.frame for f in frames] == list(range(1, 8)) and frames[0].kind == "video"
    s = load_sources(v, vid_stride=3)
    got = list(s)
    assert [f.frame for f in got] == [1, 4, 7] and s.count_frames() == 3
    means = [float(f.image.mean()) for f in got]
    assert means[0] < means[1] < means[2]  # frames 0, 60, 120 grey levels, in order


def test_bad_inputs_strict(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        load_sources(tmp_path / "missing.jpg")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.jpg"):
        list(load_sources(empty))
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    with pytest.raises(ValueError, match="corrupt.png"):
        list(load_sources(corrupt))
    odd = tmp_path / "data.xyz"
    odd.write_bytes(b"123")
    with pytest.raises(ValueError, match="data.xyz"):
        load_sources(odd)
    badvid = tmp_path / "broken.mp4"
    badvid.write_bytes(os.urandom(500))
    with pytest.raises(ValueError, match="broken.mp4"):
        list(load_sources(badvid))
    with pytest.raises(FileNotFoundError, match="nothing"):
        load_sources(str(tmp_path / "nothing*.jpg"))
    (tmp_path / "sub").mkdir()
    with pytest.raises(FileNotFoundError, match="sub"):
        load_sources(tmp_path / "sub")


def test_folder_skips_bad_files(tmp_path, caplog):
    _write_img(tmp_path / "a.jpg")
    (tmp_path / "b.jpg").write_bytes(b"")
    (tmp_path / "c.png").write_bytes(b"not a png at all")
    (tmp_path / "d.mp4").write_bytes(os.urandom(300))
    _write_img(tmp_path / "e.jpg")
    src = load_sources(tmp_path)
    with caplog.at_level(logging.WARNING, logger="yoloseg"):
        names = [Path(f.path).name for f in src]
    assert names == ["a.jpg", "e.jpg"]
    assert sorted(Path(p).name for p, _ in src.skipped) == ["b.jpg", "c.png", "d.mp4"]
    assert "b.jpg" in caplog.text and "c.png" in caplog.text and "d.mp4" in caplog.text
    lst = load_sources([tmp_path / "a.jpg", tmp_path / "gone.jpg", tmp_path / "c.png"])
    assert [Path(f.path).name for f in lst] == ["a.jpg"] and len(lst.skipped) == 2


def test_url_sources(tmp_path):
    import http.server
    import threading

    _write_img(tmp_path / "remote.jpg", value=33)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(tmp_path), **k)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/remote.jpg"
        (f,) = list(load_sources(url))
        assert f.path == url and f.image.shape == (48, 64, 3) and abs(float(f.image.mean()) - 33) < 2
        missing = f"http://127.0.0.1:{srv.server_address[1]}/nope.jpg"
        with pytest.raises(ConnectionError, match="nope.jpg"):
            list(load_sources(missing))
    finally:
        srv.shutdown()
        srv.server_close()
    with pytest.raises(ConnectionError, match="127.0.0.1:9"):
        list(load_sources("http://127.0.0.1:9/x.jpg"))


# ---------------------------------------------------------------------------------------------- predictor
_SYNTH = {}


def _synth3():
    if "m" not in _SYNTH:
        from yoloseg.checkpoints import load_checkpoint

        _SYNTH["m"] = load_checkpoint(SYNTH3)[0]
    return _SYNTH["m"]


def _pred(tmp_path=None, model=None, **kw):
    from yoloseg.engine.predictor import Predictor

    cfg = dict(imgsz=640, conf=0.05, iou=0.7, max_det=300, device="cpu", batch=1, save=False, save_txt=False,
               verbose=False, retina_masks=False, vid_stride=1)
    if tmp_path is not None:
        cfg["project"] = str(tmp_path / "runs")
    cfg.update(kw)
    return Predictor(SimpleNamespace(**cfg), model if model is not None else _synth3(), None)


def _tiny_model():
    from yoloseg.nn import build_model

    torch.manual_seed(0)
    m = build_model("yolo11n-seg.yaml", nc=3).eval()
    m.names = {0: "a", 1: "b", 2: "c"}
    return m


@needs_fixtures
def test_predict_coffee_outputs(tmp_path):
    coffee = cv2.imread(str(COFFEE))
    p = _pred(tmp_path, save=True, save_txt=True, save_conf=True)
    (r,) = p(str(COFFEE))
    assert len(r) == 4 and r.masks.data.shape == (4, 448, 640) and r.orig_shape == (400, 600)
    assert set(r.speed) == {"preprocess", "inference", "postprocess"} and all(v > 0 for v in r.speed.values())
    d = tmp_path / "runs" / "predict"
    assert p.save_dir == d and (d / "coffee.png").is_file()
    saved = cv2.imread(str(d / "coffee.png"))
    assert saved.shape == coffee.shape and not np.array_equal(saved, coffee)
    lines = (d / "labels" / "coffee.txt").read_text().splitlines()
    assert len(lines) == 4 and all(float(ln.split()[-1]) >= 0.05 for ln in lines)
    # same polygon text as Results.save_txt (one oracle for both is the file format: cls, pairs, conf)
    assert all((len(ln.split()) - 2) % 2 == 0 for ln in lines)
    # a second run gets a new folder; exist_ok and name reuse one
    _pred(tmp_path, save=True)(str(COFFEE))
    assert (tmp_path / "runs" / "predict2" / "coffee.png").is_file()
    p3 = _pred(tmp_path, save=True, name="predict", exist_ok=True)
    p3(str(COFFEE))
    assert p3.save_dir == d


@needs_fixtures
def test_retina_masks_and_filters():
    (base,) = _pred()(str(COFFEE))
    (ret,) = _pred(retina_masks=True)(str(COFFEE))
    assert ret.masks.data.shape == (len(ret), 400, 600)
    np.testing.assert_allclose(ret.boxes.xyxy.numpy(), base.boxes.xyxy.numpy(), atol=1e-3)
    # the native mask and the letterbox mask describe the same object
    from yoloseg.data.letterbox import unpad_region

    _, _, top, left, nh, nw = unpad_region((448, 640), (400, 600))
    for a, b in zip(base.masks.data.numpy(), ret.masks.data.numpy()):
        up = cv2.resize(a[top : top + nh, left : left + nw].astype(np.uint8), (600, 400), cv2.INTER_NEAREST) > 0
        assert (up & b).sum() / (up | b).sum() > 0.9
    (only2,) = _pred(classes=[2])(str(COFFEE))
    assert len(only2) >= 1 and (only2.boxes.cls == 2).all()
    (few,) = _pred(max_det=2)(str(COFFEE))
    assert len(few) == 2
    (agn,) = _pred(agnostic_nms=True)(str(COFFEE))
    assert len(agn) <= len(base)


@needs_fixtures
def test_tensor_and_array_sources_match_path():
    (ref,) = _pred()(str(COFFEE))
    img = cv2.imread(str(COFFEE))
    (arr,) = _pred()(img)
    np.testing.assert_allclose(arr.boxes.data.numpy(), ref.boxes.data.numpy(), atol=1e-4)
    lb, _ = LetterBox(640)(img)
    t = torch.from_numpy(lb[..., ::-1].copy()).permute(2, 0, 1).float() / 255
    (ten,) = _pred()(t)
    assert ten.orig_shape == (448, 640) and len(ten) == len(ref)
    ref_lb = ref.boxes.xyxy.numpy() * np.array([640 / 600, 427 / 400] * 2) + np.array([0, 10, 0, 10])  # 600x400 -> 640x427, 10 rows on top
    np.testing.assert_allclose(ten.boxes.xyxy.numpy(), ref_lb, atol=0.05)
    with pytest.raises(ValueError, match="multiple of the model stride"):
        _pred()(torch.rand(1, 3, 100, 100))


@needs_fixtures
def test_batching_matches_single():
    img = cv2.imread(str(COFFEE))
    single = _pred()([img, img[:, ::-1].copy()])
    batched = _pred(batch=2)([img, img[:, ::-1].copy()])
    assert len(single) == len(batched) == 2
    for a, b in zip(single, batched):
        assert len(a) == len(b)
        np.testing.assert_allclose(a.boxes.data.numpy(), b.boxes.data.numpy(), atol=1e-3)
    # different sizes in one batch: padded to the full imgsz, still one Results per image
    mixed = _pred(batch=2)([img, img[:200]])
    assert [r.orig_shape for r in mixed] == [(400, 600), (200, 600)]


def test_stream_is_lazy_and_half_on_cpu(tmp_path, caplog):
    _write_img(tmp_path / "a.jpg")
    _write_img(tmp_path / "b.jpg")
    p = _pred(model=_tiny_model(), imgsz=64, half=True, conf=0.25)
    gen = p([tmp_path / "a.jpg", tmp_path / "missing.jpg", tmp_path / "b.jpg"], stream=True)
    assert isinstance(gen, types.GeneratorType)
    with caplog.at_level(logging.WARNING, logger="yoloseg"):
        first = next(gen)
        assert "missing.jpg" not in caplog.text  # the second source is not touched before it is needed
        rest = list(gen)
    assert Path(first.path).name == "a.jpg" and [Path(r.path).name for r in rest] == ["b.jpg"]
    assert "missing.jpg" in caplog.text and "half=True needs a CUDA device" in caplog.text
    assert p.skipped and "missing.jpg" in p.skipped[0][0]


def test_video_predict_saves_video(tmp_path):
    v = tmp_path / "clip.mp4"
    _write_video(v, n=6)
    p = _pred(tmp_path, model=_tiny_model(), imgsz=64, save=True, save_txt=True, conf=0.25, vid_stride=2)
    results = p(str(v))
    assert len(results) == 3 and all(r.orig_shape == (64, 96) for r in results)
    out = p.save_dir / "clip.mp4"
    cap = cv2.VideoCapture(str(out))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    assert n == 3


def test_predictor_does_not_modify_model():
    m = _tiny_model()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    _pred(model=m, imgsz=64)(np.zeros((40, 50, 3), np.uint8))
    after = m.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_nonempty_matches_any():
    from yoloseg.engine.predictor import _nonempty

    g = torch.Generator().manual_seed(0)
    for shape in [(7, 16, 24), (5, 3, 5), (0, 8, 8), (4, 448, 640)]:
        m = torch.rand(shape, generator=g) > 0.9995
        if shape[0] > 2:
            m[1] = False
            m[2] = False
            m[2, -1, -1] = True  # last pixel only
        assert torch.equal(_nonempty(m), m.flatten(1).any(1) if shape[0] else torch.zeros(0, dtype=torch.bool))
        if shape[0] > 1:
            assert torch.equal(_nonempty(m[1:]), m[1:].flatten(1).any(1))


def test_nonempty_box_window_matches_full_scan():
    from yoloseg import ops
    from yoloseg.engine.predictor import _nonempty

    g = torch.Generator().manual_seed(1)
    n, h, w = 64, 96, 128
    protos = torch.randn(32, h // 4, w // 4, generator=g)
    coeffs = torch.randn(n, 32, generator=g) * 0.3 - 0.2  # many masks come out empty
    xy = torch.rand(n, 2, generator=g) * torch.tensor([w, h])
    wh = torch.rand(n, 2, generator=g) * 30
    boxes = torch.cat([xy - wh / 2, xy + wh / 2], 1)  # some partly outside, some tiny
    boxes[0] = torch.tensor([10.0, 10.0, 10.0, 10.0])  # zero area
    masks = ops.process_mask(protos, coeffs, boxes, (h, w), upsample=True)
    full = masks.flatten(1).any(1)
    assert 0 < int(full.sum()) < n
    assert torch.equal(_nonempty(masks, boxes), full)


@needs_fixtures
def test_save_crop_writes_each_box_of_the_original_image(tmp_path):
    coffee = cv2.imread(str(COFFEE))
    p = _pred(tmp_path, save_crop=True)
    (r,) = p(str(COFFEE))
    d = p.save_dir / "crops"
    files = sorted(d.rglob("*.jpg"))
    assert len(files) == len(r) == 4
    for i, (box, c) in enumerate(zip(r.boxes.xyxy.tolist(), r.boxes.cls.int().tolist())):
        path = d / r.names[c] / f"coffee_{i}.jpg"
        crop = cv2.imread(str(path))
        x1, y1, x2, y2 = int(np.floor(box[0])), int(np.floor(box[1])), int(np.ceil(box[2])), int(np.ceil(box[3]))
        x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, 600), min(y2, 400)
        assert crop.shape == (y2 - y1, x2 - x1, 3)
        # JPEG is lossy: the crop must look like the source region, not like any other part
        assert np.abs(crop.astype(int) - coffee[y1:y2, x1:x2].astype(int)).mean() < 6
    assert not (p.save_dir / "coffee.png").exists()  # save_crop alone writes crops only


def test_show_without_a_display_warns_and_still_predicts(tmp_path, caplog):
    import logging

    p = _pred(tmp_path, model=_tiny_model(), imgsz=64, show=True, conf=0.25)
    with caplog.at_level(logging.WARNING):
        results = p(np.zeros((64, 96, 3), np.uint8))
    assert len(results) == 1
    assert "show=True needs OpenCV with GUI support" in caplog.text


def test_save_frames_writes_each_annotated_video_frame(tmp_path):
    v = tmp_path / "clip.mp4"
    _write_video(v, n=6)
    p = _pred(tmp_path, model=_tiny_model(), imgsz=64, save=False, save_frames=True, conf=0.25, vid_stride=2)
    results = p(str(v))
    frames = sorted((p.save_dir / "clip_frames").glob("clip_*.jpg"))
    assert len(frames) == len(results) == 3
    assert all(cv2.imread(str(f)).shape == (64, 96, 3) for f in frames)
    assert not (p.save_dir / "clip.mp4").exists()  # save=False: frames only
