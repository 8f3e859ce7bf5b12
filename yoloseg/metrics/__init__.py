"""Metrics: COCO-exact box and mask evaluation and run-length mask utilities."""

from yoloseg.metrics.coco import COCOEvalResult, coco_evaluate

__all__ = ["COCOEvalResult", "coco_evaluate"]
