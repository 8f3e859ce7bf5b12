"""Write the training-recipe parity fixture tests/fixtures/schedule/recipe.json.

Development tooling only: it needs the side-by-side peers environment with ultralytics installed and is
never imported by yoloseg or by its tests. Run it with

    YOLO_OFFLINE=1 YOLO_AUTOINSTALL=0 YOLO_CONFIG_DIR=$(mktemp -d) \
        ../peers-venv/bin/python bench/tools/make_recipe_fixture.py

What it stores (all deterministic, no training):
- ``defaults``: the reference trainer's default hyper-parameters that shape a segmentation training run (loss
  gains, optimizer and schedule settings, augmentation probabilities and magnitudes, close_mosaic).
- ``closed``: which augmentation probabilities its dataset sets to 0 when mosaic is closed for the last epochs.
- ``ema``: the EMA's maximum decay and time constant, and its decay after k updates for a few k.
- ``bias_init``: the head's initial biases of a from-scratch yolo11n-seg with 3 classes: per level the box
  branch's bias value(s) and the class branch's bias value(s), with the level strides.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "schedule" / "recipe.json"
NC = 3
KEYS = ("epochs", "batch", "imgsz", "patience", "optimizer", "lr0", "lrf", "momentum", "weight_decay",
        "warmup_epochs", "warmup_momentum", "warmup_bias_lr", "cos_lr", "nbs", "box", "cls", "dfl",
        "overlap_mask", "mask_ratio", "close_mosaic", "hsv_h", "hsv_s", "hsv_v", "degrees", "translate", "scale",
        "shear", "perspective", "flipud", "fliplr", "bgr", "mosaic", "mixup", "cutmix", "copy_paste",
        "copy_paste_mode")
EMA_K = (1, 10, 100, 1000, 2000, 10000)


def main():
    import ultralytics
    from ultralytics.cfg import get_cfg
    from ultralytics.data.dataset import YOLODataset
    from ultralytics.nn.tasks import SegmentationModel
    from ultralytics.utils import IterableSimpleNamespace
    from ultralytics.utils.torch_utils import ModelEMA

    cfg = get_cfg()
    defaults = {k: getattr(cfg, k) for k in KEYS}

    # what close_mosaic switches off: call the dataset's own close_mosaic on a namespace of the defaults,
    # with its transform rebuild stubbed out
    hyp = IterableSimpleNamespace(**{**vars(cfg), **{k: 1.0 for k in ("mosaic", "mixup", "cutmix", "copy_paste")}})
    stub = YOLODataset.__new__(YOLODataset)
    stub.build_transforms = lambda hyp=None: None
    before = dict(vars(hyp))
    YOLODataset.close_mosaic(stub, hyp)
    closed = sorted(k for k, v in vars(hyp).items() if v != before[k] and v == 0.0)

    torch.manual_seed(0)
    model = SegmentationModel("yolo11n-seg.yaml", nc=NC, verbose=False)
    ema = ModelEMA(model)
    head = model.model[-1]
    box_heads = getattr(head, "cv2", None)
    cls_heads = getattr(head, "cv3", None)
    if box_heads is None:  # newer heads keep them in a dict
        box_heads, cls_heads = head.one2many["box_head"], head.one2many["cls_head"]
    bias = {
        "stride": [float(s) for s in head.stride],
        "box": [sorted({round(float(v), 9) for v in b[-1].bias.detach()}) for b in box_heads],
        "cls": [sorted({round(float(v), 9) for v in c[-1].bias.detach()}) for c in cls_heads],
    }
    info = {
        "ultralytics": ultralytics.__version__,
        "nc": NC,
        "defaults": defaults,
        "closed": closed,
        "ema": {"k": list(EMA_K), "decay": [ema.decay(k) for k in EMA_K]},
        "bias_init": bias,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(info, indent=1) + "\n")
    print(json.dumps(info, indent=1))


if __name__ == "__main__":
    main()
