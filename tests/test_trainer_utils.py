"""Unit tests of the training helpers: optimizer groups, auto choice, schedules, EMA, RNG snapshots, plots."""

import io
import math
import random

import numpy as np
import pytest
import torch
from torch import nn

from yoloseg.utils.ema import ModelEMA
from yoloseg.utils.plot_results import plot_results, read_results_csv
from yoloseg.utils.torch_utils import (
    auto_optimizer,
    build_optimizer,
    get_rng_state,
    lr_lambda,
    select_device,
    set_rng_state,
    split_param_groups,
)


def test_param_groups_decay_only_on_conv_and_linear_weights():
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Conv2d(8, 4, 1, bias=False), nn.Flatten(),
                        nn.Linear(4, 2), nn.LayerNorm(2))
    decay, norm, bias = split_param_groups(net)
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    assert ids(decay) == {id(net[0].weight), id(net[2].weight), id(net[4].weight)}
    assert ids(norm) == {id(net[1].weight), id(net[5].weight)}
    assert ids(bias) == {id(net[0].bias), id(net[1].bias), id(net[4].bias), id(net[5].bias)}
    opt, name, lr, _ = build_optimizer(net, "SGD", lr=0.02, momentum=0.9, decay=1e-3)
    assert name == "SGD" and lr == 0.02
    groups = {g["param_group"]: g for g in opt.param_groups}
    assert groups["weight"]["weight_decay"] == 1e-3
    assert groups["norm"]["weight_decay"] == 0.0 and groups["bias"]["weight_decay"] == 0.0
    assert groups["weight"]["nesterov"] is True


@pytest.mark.parametrize("name,cls", [("AdamW", torch.optim.AdamW), ("adam", torch.optim.Adam),
                                      ("NAdam", torch.optim.NAdam), ("RAdam", torch.optim.RAdam),
                                      ("RMSProp", torch.optim.RMSprop), ("sgd", torch.optim.SGD)])
def test_optimizer_names(name, cls):
    net = nn.Conv2d(3, 4, 3)
    opt, _, _, _ = build_optimizer(net, name, lr=1e-3, momentum=0.9, decay=0.0)
    assert type(opt) is cls
    assert sum(len(g["params"]) for g in opt.param_groups) == 2


def test_unknown_optimizer_is_a_clear_error():
    with pytest.raises(ValueError, match="optimizer"):
        build_optimizer(nn.Conv2d(3, 4, 3), "Lion")


def test_frozen_params_are_left_out():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 1))
    net[0].weight.requires_grad_(False)
    opt, *_ = build_optimizer(net, "SGD")
    params = [p for g in opt.param_groups for p in g["params"]]
    assert all(p is not net[0].weight for p in params) and len(params) == 3


def test_auto_optimizer_rule():
    # short schedules: AdamW with lr = 0.002 * 5 / (4 + nc); long schedules (> 10k steps): SGD 0.01
    assert auto_optimizer(nc=80, iterations=1000) == ("AdamW", round(0.01 / 84, 6), 0.9)
    assert auto_optimizer(nc=1, iterations=10_000) == ("AdamW", 0.002, 0.9)
    assert auto_optimizer(nc=3, iterations=10_001) == ("SGD", 0.01, 0.9)


def test_lr_schedules():
    lin = lr_lambda(10, 0.1, cos_lr=False)
    assert [round(lin(e), 10) for e in (0, 5, 10)] == [1.0, 0.55, 0.1]
    cos = lr_lambda(10, 0.1, cos_lr=True)
    assert cos(0) == pytest.approx(1.0) and cos(10) == pytest.approx(0.1) and cos(5) == pytest.approx(0.55)
    assert cos(2.5) == pytest.approx(0.1 + 0.9 * (1 + math.cos(math.pi / 4)) / 2)


def test_ema_follows_the_ramped_decay_formula():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    ema = ModelEMA(net, decay=0.99, tau=10)
    ref = {k: v.clone() for k, v in net.state_dict().items()}
    for k in range(1, 6):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        net[1].num_batches_tracked += 1
        ema.update(net)
        d = 0.99 * (1 - math.exp(-k / 10))
        for name, v in net.state_dict().items():
            if v.dtype.is_floating_point:
                ref[name] = d * ref[name] + (1 - d) * v
            else:
                ref[name] = v.clone()
    for name, v in ema.ema.state_dict().items():
        torch.testing.assert_close(v, ref[name], rtol=1e-6, atol=1e-6)
    assert ema.updates == 5 and not any(p.requires_grad for p in ema.ema.parameters())
    # state round trip
    other = ModelEMA(net)
    other.load_state_dict(ema.state_dict())
    assert other.updates == 5 and other.decay() == pytest.approx(ema.decay())


def test_rng_snapshot_survives_weights_only_load():
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    snap = get_rng_state()
    buf = io.BytesIO()
    torch.save(snap, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)
    first = (torch.rand(4), np.random.rand(3), random.random(), random.gauss(0, 1))
    set_rng_state(loaded)
    second = (torch.rand(4), np.random.rand(3), random.random(), random.gauss(0, 1))
    assert torch.equal(first[0], second[0]) and np.array_equal(first[1], second[1])
    assert first[2:] == second[2:]


def test_select_device():
    assert select_device("cpu") == torch.device("cpu")
    assert select_device("CPU") == torch.device("cpu")
    with pytest.raises(ValueError, match="device"):
        select_device("tpu")
    if not torch.cuda.is_available():
        for d in ("0", 0, "cuda:0"):
            with pytest.raises(ValueError, match="CUDA"):
                select_device(d)


def test_plot_results_draws_png(tmp_path):
    import cv2

    csv = tmp_path / "results.csv"
    csv.write_text("epoch,time,train/box_loss,metrics/mAP50(M),lr/pg0\n1,1.0,2.5,,0.01\n2,2.0,2.0,0.1,0.009\n"
                   "3,3.0,1.5,0.3,0.008\n")
    cols = read_results_csv(csv)
    assert cols["epoch"] == [1.0, 2.0, 3.0] and math.isnan(cols["metrics/mAP50(M)"][0])
    out = plot_results(csv)
    img = cv2.imread(str(out))
    assert out.name == "results.png" and img is not None and img.shape[0] > 100
    # two panels (lr and time are left out), each with a drawn curve (non-white pixels)
    assert img.shape[1] == 2 * 320 and (img < 200).any()
    with pytest.raises(FileNotFoundError):
        plot_results(tmp_path / "missing.csv")


def test_cpu_threads():
    from yoloseg.utils.torch_utils import idle_cores, set_cpu_threads, usable_cores

    before = torch.get_num_threads()
    try:
        assert 1 <= idle_cores() <= usable_cores()
        assert set_cpu_threads(1) == 1 and torch.get_num_threads() == 1
        assert set_cpu_threads(None) == torch.get_num_threads() >= 1
    finally:
        torch.set_num_threads(before)
