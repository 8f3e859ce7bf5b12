"""yoloseg: instance segmentation with the YOLO11-seg model family."""

__version__ = "0.1.0"

__all__ = ["YOLO", "__version__"]


def __getattr__(name):
    # Keep `import yoloseg` cheap: the facade (and torch) load on first use.
    if name == "YOLO":
        from yoloseg.engine.model import YOLO

        return YOLO
    raise AttributeError(f"module 'yoloseg' has no attribute {name!r}")
