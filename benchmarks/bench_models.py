"""The benchmark's model family: a plain conv net of ~7M parameters (~28 MB of float32 weights).

Like real teams' models (and the demo family), the class takes ONE argument, the ``model`` config section
read by attribute, so ckptgate builds it through a factory: ``--ckpt-model-factory bench_models:build``.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ConvNet(nn.Module):
    """Stem, one stride-2 stage per width (``depth`` blocks each), a 1x1 classification head."""

    def __init__(self, cfg: Any) -> None:
        super().__init__()
        widths = [int(w) for w in cfg.widths]
        layers: list[nn.Module] = [_block(3, widths[0], 2)]
        cin = widths[0]
        for width in widths:
            layers.append(_block(cin, width, 2))
            layers += [_block(width, width, 1) for _ in range(int(cfg.depth) - 1)]
            cin = width
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(cin, int(cfg.num_classes), 1)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {"logits": self.head(self.body(x))}


def build(cfg: Any) -> nn.Module:
    return ConvNet(cfg)


def model_section(variant: int = 0, *, widths: tuple[int, ...] = (64, 128, 256, 512), depth: int = 3) -> dict[str, Any]:
    """A model section; ``variant`` changes the class count, so each variant is a distinct config."""
    return {"name": "convnet", "widths": list(widths), "depth": depth, "num_classes": 10 + variant}
