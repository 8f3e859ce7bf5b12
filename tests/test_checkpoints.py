"""Checkpoints: Ultralytics fixtures load without ultralytics and reproduce its outputs; code-running pickles
are refused without running; our own format round-trips through torch.load(weights_only=True); atomic
writes; increment_path."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from yoloseg.checkpoints import (
    PickledObject,
    UnsafeCheckpointError,
    load_checkpoint,
    safe_torch_load,
    save_checkpoint,
)
from yoloseg.nn import SegmentationModel
from yoloseg.utils.files import atomic_torch_save, atomic_write_bytes, increment_path

from tolerances import VALUE_ATOL

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("YOLOSEG_SHARED", REPO.parent / "shared")) / "fixtures" / "ultralytics"
STEMS = ["seed0", "seed0-u830", "synth3-e100"]
# names / nc per fixture, from the fixture README and its -meta.json (written by Ultralytics itself)
EXPECTED = {
    "seed0": (80, {0: "person", 1: "bicycle", 2: "car"}),
    "seed0-u830": (80, {0: "person", 1: "bicycle", 2: "car"}),
    "synth3-e100": (3, {0: "ellipse", 1: "triangle", 2: "rectangle"}),
}
needs_fixtures = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"fixtures not found at {FIXTURES}")


def _pt(stem):
    return FIXTURES / f"yolo11n-seg-{stem}.pt"


def _run_python(code: str, *args: str) -> subprocess.CompletedProcess:
    path = [str(REPO), str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=300)


# --------------------------------------------------------------------------------------------------------------
# Parity with the Ultralytics fixtures, in a fresh interpreter where ultralytics cannot be imported
# --------------------------------------------------------------------------------------------------------------
PARITY_SCRIPT = textwrap.dedent(
    """
    import copy, json, sys

    class BlockUltralytics:
        attempts = []
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "ultralytics":
                self.attempts.append(name)
                raise ImportError("ultralytics is blocked in this test")
            return None

    blocker = BlockUltralytics()
    sys.meta_path.insert(0, blocker)
    import numpy as np, torch
    torch.set_num_threads(1)  # the fixtures were written single-threaded; threads change float32 sums
    from yoloseg.checkpoints import load_checkpoint
    from tolerances import pixel_excess

    fixtures, stems = sys.argv[1], sys.argv[2].split(",")
    out = {}
    for stem in stems:
        model, meta = load_checkpoint(f"{fixtures}/yolo11n-seg-{stem}.pt")
        io = np.load(f"{fixtures}/yolo11n-seg-{stem}-io.npz")
        x = torch.from_numpy(io["x"])
        with torch.no_grad():
            det, proto = model(x)
            fused = copy.deepcopy(model).fuse()
            det_f, proto_f = fused(x)
        # train-mode outputs (batch norms kept in eval) against the raw head outputs of the fixture
        train = copy.deepcopy(model).train()
        for m in train.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()
        with torch.no_grad():
            feats, coeffs, protos_t = train(x)
        box_logits = torch.cat([f[:, :64].flatten(2) for f in feats], 2)
        cls_logits = torch.cat([f[:, 64:].flatten(2) for f in feats], 2)
        diff = lambda a, b: float((a - torch.from_numpy(io[b])).abs().max())
        # box channels are pixels: checked by the pixel rule of tests/tolerances.py (<= 0 passes)
        box_excess = lambda a, b: pixel_excess(a[:, :4], io[b][:, :4])
        value_diff = lambda a, b: float((a[:, 4:] - torch.from_numpy(io[b][:, 4:])).abs().max())
        out[stem] = {
            "det_boxes_excess": box_excess(det, "det"),
            "det_boxes_absdiff": float((det[:, :4] - torch.from_numpy(io["det"][:, :4])).abs().max()),
            "det_values": value_diff(det, "det"), "proto": diff(proto, "proto"),
            "det_fused_boxes_excess": box_excess(det_f, "det_fused"),
            "det_fused_values": value_diff(det_f, "det_fused"),
            "proto_fused": diff(proto_f, "proto_fused"),
            "raw_boxes": diff(box_logits, "raw_boxes"), "raw_scores": diff(cls_logits, "raw_scores"),
            "raw_mask_coefficient": diff(coeffs, "raw_mask_coefficient"), "train_proto": diff(protos_t, "proto"),
            "shapes": [list(det.shape), list(proto.shape)],
            "dtypes": sorted({str(p.dtype) for p in model.state_dict().values() if p.is_floating_point()}),
            "training": model.training,
            "fused_has_bn": any(type(m).__name__ == "BatchNorm2d" for m in fused.modules()),
            "names": {str(k): v for k, v in meta["names"].items()},
            "model_names": {str(k): v for k, v in model.names.items()},
            "nc": meta["nc"], "model_nc": model.nc, "stride": meta["stride"], "model_stride": model.stride.tolist(),
            "task": meta["task"], "train_args_imgsz": meta["train_args"].get("imgsz"),
        }
    out["ultralytics_modules"] = sorted(k for k in sys.modules if k.split(".")[0] == "ultralytics")
    out["import_attempts"] = blocker.attempts
    print("RESULT" + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def parity():
    r = _run_python(PARITY_SCRIPT, str(FIXTURES), ",".join(STEMS))
    assert r.returncode == 0, r.stderr[-4000:]
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT") :])


@needs_fixtures
def test_fixtures_load_without_ultralytics(parity):
    assert parity["ultralytics_modules"] == []
    assert parity["import_attempts"] == []


@needs_fixtures
@pytest.mark.parametrize("stem", STEMS)
def test_fixture_forward_matches_ultralytics(parity, stem):
    r = parity[stem]
    nc = EXPECTED[stem][0]
    assert r["shapes"] == [[1, 4 + nc + 32, 8400], [1, 32, 160, 160]]
    assert r["dtypes"] == ["torch.float32"] and r["training"] is False
    assert not r["fused_has_bn"]
    # box pixels: |diff| <= PIXEL_ATOL + PIXEL_RTOL * |value| (few ulps of the value; see tests/tolerances.py)
    for key in ("det_boxes_excess", "det_fused_boxes_excess"):
        assert r[key] <= 0, (stem, key, r[key], "largest box |diff|", r["det_boxes_absdiff"])
    # scores, coefficients, protos: values of order 1, tight absolute bound
    for key in ("det_values", "proto", "det_fused_values", "proto_fused"):
        assert r[key] <= VALUE_ATOL, (stem, key, r[key])


@needs_fixtures
@pytest.mark.parametrize("stem", STEMS)
def test_fixture_train_outputs_match_raw_head_outputs(parity, stem):
    """Train-mode feats are (box DFL logits, class logits) per level; coeffs and protos as in eval."""
    r = parity[stem]
    for key in ("raw_boxes", "raw_scores", "raw_mask_coefficient", "train_proto"):  # logits: order-1 values
        assert r[key] <= VALUE_ATOL, (stem, key, r[key])


@needs_fixtures
@pytest.mark.parametrize("stem", STEMS)
def test_fixture_metadata_from_checkpoint(parity, stem):
    r = parity[stem]
    nc, first_names = EXPECTED[stem]
    assert r["nc"] == r["model_nc"] == nc
    assert len(r["names"]) == nc and r["names"] == r["model_names"]
    assert {int(k): v for k, v in r["names"].items() if int(k) < 3} == first_names
    assert r["stride"] == r["model_stride"] == [8.0, 16.0, 32.0]
    assert r["task"] == "segment"
    assert r["train_args_imgsz"] == (320 if stem == "synth3-e100" else 640)


@needs_fixtures
def test_state_dict_layout_equals_ultralytics():
    """Walk the pickled module tree independently and compare names and shapes with ours."""
    ckpt = safe_torch_load(_pt("seed0"))
    root = ckpt["model"]
    assert isinstance(root, PickledObject) and root._qualname == "ultralytics.nn.tasks.SegmentationModel"
    theirs = {}

    def walk(obj, prefix):
        for k, v in list(obj.__dict__.get("_parameters", {}).items()) + list(obj.__dict__.get("_buffers", {}).items()):
            if v is not None:  # e.g. Conv2d(bias=False) pickles bias=None
                theirs[prefix + k] = tuple(v.shape)
        for k, m in obj.__dict__.get("_modules", {}).items():
            walk(m, f"{prefix}{k}.")

    walk(root, "")
    ours = {k: tuple(v.shape) for k, v in SegmentationModel("yolo11n-seg.yaml").state_dict().items()}
    assert ours == theirs
    assert len(ours) == 561


@needs_fixtures
def test_prefers_ema_and_rejects_other_architectures():
    from yoloseg.checkpoints import _load_ultralytics

    ckpt = safe_torch_load(_pt("synth3-e100"))
    root = ckpt["model"]
    model, meta = _load_ultralytics(_pt("synth3-e100"), {"ema": root, "model": PickledObject()}, "cpu")
    assert meta["nc"] == 3 and model.nc == 3
    layers = root.__dict__["_modules"]["model"].__dict__["_modules"]
    layers.pop("10")  # no C2PSA: not the YOLO11-seg layer table
    with pytest.raises(ValueError, match="not a YOLO11-seg model"):
        _load_ultralytics(_pt("synth3-e100"), {"model": root}, "cpu")


@pytest.mark.parametrize("scale", list("nsmlx"))
def test_scale_inferred_from_weights(scale):
    from yoloseg.checkpoints import _infer_scale

    assert _infer_scale(SegmentationModel(f"yolo11{scale}-seg.yaml", nc=2).state_dict()) == scale


# --------------------------------------------------------------------------------------------------------------
# Pickles that would run code are refused, and the payload does not run
# --------------------------------------------------------------------------------------------------------------
CRAFT_SCRIPT = textwrap.dedent(
    """
    import os, sys, types, torch
    out_dir = sys.argv[1]

    def fake_module(name):
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            sys.modules.setdefault(".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
        return sys.modules[name]

    head = fake_module("ultralytics.nn.modules.head")
    conv = fake_module("ultralytics.nn.modules.conv")

    class Detect:
        def forward(self, x):
            return x

    class Conv:
        def forward(self, x):
            return x

    Detect.__module__, Conv.__module__ = head.__name__, conv.__name__
    head.Detect, conv.Conv = Detect, Conv

    class Reduce:
        def __init__(self, fn, args):
            self.fn, self.args = fn, args
        def __reduce__(self):
            return self.fn, self.args

    def marker(kind):
        return os.path.join(out_dir, kind + "-ran")

    payloads = {
        "os_system": Reduce(os.system, ("touch " + marker("os_system"),)),
        "eval": Reduce(eval, (f"open({marker('eval')!r}, 'w').close()",)),
        "getattr_conv_forward": Reduce(getattr, (Conv, "forward")),
        "getattr_detect_init": Reduce(getattr, (Detect, "__init__")),
        "detect_forward": Detect.forward,  # protocol 2 writes getattr(Detect, 'forward')
    }
    for kind, payload in payloads.items():
        obj = {"model": {"detect": payload, "w": torch.ones(2)}, "version": "crafted"}
        torch.save(obj, os.path.join(out_dir, kind + ".pt"), pickle_protocol=2)
    """
)


@pytest.fixture(scope="module")
def crafted(tmp_path_factory):
    """kind -> (checkpoint path, marker path that exists only if the payload ran)."""
    out = tmp_path_factory.mktemp("crafted")
    r = _run_python(CRAFT_SCRIPT, str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    kinds = ["os_system", "eval", "getattr_conv_forward", "getattr_detect_init", "detect_forward"]
    return {k: (out / f"{k}.pt", out / f"{k}-ran") for k in kinds}


@pytest.mark.parametrize(
    "kind, refused",
    [
        ("os_system", "system"),
        ("eval", "builtins.eval"),
        ("getattr_conv_forward", "Conv"),
        ("getattr_detect_init", "__init__"),
    ],
)
def test_code_running_pickle_is_refused(crafted, kind, refused):
    path, marker = crafted[kind]
    with pytest.raises(UnsafeCheckpointError, match="refuses to load global") as e:
        load_checkpoint(path)
    assert str(path) in str(e.value) and refused in str(e.value)
    with pytest.raises(UnsafeCheckpointError):
        safe_torch_load(path)
    assert not marker.exists()


def test_crafted_payloads_are_real(crafted, tmp_path):
    """Control: an unrestricted torch.load of copies of the same files does run the payloads."""
    code = "import sys, torch\nfor p in sys.argv[1:]:\n    torch.load(p, weights_only=False)"
    for kind in ("os_system", "eval"):
        path, marker = crafted[kind]
        assert not marker.exists()
        r = _run_python(code, str(path))
        assert marker.exists(), r.stderr[-2000:]
        marker.unlink()


def test_getattr_detect_forward_is_accepted_and_ignored(crafted):
    path, _ = crafted["detect_forward"]
    ckpt = safe_torch_load(path)
    assert isinstance(ckpt["model"]["detect"], PickledObject)
    assert torch.equal(ckpt["model"]["w"], torch.ones(2))
    with pytest.raises(ValueError, match="no pickled model"):  # accepted by the unpickler; just not a model
        load_checkpoint(path)


# --------------------------------------------------------------------------------------------------------------
# Our format
# --------------------------------------------------------------------------------------------------------------
def _outputs(model, x):
    with torch.no_grad():
        return model.eval()(x)


def test_own_format_round_trip(tmp_path):
    torch.manual_seed(0)
    model = SegmentationModel("yolo11n-seg.yaml", nc=3)
    model.names = {0: "a", 1: "b", 2: "c"}
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    path = save_checkpoint(
        tmp_path / "w" / "last.pt", model, train_args={"epochs": 3, "data": tmp_path / "d.yaml"}, epoch=2,
        best_fitness=np.float64(0.25), optimizer=opt.state_dict(), ema={"updates": 7},
    )
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "yoloseg" and raw["epoch"] == 2 and raw["best_fitness"] == 0.25
    assert raw["train_args"]["data"] == str(tmp_path / "d.yaml")
    assert set(raw["state_dict"]) == set(model.state_dict())
    loaded, meta = load_checkpoint(path)
    assert meta["names"] == {0: "a", 1: "b", 2: "c"} and meta["nc"] == 3 and meta["stride"] == [8.0, 16.0, 32.0]
    assert meta["epoch"] == 2 and meta["task"] == "segment" and meta["train_args"]["epochs"] == 3
    assert meta["optimizer"]["param_groups"][0]["lr"] == 0.01
    assert not loaded.training and loaded.names == model.names
    x = torch.rand(1, 3, 64, 96)
    for a, b in zip(_outputs(model, x), _outputs(loaded, x)):
        assert torch.equal(a, b)


def test_own_format_fused_and_half(tmp_path):
    torch.manual_seed(0)
    model = SegmentationModel("yolo11n-seg.yaml", nc=2).eval()
    fused = SegmentationModel(model.yaml, nc=2)
    fused.load_state_dict(model.state_dict())
    fused.fuse()
    x = torch.rand(1, 3, 64, 64)
    loaded, _ = load_checkpoint(save_checkpoint(tmp_path / "f.pt", fused))
    assert loaded.is_fused()
    for a, b in zip(_outputs(fused, x), _outputs(loaded, x)):
        assert torch.equal(a, b)
    loaded, _ = load_checkpoint(save_checkpoint(tmp_path / "h.pt", model, half=True))
    assert all(v.dtype != torch.float16 for v in loaded.state_dict().values())
    assert torch.load(tmp_path / "h.pt", weights_only=True)["state_dict"]["model.0.conv.weight"].dtype == torch.float16


def test_save_refuses_values_weights_only_cannot_load(tmp_path):
    model = SegmentationModel("yolo11n-seg.yaml", nc=1)
    with pytest.raises(ValueError, match="train_args"):
        save_checkpoint(tmp_path / "x.pt", model, train_args={"bad": object()})
    assert not (tmp_path / "x.pt").exists()


@needs_fixtures
def test_ultralytics_to_own_format(tmp_path):
    model, meta = load_checkpoint(_pt("synth3-e100"))
    path = save_checkpoint(tmp_path / "converted.pt", model, train_args=meta["train_args"])
    again, meta2 = load_checkpoint(path)
    assert meta2["names"] == meta["names"] and meta2["nc"] == 3
    x = torch.rand(1, 3, 96, 96)
    for a, b in zip(_outputs(model, x), _outputs(again, x)):
        assert torch.equal(a, b)


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")
    torch.save(torch.ones(3), tmp_path / "tensor.pt")
    with pytest.raises(ValueError, match="not a model checkpoint"):
        load_checkpoint(tmp_path / "tensor.pt")
    torch.save({"model": None}, tmp_path / "empty.pt")
    with pytest.raises(ValueError, match="no pickled model"):
        load_checkpoint(tmp_path / "empty.pt")


# --------------------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------------------
class _Unpicklable:
    def __reduce__(self):
        raise RuntimeError("disk full (simulated)")


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "ckpt.pt"
    atomic_write_bytes(target, b"old contents")
    with pytest.raises(RuntimeError, match="disk full"):
        atomic_torch_save({"w": torch.ones(1000), "bad": _Unpicklable()}, target)
    assert target.read_bytes() == b"old contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]  # no temp file left behind
    with pytest.raises(RuntimeError):
        atomic_torch_save({"bad": _Unpicklable()}, tmp_path / "new.pt")
    assert not (tmp_path / "new.pt").exists()
    atomic_torch_save({"w": torch.arange(3)}, target)
    assert torch.equal(torch.load(target, weights_only=True)["w"], torch.arange(3))
    plain = tmp_path / "plain"
    plain.write_bytes(b"")
    assert (target.stat().st_mode & 0o777) == (plain.stat().st_mode & 0o777)  # same permissions as open()


def test_increment_path(tmp_path):
    base = tmp_path / "runs" / "segment" / "predict"
    assert increment_path(base) == base and not base.exists()
    assert increment_path(base, mkdir=True) == base and base.is_dir()
    assert increment_path(base) == base.with_name("predict2")
    assert increment_path(base, exist_ok=True) == base
    increment_path(base, mkdir=True)
    assert (base.parent / "predict2").is_dir()
    assert increment_path(base) == base.with_name("predict3")
    assert increment_path(base, sep="-") == base.with_name("predict-2")
    f = tmp_path / "out.txt"
    f.write_text("x")
    assert increment_path(f) == tmp_path / "out2.txt"
