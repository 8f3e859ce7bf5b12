"""SegmentDataset, collate_fn and build_dataloader: shapes, overlap masks, determinism, bad samples."""

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from yoloseg.data import build_dataloader, build_dataset, check_data_yaml, collate_fn
from yoloseg.data.dataset import SegmentDataset


def _write(root: Path, stem: str, img: np.ndarray, lines: list[str], split="train"):
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "labels" / split).mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(root / "images" / split / f"{stem}.png"), img)
    (root / "labels" / split / f"{stem}.txt").write_text("\n".join(lines) + "\n")


def _square(x0, y0, x1, y1, cls=0):
    return f"{cls} {x0:.6f} {y0:.6f} {x1:.6f} {y0:.6f} {x1:.6f} {y1:.6f} {x0:.6f} {y1:.6f}"


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    import os

    old = os.environ.get("YOLOSEG_DATA_DIR")
    os.environ["YOLOSEG_DATA_DIR"] = str(tmp_path_factory.mktemp("synth"))
    try:
        yield check_data_yaml("synthetic-shapes")
    finally:
        if old is None:
            os.environ.pop("YOLOSEG_DATA_DIR")
        else:
            os.environ["YOLOSEG_DATA_DIR"] = old


def test_collate_shapes_overlap(synthetic):
    ds = build_dataset(synthetic, "train", {"imgsz": 320}, augment=True)
    batch = collate_fn([ds[(i, 0, True)] for i in range(4)])
    assert batch["img"].shape == (4, 3, 320, 320) and batch["img"].dtype == torch.uint8
    m = len(batch["cls"])
    assert batch["cls"].shape == (m, 1) and batch["bboxes"].shape == (m, 4) and batch["batch_idx"].shape == (m,)
    assert batch["masks"].shape == (4, 80, 80) and batch["masks"].dtype == torch.int32
    assert ((batch["bboxes"] >= 0) & (batch["bboxes"] <= 1)).all()
    for b in range(4):
        n = int((batch["batch_idx"] == b).sum())
        assert int(batch["masks"][b].max()) <= n
    assert len(batch["im_file"]) == len(batch["ori_shape"]) == len(batch["ratio_pad"]) == 4


def test_collate_shapes_per_instance_masks(synthetic):
    ds = build_dataset(synthetic, "train", {"imgsz": 256, "overlap_mask": False}, augment=True)
    batch = collate_fn([ds[(i, 0, True)] for i in range(3)])
    m = len(batch["cls"])
    assert batch["masks"].shape == (m, 64, 64) and batch["masks"].dtype == torch.uint8
    assert set(torch.unique(batch["masks"]).tolist()) <= {0, 1}


def test_val_letterbox_and_ratio_pad(tmp_path):
    # a 100x200 image with a known rectangle; val letterboxes to 320 (rect off) without augmenting
    img = np.zeros((100, 200, 3), np.uint8)
    _write(tmp_path, "a", img, [_square(0.1, 0.2, 0.3, 0.5)], split="val")
    data = {"names": {0: "x"}, "val": str(tmp_path / "images" / "val")}
    ds = build_dataset(data, "val", {"imgsz": 320, "batch": 1}, rect=False)
    s = ds[0]
    assert s["img"].shape == (3, 320, 320)
    assert s["ori_shape"] == (100, 200) and s["resized_shape"] == (160, 320)
    (gh, gw), (px, py) = s["ratio_pad"]
    # original pixel box (20, 20, 60, 50) mapped with ratio_pad must equal the returned box
    x1, y1, x2, y2 = 20 * gw + px, 20 * gh + py, 60 * gw + px, 50 * gh + py
    expect = np.array([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]) / 320
    np.testing.assert_allclose(s["bboxes"][0].numpy(), expect, atol=1e-5)
    # rect batches: one padded shape per batch, a multiple of the stride
    ds = build_dataset(data, "val", {"imgsz": 320, "batch": 1})
    assert tuple(ds[0]["img"].shape[1:]) == tuple(ds.batch_shapes[0]) and ds.batch_shapes[0][0] % 32 == 0
    assert ds.batch_shapes[0][0] < ds.batch_shapes[0][1]


def test_overlap_masks_beyond_255_instances(tmp_path):
    # 18 x 18 = 324 separate squares: every instance must get its own index in an int32 map
    n = 18
    lines = []
    for r in range(n):
        for c in range(n):
            lines.append(_square((c + 0.15) / n, (r + 0.15) / n, (c + 0.85) / n, (r + 0.85) / n, cls=(r + c) % 2))
    _write(tmp_path, "many", np.zeros((576, 576, 3), np.uint8), lines, split="val")
    data = {"names": {0: "a", 1: "b"}, "val": str(tmp_path / "images" / "val")}
    ds = build_dataset(data, "val", {"imgsz": 576, "batch": 1}, rect=False)
    s = ds[0]
    assert len(s["cls"]) == n * n > 255
    masks = s["masks"]
    assert masks.dtype == torch.int32
    values = torch.unique(masks).tolist()
    assert values == list(range(n * n + 1))
    # each index's pixels lie inside the box of that instance
    boxes = s["bboxes"].numpy() * 144
    for k in (0, 255, 256, n * n - 1):
        ys, xs = np.nonzero(masks.numpy() == k + 1)
        cx, cy, w, h = boxes[k]
        assert xs.min() >= cx - w / 2 - 1 and xs.max() <= cx + w / 2 and ys.min() >= cy - h / 2 - 1
        assert ys.max() <= cy + h / 2


