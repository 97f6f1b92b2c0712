"""Decoding any image file into an RGB uint8 array, with one clear error type for bad files."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

# Refuse decompression bombs, but allow the 10k x 10k photos some cameras and scanners produce.
Image.MAX_IMAGE_PIXELS = 180_000_000


class ImageError(ValueError):
    """An image that cannot be used: missing, unreadable, not an image, or degenerate."""


def to_rgb(img: Image.Image) -> np.ndarray:
    """A PIL image in any mode (L, LA, P, RGBA, CMYK, I;16, I, F) → RGB uint8 ``(H, W, 3)``."""
    # exif_transpose copies even an upright image; a 10k x 10k photo is 300 MB per copy, so only
    # call it when the EXIF orientation tag (0x0112) asks for a rotation or a flip.
    if img.getexif().get(0x0112, 1) not in (1, None):
        img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or a.max() > 255 else 255.0
        a = np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Composite on white: transparent padding around cut-out faces should not read as black.
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(bg, rgba)
    return np.asarray(img if img.mode == "RGB" else img.convert("RGB"), dtype=np.uint8)


def load_rgb(path) -> np.ndarray:
    """Read ``path`` as RGB uint8 ``(H, W, 3)``; raise :class:`ImageError` with the reason otherwise."""
    p = Path(path)
    if not p.exists():
        raise ImageError(f"{p}: no such file")
    if not p.is_file():
        raise ImageError(f"{p}: not a regular file")
    if os.path.getsize(p) == 0:
        raise ImageError(f"{p}: empty file")
    try:
        with Image.open(p) as img:
            img.load()
            arr = to_rgb(img)
    except ImageError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageError(f"{p}: image too large ({e})") from None
    except (OSError, SyntaxError, ValueError) as e:  # PIL raises these for corrupt/truncated data
        raise ImageError(f"{p}: cannot decode image ({e})") from None
    except MemoryError:
        raise ImageError(f"{p}: not enough memory to decode this image") from None
    except Exception as e:  # any other decoder failure (bad EXIF, odd plugin data): one file, not the run
        raise ImageError(f"{p}: cannot decode image ({type(e).__name__}: {e})") from None
    if arr.shape[0] < 2 or arr.shape[1] < 2:
        raise ImageError(f"{p}: image is {arr.shape[1]}x{arr.shape[0]} pixels, too small for a face")
    return arr
