"""Training losses: task-aligned assignment, CIoU box loss, DFL, BCE class loss and the instance mask loss."""

from .assigner import Assignment, TaskAlignedAssigner
from .box import complete_iou, dfl_loss
from .detect import DEFAULT_HYP, DetectionLoss
from .segment import SegmentationLoss

__all__ = [
    "DEFAULT_HYP",
    "Assignment",
    "DetectionLoss",
    "SegmentationLoss",
    "TaskAlignedAssigner",
    "complete_iou",
    "dfl_loss",
]
