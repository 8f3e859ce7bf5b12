"""Bad data never crashes a long job: one test per kind of bad label line and bad image. Label lines are
reported per file and the instance dropped, or clipped and kept; images are skipped (train/val scan) or
refused with a clear error (predict), or decoded when they are merely unusual (16-bit, CMYK, grayscale)."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from yoloseg.data.labels import check_image, parse_label_file, scan_labels
from yoloseg.data.sources import read_image

SQUARE = "0.1 0.1 0.4 0.1 0.4 0.4 0.1 0.4"


def _parse(tmp_path, text, nc=3):
    p = tmp_path / "x.txt"
    p.write_text(text)
    classes, polys, msgs, _ = parse_label_file(str(p), nc)
    return classes, polys, msgs


@pytest.mark.parametrize(
    "line, message",
    [
        ("0 nan 0.1 0.4 0.1 0.4 0.4", "non-finite coordinate"),
        ("0 inf 0.1 0.4 0.1 0.4 0.4", "non-finite coordinate"),
        ("0 -inf 0.1 0.4 0.1 0.4 0.4", "non-finite coordinate"),
        (f"nan {SQUARE}", "unknown class id nan"),
        (f"inf {SQUARE}", "unknown class id inf"),
        (f"1e30 {SQUARE}", "unknown class id 1e30"),
        (f"-1 {SQUARE}", "unknown class id -1"),
        (f"3 {SQUARE}", "unknown class id 3 (valid 0..2)"),
        (f"0.5 {SQUARE}", "unknown class id 0.5"),
        ("0 0.1 0.1 0.4 0.1 0.4", "odd number of coordinates (5)"),
        ("0 0.1 0.1 0.4 x 0.4 0.4", "non-numeric value"),
    ],
)
def test_bad_label_line_drops_the_instance_and_says_why(tmp_path, line, message):
    classes, polys, msgs = _parse(tmp_path, f"{line}\n1 {SQUARE}\n")
    assert classes == [1] and len(polys) == 1  # the good line of the same file is kept
    assert any(message in m and "line 1" in m for m in msgs), msgs


@pytest.mark.parametrize("value", ["1e30", "-1e30", "1.5", "-0.5"])
def test_out_of_range_coordinate_is_clipped_and_kept(tmp_path, value):
    classes, polys, msgs = _parse(tmp_path, f"0 0.1 0.1 {value} 0.1 0.4 0.4\n")
    assert classes == [0]
    assert polys[0].min() >= 0 and polys[0].max() <= 1 and np.isfinite(polys[0]).all()
    assert any("outside [0, 1]" in m and "clipped" in m for m in msgs), msgs


def test_polygon_with_100k_points_is_kept(tmp_path):
    t = np.linspace(0, 2 * np.pi, 100_000, endpoint=False)
    pts = np.stack([0.5 + 0.4 * np.cos(t), 0.5 + 0.4 * np.sin(t)], 1)
    classes, polys, msgs = _parse(tmp_path, "2 " + " ".join(f"{v:.6f}" for v in pts.ravel()) + "\n")
    assert classes == [2] and polys[0].shape == (100_000, 2) and msgs == []


# ------------------------------------------------------------------------------------------ images


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _jpeg(img) -> bytes:
    return cv2.imencode(".jpg", img)[1].tobytes()


RNG = np.random.default_rng(0)
COLOR = RNG.integers(0, 255, (48, 64, 3), dtype=np.uint8)


def test_zero_byte_image_is_skipped_and_refused_by_predict(tmp_path):
    p = _write(tmp_path / "a.jpg", b"")
    shape, problem, _ = check_image(str(p))
    assert shape is None and "0 bytes" in problem
    with pytest.raises(ValueError, match="0 bytes"):
        read_image(p)


def test_truncated_image_is_reported(tmp_path):
    data = _jpeg(COLOR)
    p = _write(tmp_path / "a.jpg", data[: len(data) // 2])
    shape, problem, warn = check_image(str(p))
    assert (shape == (48, 64) and "truncated" in warn) or "corrupt" in problem
    png = cv2.imencode(".png", COLOR)[1].tobytes()
    q = _write(tmp_path / "b.png", png[: len(png) // 2])
    shape, problem, _ = check_image(str(q))
    assert shape is None and "cannot be decoded" in problem
    with pytest.raises(ValueError, match="cannot decode"):
        read_image(q)


def test_one_pixel_image_is_skipped(tmp_path):
    p = _write(tmp_path / "a.png", cv2.imencode(".png", COLOR[:1, :1])[1].tobytes())
    shape, problem, _ = check_image(str(p))
    assert shape is None and "1x1 is too small" in problem
    assert read_image(p).shape == (1, 1, 3)  # predict takes it as it is


@pytest.mark.parametrize("kind", ["16-bit", "grayscale", "grayscale-16-bit", "bgra"])
def test_unusual_images_decode_to_8_bit_bgr(tmp_path, kind):
    img = {
        "16-bit": (COLOR.astype(np.uint16) * 257),
        "grayscale": COLOR[..., 0],
        "grayscale-16-bit": COLOR[..., 0].astype(np.uint16) * 257,
        "bgra": np.dstack([COLOR, COLOR[..., :1]]),
    }[kind]
    p = _write(tmp_path / "a.png", cv2.imencode(".png", img)[1].tobytes())
    shape, problem, _ = check_image(str(p))
    assert shape == (48, 64) and problem is None
    out = read_image(p)
    assert out.dtype == np.uint8 and out.shape == (48, 64, 3)


def test_cmyk_jpeg_decodes(tmp_path):
    from PIL import Image

    p = tmp_path / "a.jpg"
    Image.fromarray(COLOR[..., ::-1].copy()).convert("CMYK").save(p, "JPEG")
    shape, problem, _ = check_image(str(p))
    assert shape == (48, 64) and problem is None
    out = read_image(p)
    assert out.dtype == np.uint8 and out.shape == (48, 64, 3)


def test_scan_skips_bad_images_and_keeps_the_rest(tmp_path):
    img_dir, lb_dir = tmp_path / "images" / "train", tmp_path / "labels" / "train"
    img_dir.mkdir(parents=True)
    lb_dir.mkdir(parents=True)
    files = {
        "good.jpg": _jpeg(COLOR),
        "empty.jpg": b"",
        "tiny.png": cv2.imencode(".png", COLOR[:1, :1])[1].tobytes(),
        "deep.png": cv2.imencode(".png", COLOR.astype(np.uint16) * 257)[1].tobytes(),
        "gray.png": cv2.imencode(".png", COLOR[..., 0])[1].tobytes(),
    }
    for name, data in files.items():
        _write(img_dir / name, data)
        (lb_dir / (Path(name).stem + ".txt")).write_text(f"0 {SQUARE}\n0 0.1 0.1 1e30 0.1 0.4 0.4\nnan {SQUARE}\n")
    ls = scan_labels(sorted(str(p) for p in img_dir.iterdir()), nc=1, cache=False)
    kept = sorted(Path(f).name for f in ls.im_files)
    assert kept == ["deep.png", "good.jpg", "gray.png"] and ls.n_corrupt == 2
    assert all(len(c) == 2 for c in ls.cls)  # the square and the clipped one; the NaN class dropped
    report = {Path(f).name for f, _ in ls.report}
    assert {"empty.jpg", "tiny.png", "good.jpg"} <= report