def test_overlap_small_instance_wins_and_labels_follow_order(tmp_path):
    big, small = _square(0.1, 0.1, 0.9, 0.9, cls=0), _square(0.4, 0.4, 0.6, 0.6, cls=1)
    _write(tmp_path, "o", np.zeros((128, 128, 3), np.uint8), [small, big], split="val")
    data = {"names": {0: "big", 1: "small"}, "val": str(tmp_path / "images" / "val")}
    s = build_dataset(data, "val", {"imgsz": 128, "batch": 1}, rect=False)[0]
    # instances re-ordered largest first, masks painted in that order
    assert s["cls"][:, 0].tolist() == [0.0, 1.0]
    m = s["masks"].numpy()
    assert m[16, 16] == 2 and m[4, 4] == 1 and m[0, 0] == 0
    assert (m == 2).sum() == 6 * 6  # 51.2..76.8 px -> mask pixels 13..18 are at least half covered


def test_loader_deterministic_across_workers_and_epochs(synthetic):
    ds = build_dataset(synthetic, "train", {"imgsz": 128, "seed": 3}, augment=True)

    def epoch_batches(loader, epoch):
        loader.set_epoch(epoch)
        return [(b["img"].clone(), b["bboxes"].clone(), b["masks"].clone()) for _, b in zip(range(3), loader)]

    l0 = build_dataloader(ds, 4, workers=0, shuffle=True, seed=3)
    l2 = build_dataloader(ds, 4, workers=2, shuffle=True, seed=3)
    a0, b0 = epoch_batches(l0, 0), epoch_batches(l2, 0)
    a1, b1 = epoch_batches(l0, 1), epoch_batches(l2, 1)
    for x, y in zip(a0 + a1, b0 + b1):
        assert all(torch.equal(u, v) for u, v in zip(x, y))
    assert not torch.equal(a0[0][0], a1[0][0])  # a new epoch is a new order / new augmentations
    # close_mosaic reaches persistent workers: equals a loader built without mosaic
    l2.close_mosaic()
    plain = build_dataset(synthetic, "train", {"imgsz": 128, "seed": 3, "mosaic": 0.0}, augment=True)
    lp = build_dataloader(plain, 4, workers=0, shuffle=True, seed=3)
    for x, y in zip(epoch_batches(l2, 2), epoch_batches(lp, 2)):
        assert all(torch.equal(u, v) for u, v in zip(x, y))


@pytest.mark.parametrize("mode", ["flip", "mixup"])
def test_close_mosaic_also_ends_copy_paste(synthetic, mode):
    hyp = {"imgsz": 128, "seed": 3, "copy_paste": 1.0, "copy_paste_mode": mode, "mixup": 0.5}
    ds = build_dataset(synthetic, "train", hyp, augment=True)
    plain = build_dataset(synthetic, "train", {"imgsz": 128, "seed": 3, "mosaic": 0.0}, augment=True)
    ld, lp = (build_dataloader(d, 4, workers=0, shuffle=True, seed=3) for d in (ds, plain))
    ld.close_mosaic()
    for x, y in zip(ld, lp):
        assert torch.equal(x["img"], y["img"]) and torch.equal(x["masks"], y["masks"])


def test_vanished_image_is_skipped_not_fatal(tmp_path, caplog):
    for i in range(4):
        _write(tmp_path, f"im{i}", np.full((64, 64, 3), 40 * i, np.uint8), [_square(0.2, 0.2, 0.6, 0.6)])
    data = {"names": {0: "x"}, "train": str(tmp_path / "images" / "train")}
    ds = SegmentDataset(data["train"], data, imgsz=64, augment=True, label_cache=False)
    gone = tmp_path / "images" / "train" / "im2.png"
    gone.unlink()
    with caplog.at_level(logging.WARNING, logger="yoloseg.data"):
        loader = build_dataloader(ds, 2, workers=0, shuffle=False)
        n = sum(len(b["img"]) for b in loader)
    assert n == 4
    assert ds.n_bad_loads >= 1
    assert "im2.png" in caplog.text and "skipping sample" in caplog.text


