"""Data: data YAMLs, label checks, the segmentation data set, augmentations, loaders, sources.

Public names load lazily so that ``import yoloseg.data`` stays cheap (no torch/cv2 until used).
"""

__all__ = [
    "LetterBox",
    "SegmentDataset",
    "build_dataloader",
    "build_dataset",
    "check_data_yaml",
    "collate_fn",
    "ensure_synthetic_shapes",
    "img2label_paths",
    "load_sources",
    "scan_labels",
]

_LAZY = {
    "LetterBox": "yoloseg.data.letterbox",
    "SegmentDataset": "yoloseg.data.dataset",
    "build_dataset": "yoloseg.data.dataset",
    "collate_fn": "yoloseg.data.dataset",
    "build_dataloader": "yoloseg.data.loader",
    "check_data_yaml": "yoloseg.data.yaml",
    "img2label_paths": "yoloseg.data.yaml",
    "ensure_synthetic_shapes": "yoloseg.data.synthetic",
    "load_sources": "yoloseg.data.sources",
    "scan_labels": "yoloseg.data.labels",
}


def __getattr__(name):
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'yoloseg.data' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(mod), name)
