"""Layer vocabulary of the model YAML: layer type name -> builder.

A builder turns one layer entry of the YAML into a module::

    def build(spec: dict, ch_in: list[int], ctx: BuildContext) -> tuple[nn.Module, int]

``spec`` is the layer's mapping from the YAML (``type``, ``from`` and the layer's own keys), ``ch_in`` the
channel counts of its inputs (one per ``from`` index) and ``ctx`` the scale context (width/depth scaling,
``nc``). It returns the module and its output channel count. Plugins add layer types (e.g. a new head) with::

    from yoloseg.nn.registry import register_layer

    @register_layer("MyHead")
    def build_my_head(spec, ch_in, ctx): ...

Names are looked up only in this registry, never in module globals.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass, field

Builder = Callable[..., tuple]


@dataclass
class BuildContext:
    """Scale constants of the model being built."""

    nc: int
    depth: float = 1.0
    width: float = 1.0
    max_channels: int = 1024
    scale: str | None = None
    options: dict = field(default_factory=dict)  # extra per-scale keys from the YAML (e.g. c3k)

    def channels(self, c: int, divisor: int = 8) -> int:
        """Width-scaled channel count: min(c, max_channels) * width, rounded up to a multiple of ``divisor``."""
        return int(math.ceil(min(c, self.max_channels) * self.width / divisor) * divisor)

    def repeats(self, n: int) -> int:
        """Depth-scaled repeat count (counts of 1 stay 1)."""
        return max(round(n * self.depth), 1) if n > 1 else n


class LayerRegistry:
    def __init__(self):
        self._builders: dict[str, Builder] = {}

    def register(self, name: str, builder: Builder | None = None, *, replace: bool = False):
        """Register ``builder`` under ``name``; usable as ``register(name, fn)`` or ``@register(name)``."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"layer name must be a non-empty string, got {name!r}")

        def add(fn: Builder) -> Builder:
            if not callable(fn):
                raise ValueError(f"builder for layer {name!r} must be callable, got {fn!r}")
            if name in self._builders and not replace and self._builders[name] is not fn:
                raise ValueError(f"layer type {name!r} is already registered (pass replace=True to override)")
            self._builders[name] = fn
            return fn

        return add if builder is None else add(builder)

    def unregister(self, name: str) -> None:
        self._builders.pop(name, None)

    def get(self, name: str) -> Builder:
        try:
            return self._builders[name]
        except KeyError:
            close = difflib.get_close_matches(str(name), list(self._builders), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            known = sorted(self._builders)
            raise ValueError(f"unknown layer type {name!r} in model config.{hint} Known: {known}") from None

    def __contains__(self, name: str) -> bool:
        return name in self._builders

    def names(self) -> list[str]:
        return sorted(self._builders)


LAYERS = LayerRegistry()
register_layer = LAYERS.register
get_layer = LAYERS.get
