"""Every kind of bad image through whole train, val and predict runs: each bad file is reported by name and
skipped, or decoded when it is merely unusual; the good images are all used and the runs finish.

Kinds: 0 bytes, truncated, 1x1, 20000x20000, 16-bit, CMYK, grayscale. The 20000x20000 JPEG (uniform, so
small on disk) is decoded reduced by 8 by the data set and in full (1.2 GB) by predict; it is left out of the
val split, whose COCO evaluation works at the original resolution (a 400-megapixel mask per detection).
"""

from pathlib import Path

import cv2
import numpy as np
import pytest

from yoloseg import YOLO

SQUARE = "0 0.2 0.2 0.7 0.2 0.7 0.7 0.2 0.7"


def _scene(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.full((64, 64, 3), 40 + 20 * seed % 200, np.uint8)
    cv2.rectangle(img, (13, 13), (45, 45), [int(v) for v in rng.integers(120, 255, 3)], -1)
    return img


def _bad_images() -> dict:
    from PIL import Image
    import io

    good = _scene(9)
    cmyk = io.BytesIO()
    Image.fromarray(good[..., ::-1].copy()).convert("CMYK").save(cmyk, "JPEG")
    whole = cv2.imencode(".jpg", good)[1].tobytes()
    huge = np.zeros((20000, 20000), np.uint8)  # grayscale keeps the encoder's memory at 400 MB
    huge[5000:15000, 5000:15000] = 200
    return {
        "empty.jpg": b"",
        "truncated.jpg": whole[: len(whole) // 3],
        "tiny.png": cv2.imencode(".png", good[:1, :1])[1].tobytes(),
        "huge.jpg": cv2.imencode(".jpg", huge, [cv2.IMWRITE_JPEG_QUALITY, 50])[1].tobytes(),
        "deep.png": cv2.imencode(".png", good.astype(np.uint16) * 257)[1].tobytes(),
        "cmyk.jpg": cmyk.getvalue(),
        "gray.png": cv2.imencode(".png", good[..., 0])[1].tobytes(),
    }


UNUSABLE = {"empty.jpg", "tiny.png", "truncated.jpg"}  # skipped with a report; the others decode
UNDECODABLE = {"empty.jpg", "truncated.jpg"}  # predict skips them by name; a 1x1 image is predicted as it is


@pytest.fixture(scope="module")
def bad_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("badset")
    bad = _bad_images()
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for k in range(4):
            cv2.imwrite(str(root / "images" / split / f"good{k}.jpg"), _scene(k + (4 if split == "val" else 0)))
            (root / "labels" / split / f"good{k}.txt").write_text(SQUARE + "\n")
        for name, data in bad.items():
            if split == "val" and name == "huge.jpg":
                continue
            (root / "images" / split / name).write_bytes(data)
            (root / "labels" / split / f"{Path(name).stem}.txt").write_text(SQUARE + "\n")
    (root / "data.yaml").write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n  0: square\n")
    return root


def test_train_and_val_skip_bad_images_by_name(bad_set, tmp_path, caplog):
    model = YOLO("yolo11n-seg.yaml")
    model.train(data=str(bad_set / "data.yaml"), epochs=1, imgsz=64, batch=4, workers=0, plots=False,
                project=str(tmp_path), name="run", mosaic=0.0, val=True)
    for split in ("train", "val"):
        for name in UNUSABLE:
            assert str(bad_set / "images" / split / name) in caplog.text, f"{split}/{name} not reported"
    caplog.clear()
    assert (tmp_path / "run" / "weights" / "last.pt").is_file()
    metrics = YOLO(str(tmp_path / "run" / "weights" / "last.pt")).val(
        data=str(bad_set / "data.yaml"), imgsz=64, batch=4, workers=0, plots=False, project=str(tmp_path),
        name="val")
    for name in UNUSABLE:
        assert str(bad_set / "images" / "val" / name) in caplog.text, f"val/{name} not reported by val"
    assert metrics.n_images == 4 + 3  # the good ones, and the 16-bit, CMYK and grayscale ones


def test_predict_reports_undecodable_files_and_predicts_the_rest(bad_set, tmp_path, caplog):
    model = YOLO("yolo11n-seg.yaml")
    results = list(model.predict(str(bad_set / "images" / "train"), imgsz=64, conf=0.5, stream=True,
                                 project=str(tmp_path), name="pred", save=False, verbose=False))
    got = sorted(Path(r.path).name for r in results)
    expected = sorted({f"good{k}.jpg" for k in range(4)} | set(_bad_images()) - UNDECODABLE)
    assert got == expected
    shapes = {Path(r.path).name: r.orig_shape for r in results}
    assert shapes["huge.jpg"] == (20000, 20000) and shapes["tiny.png"] == (1, 1)
    for name in UNDECODABLE:
        assert f"skipping {bad_set / 'images' / 'train' / name}" in caplog.text, name
