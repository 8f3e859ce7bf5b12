"""yoloseg-example: the `tinyseg` task, published through the `yoloseg.tasks` entry point group.

Importing this module is cheap: everything heavy is named as a lazy "module:attr" string.
"""

from yoloseg.tasks import Task

task = Task(
    name="tinyseg",
    description="example plugin: a tiny segmentation network built from a LiteConv backbone",
    model_configs=("tinyseg.yaml",),
    default_model="tinyseg.yaml",
    layers={"LiteConv": "yoloseg_example.layers:build_lite_conv"},
    build_model="yoloseg_example.model:build_model",
    # A setting of its own: checked, listed by `yoloseg tinyseg train --help`, handed to the loss in hyp.
    settings=(
        dict(key="mask_gain", default=1.0, type="float", range=">=0",
             help="weight of the mask loss term (on top of the box gain)"),
    ),
    loss="yoloseg_example.loss:TinySegLoss",
    # The rest is yoloseg's segmentation machinery, reused as is.
    loss_names=("box_loss", "seg_loss", "cls_loss", "dfl_loss"),
    postprocess="yoloseg.engine.predictor:segment_postprocess",
    results="yoloseg.engine.results:Results",
    predictor="yoloseg.engine.predictor:Predictor",
    validator="yoloseg.engine.validator:Validator",
    trainer="yoloseg.engine.trainer:Trainer",
    exporter="yoloseg.engine.exporter:Exporter",
)
