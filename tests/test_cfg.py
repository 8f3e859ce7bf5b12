"""Settings: schema <-> default.yaml, coercion of command-line strings, ranges, choices, unknown keys."""

import re
from pathlib import Path

import pytest
import yaml

from yoloseg.cfg import DEFAULT_CFG_PATH, CfgError, get_cfg, load_defaults, parse_cli_args
from yoloseg.cfg.schema import MODE_DEFAULTS, SCHEMA, SECTIONS, render_default_yaml, render_markdown

ROOT = Path(__file__).resolve().parents[1]

# Keys users know from the Ultralytics grammar that every mode of yoloseg relies on.
REQUIRED_KEYS = """task mode model data epochs time patience batch imgsz save save_period cache device workers project
name exist_ok pretrained optimizer verbose seed deterministic single_cls rect cos_lr close_mosaic resume amp fraction
freeze overlap_mask mask_ratio val split save_json conf iou max_det half dnn plots source stream show save_txt
save_conf save_crop show_labels show_conf show_boxes line_width vid_stride retina_masks classes agnostic_nms augment
format optimize dynamic simplify opset end2end lr0 lrf momentum weight_decay warmup_epochs warmup_momentum
warmup_bias_lr box cls dfl nbs hsv_h hsv_s hsv_v degrees translate scale shear perspective flipud fliplr mosaic mixup
copy_paste""".split()


def test_schema_has_every_user_key_with_help():
    missing = [k for k in REQUIRED_KEYS if k not in SCHEMA]
    assert not missing
    for s in SCHEMA.values():
        assert s.help and s.section in SECTIONS, s.key


def test_packaged_yaml_is_rendered_from_schema():
    # One source of truth: the file on disk must equal what the schema renders (regenerate after edits).
    assert DEFAULT_CFG_PATH.read_text(encoding="utf-8") == render_default_yaml()


def test_packaged_yaml_has_a_comment_per_key_and_schema_defaults():
    text = DEFAULT_CFG_PATH.read_text(encoding="utf-8")
    keyed = [ln for ln in text.splitlines() if re.match(r"^[a-z_0-9]+:", ln)]
    assert len(keyed) == len(SCHEMA)
    assert all(re.search(r"#\s*\(.+\)\s+\S", ln) for ln in keyed)
    parsed = yaml.safe_load(text)
    assert list(parsed) == list(SCHEMA)
    assert {k: s.default for k, s in SCHEMA.items()} == parsed == load_defaults()


def test_docs_cli_md_contains_the_rendered_tables():
    assert render_markdown() in (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")


def test_defaults_need_no_arguments():
    cfg = get_cfg({})
    assert cfg.model == "yolo11n-seg.yaml" and cfg.data == "synthetic-shapes" and cfg.task == "segment"
    assert cfg.epochs == 100 and cfg.imgsz == 640 and cfg.batch == 16 and cfg.conf is None
    assert set(vars(cfg)) == set(SCHEMA)


@pytest.mark.parametrize(
    "key, raw, expected",
    [
        ("epochs", "10", 10),
        ("epochs", "10.0", 10),
        ("epochs", 7.0, 7),
        ("lr0", "1e-3", 0.001),
        ("lr0", 1, 1.0),
        ("conf", "0.25", 0.25),
        ("conf", "None", None),
        ("conf", "", None),
        ("save", "False", False),
        ("save", "true", True),
        ("save", "1", True),
        ("imgsz", "640", 640),
        ("imgsz", "[480,640]", [480, 640]),
        ("imgsz", "480,640", [480, 640]),
        ("imgsz", (320, 416), [320, 416]),
        ("imgsz", [512], 512),
        ("batch", "8", 8),
        ("batch", "-1", -1),
        ("batch", "0.7", 0.7),
        ("device", 0, "0"),
        ("device", [0, 1], "0,1"),
        ("device", "cpu", "cpu"),
        ("device", "null", None),
        ("cache", "ram", "ram"),
        ("cache", "DISK", "disk"),
        ("cache", "true", True),
        ("optimizer", "adamw", "AdamW"),
        ("classes", "0", 0),
        ("classes", "[0, 2]", [0, 2]),
        ("freeze", "10", 10),
        ("pretrained", "weights/x.pt", "weights/x.pt"),
        ("pretrained", "False", False),
        ("resume", "True", True),
        ("name", "001", "001"),
        ("project", Path("runs/x"), str(Path("runs/x"))),
        ("format", "TorchScript", "torchscript"),
        ("opset", "17", 17),
        ("time", "0.5", 0.5),
    ],
)
def test_coercion(key, raw, expected):
    got = getattr(get_cfg({key: raw}), key)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"conf": 1.5}, "0 <= conf <= 1"),
        ({"conf": "-0.1"}, "0 <= conf <= 1"),
        ({"iou": 2}, "0 <= iou <= 1"),
        ({"epochs": 0}, "epochs >= 1"),
        ({"epochs": "ten"}, "epochs='ten'"),
        ({"epochs": 2.5}, "epochs=2.5"),
        ({"epochs": True}, "epochs=True"),
        ({"epochs": None}, "epochs must not be empty"),
        ({"imgsz": 16}, "imgsz >= 32"),
        ({"imgsz": [320, 320, 3]}, "imgsz"),
        ({"batch": 0}, "batch=0"),
        ({"batch": 1.5}, "batch=1.5"),
        ({"save": "maybe"}, "save='maybe'"),
        ({"optimizer": "sgdd"}, "one of auto, SGD"),
        ({"format": "tflite"}, "onnx, torchscript"),
        ({"fraction": 0}, "0 < fraction <= 1"),
        ({"momentum": 1.0}, "momentum < 1"),
        ({"mode": "track"}, "mode='track'"),
        ({"task": ""}, "task must not be empty"),
        ({"workers": -1}, "workers >= 0"),
        ({"classes": [0, -1]}, "classes"),
        ({"cache": "gpu"}, "cache='gpu'"),
        ({"time": 0}, "time > 0"),
        ({"lr0": float("nan")}, "lr0"),
    ],
)
def test_invalid_values_name_the_key(overrides, fragment):
    with pytest.raises(ValueError) as e:
        get_cfg(overrides)
    assert fragment in str(e.value)
    assert isinstance(e.value, CfgError)


