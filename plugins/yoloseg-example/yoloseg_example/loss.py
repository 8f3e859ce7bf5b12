"""The tinyseg loss: yoloseg's segmentation loss with the mask term weighted by the task's own setting.

`mask_gain` is declared in the task's `settings`, so `yoloseg tinyseg train mask_gain=2` is checked like
any yoloseg setting, saved with the run, and arrives here in `hyp`.
"""

from yoloseg.loss import SegmentationLoss


class TinySegLoss(SegmentationLoss):
    def __init__(self, model=None, hyp=None, **kwargs):
        super().__init__(model, hyp, **kwargs)
        value = hyp.get("mask_gain") if isinstance(hyp, dict) else getattr(hyp, "mask_gain", None)
        self.mask_gain = 1.0 if value is None else float(value)

    def mask_loss(self, *args, **kwargs):
        return super().mask_loss(*args, **kwargs) * self.mask_gain
