"""YOLO11-seg model family: sizes per scale, config resolution, layer registry, forward contracts, head
decoding, bias priors, Conv+BN fusion and the info() summary."""

import copy
import math
import shutil

import pytest
import torch
from torch import nn

from yoloseg.nn import SegmentationModel, build_model
from yoloseg.nn.builder import MODELS_DIR, packaged_configs
from yoloseg.nn.info import count_flops
from yoloseg.nn.registry import LAYERS, register_layer

# Ultralytics 8.4.190, nc=80, unfused: parameters and state-dict entries per scale.
ULTRALYTICS_PARAMS = {"n": 2_876_848, "s": 10_113_248, "m": 22_420_896, "l": 27_678_368, "x": 62_142_656}
ULTRALYTICS_SD_ENTRIES = {"n": 561, "s": 561, "m": 711, "l": 1077, "x": 1077}
# Ultralytics 8.4.190 GFLOPs at 640 of the fused models (thop MACs x 2), see docs/model.md.
ULTRALYTICS_FUSED_GFLOPS = {"n": 9.80128, "s": 33.07331}


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def nano():
    torch.manual_seed(0)
    return SegmentationModel("yolo11n-seg.yaml")


@pytest.mark.parametrize("scale", list("nsmlx"))
def test_parameter_and_state_dict_counts_match_ultralytics(scale):
    m = SegmentationModel(f"yolo11{scale}-seg.yaml")
    assert sum(p.numel() for p in m.parameters()) == ULTRALYTICS_PARAMS[scale]
    assert len(m.state_dict()) == ULTRALYTICS_SD_ENTRIES[scale]
    # only the fixed DFL projection (16 weights) is frozen
    assert sum(p.numel() for p in m.parameters() if not p.requires_grad) == 16
    assert m.yaml["scale"] == scale


def test_model_attributes(nano):
    m = nano
    assert isinstance(m.model, nn.Sequential) and len(m.model) == 24
    assert m.task == "segment" and m.nc == 80 and len(m.names) == 80
    assert m.stride.dtype == torch.float32 and m.stride.tolist() == [8.0, 16.0, 32.0]
    head = m.model[-1]
    assert (head.nc, head.no, head.reg_max, head.nm, head.npr) == (80, 144, 16, 32, 64)
    assert head.stride.tolist() == [8.0, 16.0, 32.0]
    sd = m.state_dict()
    assert sd["model.0.conv.weight"].shape == (16, 3, 3, 3)
    assert sd["model.23.proto.upsample.weight"].shape == (64, 64, 2, 2)
    assert sd["model.23.dfl.conv.weight"].flatten().tolist() == list(range(16))
    assert sd["model.10.m.0.attn.qkv.conv.weight"].shape == (256, 128, 1, 1)
    assert all(bn.eps == 1e-3 and bn.momentum == 0.03 for bn in m.modules() if isinstance(bn, nn.BatchNorm2d))


def test_nc_override_and_scale_letter():
    m = SegmentationModel("yolo11s-seg.yaml", nc=3)
    assert m.nc == 3 and m.model[-1].nc == 3 and len(m.names) == 3
    assert m.state_dict()["model.0.conv.weight"].shape[0] == 32  # width 0.5 of 64
    assert all(b[-1].out_channels == 3 for b in m.model[-1].cv3)
    with pytest.raises(ValueError, match="nc"):
        SegmentationModel("yolo11n-seg.yaml", nc=0)


def test_config_path_and_dict(tmp_path):
    p = tmp_path / "yolo11m-seg.yaml"
    shutil.copy(MODELS_DIR / "yolo11-seg.yaml", p)
    m = build_model(p, nc=2)
    assert m.yaml["scale"] == "m" and m.yaml["yaml_file"] == str(p)
    assert len(m.state_dict()) == ULTRALYTICS_SD_ENTRIES["m"]
    # the stored config rebuilds the same architecture
    again = SegmentationModel(m.yaml)
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in m.state_dict().items()}
    # no scale letter in the file name: the first scale listed
    q = tmp_path / "custom.yaml"
    shutil.copy(MODELS_DIR / "yolo11-seg.yaml", q)
    assert SegmentationModel(q).yaml["scale"] == "n"