@pytest.mark.parametrize(
    "bad, suggestion",
    [("epoch", "epochs"), ("imgz", "imgsz"), ("weight_decy", "weight_decay"), ("retina_mask", "retina_masks"), ("batchsize", "batch")],
)
def test_unknown_key_suggests_the_closest(bad, suggestion):
    with pytest.raises(ValueError, match=rf"unknown setting '{bad}'; did you mean '{suggestion}'\?"):
        get_cfg({bad: 1})


def test_unknown_key_without_close_match_points_to_help():
    with pytest.raises(ValueError, match="unknown setting 'zzzqqq'.*--help"):
        get_cfg({"zzzqqq": 1})


def test_dashes_are_accepted_for_underscores():
    assert get_cfg({"save-txt": "true"}).save_txt is True


def test_mode_defaults_layering():
    assert get_cfg({"mode": "predict"}).conf == 0.25 and get_cfg({"mode": "predict"}).batch == 1
    assert get_cfg({"mode": "val"}).conf == 0.001
    assert get_cfg({"mode": "export"}).batch == 1
    assert get_cfg({"mode": "train"}).batch == 16
    # an explicit value always wins over the mode's default
    assert get_cfg({"mode": "predict", "batch": 4, "conf": 0.5}).batch == 4
    assert set(MODE_DEFAULTS) == {"train", "val", "predict", "export", "info"}
    # `defaults` sit above the mode defaults and below overrides
    cfg = get_cfg({"epochs": 3}, defaults={"epochs": 50, "imgsz": 320, "mode": "predict"})
    assert (cfg.epochs, cfg.imgsz, cfg.batch) == (3, 320, 1)


def test_defaults_are_validated_too():
    with pytest.raises(ValueError, match="unknown setting 'epoc'.*defaults"):
        get_cfg({}, defaults={"epoc": 3})


def test_cfg_file_layer(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("epochs: 7\nimgsz: 320\n")
    cfg = get_cfg({"cfg": str(f), "imgsz": "416"})
    assert (cfg.epochs, cfg.imgsz, cfg.cfg) == (7, 416, str(f))
    f.write_text("epohcs: 7\n")
    with pytest.raises(ValueError, match="epohcs.*did you mean 'epochs'"):
        get_cfg({"cfg": str(f)})
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        get_cfg({"cfg": str(tmp_path / "nope.yaml")})


def test_overrides_do_not_mutate_inputs():
    over = {"imgsz": [320, 320]}
    cfg = get_cfg(over)
    cfg.imgsz.append(1)
    assert over == {"imgsz": [320, 320]}
    assert load_defaults()["imgsz"] == 640


def test_parse_cli_args():
    assert parse_cli_args(["epochs=3", "source=http://x/a.jpg?b=c", "name="]) == {
        "epochs": "3", "source": "http://x/a.jpg?b=c", "name": ""}
    with pytest.raises(ValueError, match="expected key=value, got 'epochs'"):
        parse_cli_args(["epochs"])
    with pytest.raises(ValueError, match="did you mean 'epochs'"):
        parse_cli_args(["epoch=3"])


@pytest.mark.parametrize("key, why", [("kobj", "pose"), ("visualize", "visualisation"), ("erasing", "classification"),
                                      ("workspace", "TensorRT")])
def test_ultralytics_only_settings_say_so(key, why):
    from yoloseg.cfg import CfgError, get_cfg

    with pytest.raises(CfgError, match=f"'{key}' is an Ultralytics setting that yoloseg does not have: .*{why}"):
        get_cfg({key: 1})
