"""The built-in synthetic-shapes data set: deterministic, atomic, clean labels, usable classes."""

import hashlib
from pathlib import Path

import pytest

from yoloseg.data import synthetic
from yoloseg.data.labels import scan_labels
from yoloseg.data.yaml import check_data_yaml, list_image_files


def _digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix != ".cache"}


def test_generation_is_deterministic(tmp_path):
    a = synthetic.ensure_synthetic_shapes(tmp_path / "a", n_train=6, n_val=3)
    b = synthetic.ensure_synthetic_shapes(tmp_path / "b", n_train=6, n_val=3)
    da, db = _digest(a.parent), _digest(b.parent)
    assert len(da) == 2 * (6 + 3) + 1
    assert da == db
    c = synthetic.ensure_synthetic_shapes(tmp_path / "c", n_train=6, n_val=3, seed=1)
    assert _digest(c.parent) != da


def test_default_set_labels_are_clean(tmp_path, monkeypatch):
    monkeypatch.setenv("YOLOSEG_DATA_DIR", str(tmp_path))
    d = check_data_yaml("synthetic-shapes")
    spec = synthetic.synthetic_spec()["synthetic"]
    assert Path(d["yaml_file"]).parent.name == f"synthetic-shapes-v{spec['version']}"
    for split, n in (("train", spec["n_train"]), ("val", spec["n_val"])):
        ls = scan_labels(list_image_files(d[split]), d["nc"], cache=False)
        assert len(ls.im_files) == n
        assert ls.n_corrupt == 0 and ls.n_warnings == 0 and ls.n_background == 0
        assert (ls.shapes == spec["imgsz"]).all()
        classes = {int(c) for cl in ls.cls for c in cl}
        assert classes == {0, 1, 2}
        assert ls.n_instances >= n  # at least one object per image


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    real = synthetic.generate_synthetic_shapes

    def boom(out_dir, **kw):
        real(out_dir, **{**kw, "n_val": 0})
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, "generate_synthetic_shapes", boom)
    with pytest.raises(KeyboardInterrupt):
        synthetic.ensure_synthetic_shapes(tmp_path, n_train=2, n_val=1)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(synthetic, "generate_synthetic_shapes", real)
    y = synthetic.ensure_synthetic_shapes(tmp_path, n_train=2, n_val=1)
    assert y.is_file() and len(list(tmp_path.iterdir())) == 1


def test_unknown_setting_is_refused(tmp_path):
    with pytest.raises(ValueError, match="n_images"):
        synthetic.ensure_synthetic_shapes(tmp_path, n_images=3)