def test_config_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="yolo99n-seg.yaml"):
        SegmentationModel("yolo99n-seg.yaml")
    with pytest.raises(FileNotFoundError):
        SegmentationModel(tmp_path / "missing.yaml")
    with pytest.raises(ValueError, match=r"\.yaml"):
        SegmentationModel("yolo11n-seg.txt")
    cfg = SegmentationModel("yolo11n-seg.yaml").yaml
    bad = copy.deepcopy(cfg)
    bad["scale"] = "q"
    with pytest.raises(ValueError, match="scale 'q'"):
        SegmentationModel(bad)
    bad = copy.deepcopy(cfg)
    bad["layers"][3]["type"] = "Convv"
    with pytest.raises(ValueError, match="'Conv'"):
        SegmentationModel(bad)
    bad = copy.deepcopy(cfg)
    bad["layers"][12]["from"] = [-1, 40]
    with pytest.raises(ValueError, match="earlier layer"):
        SegmentationModel(bad)


def test_packaged_configs_list_every_scale():
    assert {f"yolo11{s}-seg.yaml" for s in "nsmlx"} <= set(packaged_configs())


def test_registry_plugin_head():
    """A plugin adds a layer type by registering a builder; the YAML then names it."""

    class TinyHead(nn.Module):
        def __init__(self, ch):
            super().__init__()
            self.conv = nn.Conv2d(ch, 5, 1)

        def forward(self, x):
            return self.conv(x)

    @register_layer("TinyHeadForTest")
    def build_tiny(spec, ch_in, ctx):
        return TinyHead(ch_in[0]), 5

    try:
        assert "TinyHeadForTest" in LAYERS
        with pytest.raises(ValueError, match="already registered"):
            register_layer("TinyHeadForTest", lambda s, c, x: None)
        cfg = {
            "nc": 1,
            "scales": {"t": {"depth": 1.0, "width": 0.25, "max_channels": 1024}},
            "layers": [{"type": "Conv", "out": 64, "k": 3, "s": 2}, {"type": "TinyHeadForTest"}],
        }
        m = SegmentationModel(cfg)
        assert isinstance(m.model[1], TinyHead)
        assert m(torch.zeros(1, 3, 32, 32)).shape == (1, 5, 16, 16)
    finally:
        LAYERS.unregister("TinyHeadForTest")
    assert "TinyHeadForTest" not in LAYERS


def test_eval_and_train_forward_shapes(nano):
    m = copy.deepcopy(nano)
    x = torch.rand(2, 3, 128, 192)
    m.eval()
    with torch.no_grad():
        pred, protos = m(x)
    a = 16 * 24 + 8 * 12 + 4 * 6
    assert pred.shape == (2, 4 + 80 + 32, a) and protos.shape == (2, 32, 32, 48)
    assert 0 < pred[:, 4:84].min() and pred[:, 4:84].max() < 1  # sigmoid scores
    m.train()
    feats, coeffs, protos_t = m(x)
    assert [f.shape for f in feats] == [(2, 64 + 80, 16, 24), (2, 144, 8, 12), (2, 144, 4, 6)]
    assert coeffs.shape == (2, 32, a) and protos_t.shape == (2, 32, 32, 48)
    # train-mode raw outputs decode to the eval-mode prediction (BN in eval to compare like with like)
    m = copy.deepcopy(nano).train()
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.eval()
    with torch.no_grad():
        feats, coeffs, _ = m(x)
    cls = torch.cat([f[:, 64:].flatten(2) for f in feats], 2)
    torch.testing.assert_close(cls.sigmoid(), pred[:, 4:84], rtol=0, atol=1e-6)
    torch.testing.assert_close(coeffs, pred[:, 84:], rtol=0, atol=1e-6)


def test_box_decoding_against_direct_formula(nano):
    """One-hot DFL logits at bin k mean a distance of k cells; boxes come out as xywh pixels around the
    anchor centre (i + 0.5) * stride."""
    head = copy.deepcopy(nano.model[-1]).eval()
    feats = [torch.zeros(1, 1, 4, 6), torch.zeros(1, 1, 2, 3), torch.zeros(1, 1, 1, 2)]
    a = 24 + 6 + 2
    g = torch.Generator().manual_seed(0)
    bins = torch.randint(0, 16, (4, a), generator=g)  # l, t, r, b per anchor
    logits = torch.full((1, 4, 16, a), -30.0)
    logits.scatter_(2, bins.view(1, 4, 1, a), 30.0)
    boxes = head.decode_boxes(logits.view(1, 64, a), feats)[0]
    k = 0
    for f, s in zip(feats, (8.0, 16.0, 32.0)):
        h, w = f.shape[2:]
        for yy in range(h):
            for xx in range(w):
                l, t, r, b = bins[:, k].tolist()
                cx, cy = xx + 0.5, yy + 0.5
                expect = [(cx + (r - l) / 2) * s, (cy + (b - t) / 2) * s, (l + r) * s, (t + b) * s]
                assert boxes[:, k].tolist() == pytest.approx(expect, abs=1e-4), (k, bins[:, k])
                k += 1