def test_rect_dataset_refuses_shuffle(synthetic):
    ds = build_dataset(synthetic, "val", {"imgsz": 128, "batch": 4})
    with pytest.raises(ValueError, match="shuffle"):
        build_dataloader(ds, 4, shuffle=True)
    batch = next(iter(build_dataloader(ds, 4, shuffle=False)))
    assert batch["img"].shape[0] == 4


def test_single_cls_keeps_every_class_as_zero(tmp_path):
    _write(tmp_path, "a", np.zeros((64, 64, 3), np.uint8), [_square(0.1, 0.1, 0.4, 0.4, cls=5),
                                                             _square(0.5, 0.5, 0.9, 0.9, cls=0)], split="val")
    # the trainer replaces names with {0: "item"} for single_cls: class 5 must still count
    data = {"names": {0: "item"}, "val": str(tmp_path / "images" / "val")}
    s = build_dataset(data, "val", {"imgsz": 64, "batch": 1, "single_cls": True}, rect=False)[0]
    assert s["cls"][:, 0].tolist() == [0.0, 0.0]
    s = build_dataset(data, "val", {"imgsz": 64, "batch": 1}, rect=False)[0]
    assert s["cls"][:, 0].tolist() == [0.0]


def test_collate_pads_mixed_sizes_and_keeps_geometry(tmp_path):
    # rect batches of 1 read with a loader batch of 2: a wide and a tall image in one batch
    _write(tmp_path, "wide", np.zeros((100, 200, 3), np.uint8), [_square(0.1, 0.2, 0.3, 0.5)], split="val")
    _write(tmp_path, "tall", np.zeros((200, 100, 3), np.uint8), [_square(0.5, 0.5, 0.9, 0.7)], split="val")
    data = {"names": {0: "x"}, "val": str(tmp_path / "images" / "val")}
    ds = build_dataset(data, "val", {"imgsz": 256, "batch": 1})
    singles = [ds[0], ds[1]]
    batch = next(iter(build_dataloader(ds, 2, shuffle=False)))
    H, W = batch["img"].shape[2:]
    assert (H, W) == (max(s["img"].shape[1] for s in singles), max(s["img"].shape[2] for s in singles))
    assert batch["masks"].shape == (2, H // 4, W // 4)
    for b, s in enumerate(singles):
        _, h, w = s["img"].shape
        assert torch.equal(batch["img"][b, :, :h, :w], s["img"])
        assert (batch["img"][b, :, h:, :] == 114).all() and (batch["img"][b, :, :, w:] == 114).all()
        # the same pixel box, normalized to the padded size
        px = s["bboxes"][0] * torch.tensor([w, h, w, h])
        torch.testing.assert_close(batch["bboxes"][b] * torch.tensor([W, H, W, H]), px)
        assert torch.equal(batch["masks"][b, : h // 4, : w // 4], s["masks"])


def test_cache_disk_writes_beside_the_images_and_reads_them_back(tmp_path, monkeypatch, caplog):
    rng = np.random.default_rng(0)
    for k in range(3):
        _write(tmp_path, f"im{k}", rng.integers(0, 255, (90, 120, 3), dtype=np.uint8), [_square(0.1, 0.2, 0.5, 0.6)])
    data = {"names": {0: "x"}, "train": str(tmp_path / "images" / "train")}
    cfg = {"imgsz": 64, "batch": 1, "cache": "disk"}
    plain = build_dataset(data, "train", {"imgsz": 64, "batch": 1}, rect=False)
    ds = build_dataset(data, "train", cfg, rect=False)
    files = sorted((tmp_path / "images" / "train").glob("*.png.64.npz"))
    assert len(files) == 3 and ds._disk
    want = [plain.load_sample(i)["img"] for i in range(3)]
    # a later run reads the cache: decoding the images is not needed any more
    import yoloseg.data.dataset as dataset_module

    def no_decode(*a, **k):
        raise AssertionError("image decoded although the disk cache is fresh")

    monkeypatch.setattr(dataset_module.cv2, "imread", no_decode)
    again = build_dataset(data, "train", cfg, rect=False)
    for i in range(3):
        s = again.load_sample(i)
        np.testing.assert_array_equal(s["img"], want[i])
        assert s["ori_shape"] == (90, 120)
    monkeypatch.undo()
    # a damaged cache file is rebuilt from the image
    files[0].write_bytes(b"not an npz")
    np.testing.assert_array_equal(again.load_sample(0)["img"], want[0])
    assert np.load(files[0])["img"].shape == want[0].shape
    # a folder that cannot be written: one warning, the images are read as usual
    import yoloseg.utils.files as files_module

    for f in files:
        f.unlink()

    def refuse(*a, **k):
        raise PermissionError("read-only")

    monkeypatch.setattr(files_module.tempfile, "mkstemp", refuse)
    with caplog.at_level(logging.WARNING):
        ro = build_dataset(data, "train", cfg, rect=False)
    assert "cache=disk: cannot write" in caplog.text and not ro._disk
    np.testing.assert_array_equal(ro.load_sample(1)["img"], want[1])
