"""What every figure shares: matplotlib without a display (Agg), markers and line styles in
the order methods are given them, the resolution, and the palette PNG every figure is saved
as. :mod:`analysis.plots` and the inference frontier (:mod:`analysis.inference`) draw with
these, so a method keeps its marker across figures.
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
from PIL import Image  # noqa: E402  (a matplotlib dependency)

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
LINESTYLES = ("-", "--", "-.", ":")
DPI = 100


def save_png(fig, path: Path) -> None:
    """Save ``fig`` as a palette PNG (128 colours): a third of the size of matplotlib's RGBA
    output at no visible cost for line plots, which keeps the executed notebook small."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    buffer.seek(0)
    with Image.open(buffer) as image:
        image.convert("RGB").quantize(colors=128).save(path, optimize=True)
