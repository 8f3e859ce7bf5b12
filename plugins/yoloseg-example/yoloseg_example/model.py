"""Model building for the tinyseg task: its packaged config names resolve to files of this package."""

from pathlib import Path

_HERE = Path(__file__).resolve().parent


def build_model(cfg="tinyseg.yaml", nc=None, ch=3):
    from yoloseg.nn import build_model as build

    if isinstance(cfg, (str, Path)) and not Path(cfg).is_file() and (_HERE / Path(cfg).name).is_file():
        cfg = _HERE / Path(cfg).name
    model = build(cfg, nc=nc, ch=ch)
    model.task = "tinyseg"
    return model
