"""Neural-network side of yoloseg: building blocks, the layer registry and the YOLO11-seg model."""

from yoloseg.nn.blocks import C2PSA, C3k, C3k2, DFL, SPPF, Attention, Bottleneck, Proto, PSABlock
from yoloseg.nn.conv import Concat, Conv, DWConv
from yoloseg.nn.head import Segment, make_anchors
from yoloseg.nn.model import SegmentationModel, build_model
from yoloseg.nn.registry import BuildContext, get_layer, register_layer

__all__ = [
    "Attention",
    "Bottleneck",
    "BuildContext",
    "C2PSA",
    "C3k",
    "C3k2",
    "Concat",
    "Conv",
    "DFL",
    "DWConv",
    "PSABlock",
    "Proto",
    "SPPF",
    "Segment",
    "SegmentationModel",
    "build_model",
    "get_layer",
    "make_anchors",
    "register_layer",
]
