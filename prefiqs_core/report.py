"""Pictures people would rather look at than read: a contact sheet of chips sorted by quality."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def _colour(q: float, lo: float, hi: float) -> tuple[int, int, int]:
    # red (worst) → amber → green (best), relative to the sheet's own range
    t = 0.5 if hi <= lo else float(np.clip((q - lo) / (hi - lo), 0, 1))
    return (int(220 * (1 - t) + 30 * t), int(60 + 140 * t), 60)


def contact_sheet(chips: Sequence[np.ndarray], qualities: Sequence[float], captions: Sequence[str],
                  path, cols: int = 8, tile: int = 150, title: str = "") -> Path:
    """Write a PNG grid of ``chips`` sorted worst quality first, each tile captioned and colour-coded."""
    if len(chips) == 0:
        raise ValueError("no chips to draw")
    order = np.argsort(np.asarray(qualities, dtype=float), kind="stable")
    cols = max(1, min(cols, len(order)))
    rows = (len(order) + cols - 1) // cols
    cap_h, head = 34, (28 if title else 0)
    sheet = Image.new("RGB", (cols * tile, head + rows * (tile + cap_h)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    if title:
        draw.text((6, 6), title, fill=(0, 0, 0), font=font)
    lo, hi = float(np.min(qualities)), float(np.max(qualities))
    for rank, i in enumerate(order):
        r, c = divmod(rank, cols)
        x, y = c * tile, head + r * (tile + cap_h)
        im = Image.fromarray(np.asarray(chips[i], dtype=np.uint8)).resize((tile, tile))
        sheet.paste(im, (x, y))
        col = _colour(qualities[i], lo, hi)
        draw.rectangle([x, y + tile, x + tile - 1, y + tile + cap_h - 1], fill=col)
        draw.text((x + 4, y + tile + 2), f"#{rank + 1} q={qualities[i]:.4f}", fill=(255, 255, 255), font=font)
        draw.text((x + 4, y + tile + 17), str(captions[i])[:24], fill=(255, 255, 255), font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path
