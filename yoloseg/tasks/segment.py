"""The built-in instance segmentation task (YOLO11-seg), published as entry point `segment`.

Everything heavy is named lazily, so importing this module costs nothing beyond yoloseg.tasks.base.
"""

from yoloseg.tasks.base import Task

task = Task(
    name="segment",
    description="instance segmentation: boxes, classes and per-instance masks (YOLO11-seg)",
    model_configs=("yolo11{scale}-seg.yaml", "yolo11-seg.yaml"),
    default_model="yolo11n-seg.yaml",
    layers={},  # its layer types (Conv, C3k2, C2PSA, SPPF, Segment, ...) are yoloseg.nn's built-in vocabulary
    build_model="yoloseg.nn:build_model",
    loss="yoloseg.loss:SegmentationLoss",
    loss_names=("box_loss", "seg_loss", "cls_loss", "dfl_loss"),
    # raw (pred, protos) -> per-image {"boxes", "masks"}: NMS (yoloseg.ops.non_max_suppression) + mask decoding
    postprocess="yoloseg.engine.predictor:segment_postprocess",
    results="yoloseg.engine.results:Results",
    predictor="yoloseg.engine.predictor:Predictor",
    validator="yoloseg.engine.validator:Validator",
    trainer="yoloseg.engine.trainer:Trainer",
    exporter="yoloseg.engine.exporter:Exporter",
)
