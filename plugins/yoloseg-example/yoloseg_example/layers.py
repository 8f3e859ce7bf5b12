"""The `LiteConv` layer type: a depthwise 3x3 convolution followed by a pointwise 1x1 convolution."""

from torch import nn

from yoloseg.nn import Conv, DWConv


class LiteConv(nn.Module):
    def __init__(self, c1: int, c2: int, s: int = 1):
        super().__init__()
        self.dw = DWConv(c1, c1, 3, s)
        self.pw = Conv(c1, c2, 1, 1)

    def forward(self, x):
        return self.pw(self.dw(x))


def build_lite_conv(spec: dict, ch_in: list[int], ctx):
    """Model-YAML builder: `{type: LiteConv, out: C, s: 2}` -> (module, output channels)."""
    if len(ch_in) != 1:
        raise ValueError(f"LiteConv takes one input, got from={spec.get('from')!r}")
    c2 = ctx.channels(spec["out"])
    return LiteConv(ch_in[0], c2, int(spec.get("s", 1))), c2
