"""Synthetic degradations of aligned chips: the controlled quality spread used to choose defaults,
to test the ordering of clean above degraded, and to build the demo's genuine pairs.

Each function maps an RGB uint8 chip and a severity to a new RGB uint8 chip of the same size.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageFilter


def blur(chip: np.ndarray, sigma: float) -> np.ndarray:
    return np.asarray(Image.fromarray(chip).filter(ImageFilter.GaussianBlur(sigma)))


def downscale(chip: np.ndarray, pixels: int) -> np.ndarray:
    """Down to ``pixels`` wide (area averaging), back up bilinearly: lost resolution."""
    h, w = chip.shape[:2]
    small = Image.fromarray(chip).resize((pixels, max(1, round(pixels * h / w))), Image.BOX)
    return np.asarray(small.resize((w, h), Image.BILINEAR))


def noise(chip: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(chip + rng.normal(0, sigma, chip.shape), 0, 255).astype(np.uint8)


def jpeg(chip: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(chip).save(buf, "JPEG", quality=int(quality))
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def occlusion(chip: np.ndarray, fraction: float) -> np.ndarray:
    """Grey out the lower ``fraction`` of the chip (mask, scarf, hand)."""
    out = chip.copy()
    h = chip.shape[0]
    out[int(round(h * (1 - fraction))):] = 128
    return out


def darken(chip: np.ndarray, factor: float) -> np.ndarray:
    return np.clip(chip.astype(np.float32) * factor, 0, 255).astype(np.uint8)


DEGRADATIONS = {
    "blur": (blur, (2.0, 4.0)),
    "downscale": (downscale, (40, 24)),
    "noise": (noise, (20.0, 40.0)),
    "jpeg": (jpeg, (20, 5)),
    "occlusion": (occlusion, (0.3, 0.5)),
    "darken": (darken, (0.5, 0.25)),
}


def degrade(chip: np.ndarray, kind: str, severity) -> np.ndarray:
    if kind not in DEGRADATIONS:
        raise ValueError(f"unknown degradation {kind!r}; choose one of {', '.join(DEGRADATIONS)}")
    return DEGRADATIONS[kind][0](chip, severity)


def degraded_set(chips: np.ndarray):
    """Every chip under every degradation at every severity: yields (kind, level, severity, chips)."""
    for kind, (fn, severities) in DEGRADATIONS.items():
        for level, sev in enumerate(severities, start=1):
            yield kind, level, sev, np.stack([fn(c, sev) for c in chips])
