"""The training recipe equals the reference trainer's: default hyper-parameters (loss gains, optimizer and
schedule settings, augmentation probabilities, close_mosaic), what closing mosaic switches off, the EMA decay
ramp and the head's initial biases (tests/fixtures/schedule/recipe.json, from
bench/tools/make_recipe_fixture.py). The per-iteration schedule and the weight-decay scaling are in
test_schedule_parity.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from yoloseg.cfg import load_defaults
from yoloseg.nn.model import SegmentationModel
from yoloseg.utils.ema import ModelEMA

REF = json.loads((Path(__file__).parent / "fixtures" / "schedule" / "recipe.json").read_text())


@pytest.mark.parametrize("key", sorted(REF["defaults"]))
def test_default_matches_reference(key):
    ours = load_defaults()
    assert key in ours, f"{key} is not a yoloseg setting"
    assert ours[key] == REF["defaults"][key], f"{key}: yoloseg {ours[key]!r}, reference {REF['defaults'][key]!r}"


def test_close_mosaic_switches_off_the_same_augmentations():
    # yoloseg's side is tests/test_data_dataset.py::test_close_mosaic_also_ends_copy_paste (mixup and cutmix only
    # ever run on mosaic samples there)
    assert REF["closed"] == ["copy_paste", "cutmix", "mixup", "mosaic"]


def test_ema_decay_ramp():
    ema = ModelEMA(torch.nn.Linear(1, 1))
    for k, want in zip(REF["ema"]["k"], REF["ema"]["decay"]):
        assert ema.decay(k) == pytest.approx(want, rel=1e-12, abs=1e-15)


def test_head_bias_init():
    torch.manual_seed(0)
    head = SegmentationModel("yolo11n-seg.yaml", nc=REF["nc"]).head
    ref = REF["bias_init"]
    assert head.stride.tolist() == ref["stride"]
    for box_branch, cls_branch, box, cls in zip(head.cv2, head.cv3, ref["box"], ref["cls"]):
        assert sorted({round(float(v), 9) for v in box_branch[-1].bias.detach()}) == box
        got = sorted({round(float(v), 6) for v in cls_branch[-1].bias.detach()})
        assert got == [round(v, 6) for v in cls]