def test_bias_priors(nano):
    head = nano.model[-1]
    for box, cls, s in zip(head.cv2, head.cv3, (8, 16, 32)):
        assert torch.all(box[-1].bias == 2.0)  # as Ultralytics 8.4 (tests/fixtures/schedule/recipe.json)
        assert torch.allclose(cls[-1].bias, torch.full((80,), math.log(5 / 80 / (640 / s) ** 2)))


def _randomize_bn(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            n = mod.num_features
            mod.weight.data = 0.5 + torch.rand(n, generator=g)
            mod.bias.data = 0.2 * torch.randn(n, generator=g)
            mod.running_mean = 0.2 * torch.randn(n, generator=g)
            mod.running_var = 0.5 + torch.rand(n, generator=g)


def test_fuse_keeps_outputs(nano):
    m = copy.deepcopy(nano).eval()
    _randomize_bn(m)
    x = torch.rand(1, 3, 160, 224, generator=torch.Generator().manual_seed(2))
    for dtype in (torch.float64, torch.float32):
        a = copy.deepcopy(m).to(dtype)
        b = copy.deepcopy(a).fuse()
        assert b.is_fused() and not a.is_fused()
        assert not any(isinstance(mod, nn.BatchNorm2d) for mod in b.modules())
        with torch.no_grad():
            (p1, q1), (p2, q2) = a(x.to(dtype)), b(x.to(dtype))
        assert (p1[:, 4:] - p1[:, 4:].mean()).abs().max() > 1e-3  # BN stats are not the trivial defaults
        if dtype == torch.float64:  # the fused arithmetic is exact: only rounding remains
            assert (p1 - p2).abs().max() < 1e-5 and (q1 - q2).abs().max() < 1e-5
        else:  # float32: scores, coefficients, protos within 1e-5; boxes (pixels, up to ~600) to rounding
            assert (p1[:, 4:] - p2[:, 4:]).abs().max() < 1e-5 and (q1 - q2).abs().max() < 1e-5
            assert (p1[:, :4] - p2[:, :4]).abs().max() < 1e-3


def _reference_flops(model, imgsz):
    """2 x multiply-adds of every convolution / transposed convolution / attention product, from hooks."""
    total = [0]

    def hook(mod, inp, out):
        if isinstance(mod, nn.ConvTranspose2d):
            total[0] += 2 * inp[0].numel() * mod.out_channels * mod.kernel_size[0] * mod.kernel_size[1]
        elif isinstance(mod, nn.Conv2d):
            total[0] += 2 * out.numel() * (mod.in_channels // mod.groups) * mod.kernel_size[0] * mod.kernel_size[1]

    def attn_hook(mod, inp, out):
        b, c, h, w = inp[0].shape
        n = h * w
        total[0] += 2 * b * mod.num_heads * n * n * (mod.key_dim + mod.head_dim)

    from yoloseg.nn.blocks import Attention

    handles = [mod.register_forward_hook(attn_hook if isinstance(mod, Attention) else hook) for mod in model.modules()]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, imgsz, imgsz))
    finally:
        for h in handles:
            h.remove()
    return total[0]


def test_info_summary(nano, capsys):
    m = copy.deepcopy(nano)
    layers, params, grads, gflops = m.info(imgsz=640)
    out = capsys.readouterr().out
    assert "2,876,848 parameters" in out and "GFLOPs" in out
    assert params == ULTRALYTICS_PARAMS["n"] and grads == params - 16
    assert layers == sum(1 for mod in m.modules() if not list(mod.children()))
    assert gflops * 1e9 == pytest.approx(_reference_flops(copy.deepcopy(nano), 640), rel=1e-9)
    assert gflops == pytest.approx(ULTRALYTICS_FUSED_GFLOPS["n"], abs=1e-5)
    fused = copy.deepcopy(nano).fuse()
    assert fused.info(imgsz=640, verbose=False)[3] == pytest.approx(gflops, rel=1e-9)


def test_flops_small_scale_matches_reference():
    m = SegmentationModel("yolo11s-seg.yaml")
    assert count_flops(m, 640) / 1e9 == pytest.approx(ULTRALYTICS_FUSED_GFLOPS["s"], abs=1e-5)
    assert count_flops(m, 320) == pytest.approx(_reference_flops(m, 320), rel=1e-9)
