"""Readers for public face-verification benchmarks, with no FiftyOne import.

* insightface verification ``.bin`` files (LFW, AgeDB-30, CFP-FP, CALFW, CPLFW): a pickle of
  ``(list_of_jpeg_bytes, list_of_bools issame)``; pair ``i`` compares images ``2i`` and ``2i+1``.
  The images are 112x112 ArcFace-aligned chips. :func:`read_verification_bin`.
* a FiftyOne-zoo ``lfw``-style folder ``<root>/<split>/<identity>/<image>.jpg``:
  :func:`read_identity_folder`.

Why the ``.bin`` reader does not call ``pickle.load``: a pickle is a small program, and a crafted
file can make ``pickle.load`` import and call any function (``os.system`` …). These files are
downloaded from file-sharing links, so they are untrusted. :func:`safe_unpickle` therefore

1. scans the opcode stream first (``pickletools.genops``) and refuses any opcode outside a short
   allow-list: only bytes/str literals, ints, bools, lists, tuples and the memo/framing opcodes.
   No opcode that imports (``GLOBAL``, ``STACK_GLOBAL``, ``INST``, ``OBJ``, ``EXT*``) or calls
   (``REDUCE``, ``NEWOBJ*``, ``BUILD``) can pass; and
2. unpickles with a :class:`pickle.Unpickler` subclass whose ``find_class`` always raises, so
   even an opcode the scan missed could not reach a callable.

Files written by Python 2 store the JPEG data as ``str`` (``STRING``/``BINSTRING`` opcodes);
``encoding="bytes"`` (the default) turns those back into ``bytes`` instead of failing to decode
them as ASCII. insightface variants that pickle numpy arrays need numpy's reconstruct function
and are refused (convert them to raw JPEG bytes with trusted code first).
"""
from __future__ import annotations

import io
import pickle
import pickletools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# The opcodes a ``(list_of_bytes, list_of_bools)`` pickle of any protocol (0-5), from Python 2 or 3,
# can need. Everything else (dicts, sets, floats, None, imports, calls, persistent ids) is refused.
ALLOWED_OPCODES = frozenset({
    # framing and structure
    "PROTO", "FRAME", "STOP", "MARK", "POP", "POP_MARK", "DUP",
    # memo
    "PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE", "GET", "BINGET", "LONG_BINGET",
    # lists and tuples
    "EMPTY_LIST", "LIST", "APPEND", "APPENDS",
    "EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3",
    # bools and ints (protocol 0 writes bools as INT "I01"/"I00")
    "NEWTRUE", "NEWFALSE", "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4",
    # bytes (Python 3) and str (Python 2, read back as bytes with encoding="bytes")
    "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8",
    "STRING", "BINSTRING", "SHORT_BINSTRING",
})


class BenchmarkFormatError(ValueError):
    """The file is not a benchmark file this module can read safely (unsafe, truncated, garbage)."""


class _NoGlobalsUnpickler(pickle.Unpickler):
    """An unpickler that can build only built-in literals: every class/function lookup fails."""

    def find_class(self, module, name):
        raise BenchmarkFormatError(
            f"refusing to load {module}.{name} from the pickle: verification .bin files hold only "
            "bytes and bools, and loading other objects could execute code")

    def persistent_load(self, pid):
        raise BenchmarkFormatError("refusing a persistent id in the pickle")


def _scan_opcodes(data: bytes) -> None:
    try:
        for op, _arg, pos in pickletools.genops(data):
            if op.name not in ALLOWED_OPCODES:
                raise BenchmarkFormatError(
                    f"refusing pickle opcode {op.name} at byte {pos}: a verification .bin may only "
                    "contain bytes, bools, ints, lists and tuples (this file may be malicious)")
    except BenchmarkFormatError:
        raise
    except Exception as e:  # pickletools raises ValueError (mostly) on truncated or garbage data
        raise BenchmarkFormatError(f"not a valid pickle (truncated or corrupt): {e}") from e


def safe_unpickle(data: bytes, encoding: str = "bytes"):
    """Unpickle ``data`` allowing only bytes/str, ints, bools, lists and tuples; never runs code.

    ``encoding`` applies to Python 2 ``str`` objects: ``"bytes"`` keeps them as ``bytes``.
    Raises :class:`BenchmarkFormatError` (a ``ValueError``) for anything else.
    """
    _scan_opcodes(data)
    try:
        return _NoGlobalsUnpickler(io.BytesIO(data), encoding=encoding).load()
    except BenchmarkFormatError:
        raise
    except Exception as e:
        raise BenchmarkFormatError(f"could not unpickle: {e}") from e


@dataclass
class VerificationBin:
    """A verification set: ``images`` (2P, H, W, 3) RGB uint8 and ``issame`` (P,) bool.

    Pair ``i`` is images ``2i`` and ``2i+1``; see :meth:`pair_indices`.
    """

    images: np.ndarray
    issame: np.ndarray
    name: str = ""

    def __len__(self):
        return len(self.issame)

    def pair_indices(self) -> tuple[np.ndarray, np.ndarray]:
        """Indices ``(a, b)`` into ``images`` of the two sides of every pair: ``2i`` and ``2i+1``."""
        i = np.arange(len(self.issame))
        return 2 * i, 2 * i + 1


def _check_structure(obj) -> tuple[list, list]:
    if not isinstance(obj, (tuple, list)) or len(obj) != 2:
        raise BenchmarkFormatError("expected a pickled pair (list of image bytes, list of issame "
                                   f"flags), got {type(obj).__name__}")
    bins, issame = obj
    if not isinstance(bins, (list, tuple)) or not isinstance(issame, (list, tuple)):
        raise BenchmarkFormatError("both parts of the .bin pickle must be lists")
    if len(bins) != 2 * len(issame):
        raise BenchmarkFormatError(f"{len(bins)} images for {len(issame)} pairs: expected exactly 2 "
                                   "images per pair")
    bad = next((i for i, b in enumerate(bins) if not isinstance(b, (bytes, bytearray))), None)
    if bad is not None:
        raise BenchmarkFormatError(f"image {bad} is a {type(bins[bad]).__name__}, not encoded bytes")
    bad = next((i for i, s in enumerate(issame) if s not in (True, False)), None)
    if bad is not None:
        raise BenchmarkFormatError(f"issame[{bad}] is {issame[bad]!r}, not a bool")
    return list(bins), [bool(s) for s in issame]


def _decode(blob: bytes, index: int) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(blob)) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except Exception as e:
        raise BenchmarkFormatError(f"image {index} is not a decodable image: {e}") from e


def read_verification_bin(path, expected_size: tuple[int, int] | None = (112, 112),
                          max_pairs: int | None = None, encoding: str = "bytes") -> VerificationBin:
    """Read an insightface verification ``.bin`` (LFW, AgeDB-30, CFP-FP, CALFW, CPLFW) safely.

    Returns a :class:`VerificationBin` with RGB uint8 images (JPEG/PNG decoded by Pillow, so no
    BGR confusion) and the ``issame`` flags. ``expected_size`` (height, width) is checked for every
    image (``None`` accepts any size as long as all agree). ``max_pairs`` reads only the first pairs
    (decoding is the slow part). Unsafe, truncated or malformed files raise
    :class:`BenchmarkFormatError` (a ``ValueError``); see :func:`safe_unpickle`.
    """
    if max_pairs is not None and (int(max_pairs) != max_pairs or max_pairs < 0):
        raise ValueError(f"max_pairs must be a non-negative integer or None, got {max_pairs!r}")
    path = Path(path)
    data = path.read_bytes()
    if not data:
        raise BenchmarkFormatError(f"{path} is empty")
    bins, issame = _check_structure(safe_unpickle(data, encoding=encoding))
    if max_pairs is not None:
        issame = issame[:max_pairs]
        bins = bins[:2 * len(issame)]
    images = [_decode(b, i) for i, b in enumerate(bins)]
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise BenchmarkFormatError(f"images of different sizes in {path.name}: {sorted(shapes)[:3]}")
    if images and expected_size is not None and images[0].shape[:2] != tuple(expected_size):
        raise BenchmarkFormatError(f"images are {images[0].shape[1]}x{images[0].shape[0]}, expected "
                                   f"{expected_size[1]}x{expected_size[0]} ArcFace chips")
    stacked = np.stack(images) if images else np.zeros((0, *(expected_size or (0, 0)), 3), np.uint8)
    return VerificationBin(stacked, np.asarray(issame, dtype=bool), path.stem)


# ---------------------------------------------------------------------------------------------
# FiftyOne-zoo style identity folders


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def _identity_images(split_dir: Path, extensions) -> tuple[list[str], list[str]]:
    paths, labels = [], []
    for ident in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        for img in sorted(p for p in ident.iterdir() if p.is_file() and p.suffix.lower() in extensions):
            paths.append(str(img))
            labels.append(ident.name)
    return paths, labels


def read_identity_folder(root, split: str | list[str] | None = None, has_splits: bool = True,
                         extensions=IMAGE_EXTENSIONS) -> tuple[list[str], list[str]]:
    """Image paths and identity labels from ``<root>/<split>/<identity>/<image>`` (FiftyOne zoo
    ``lfw`` layout) without importing FiftyOne.

    ``split``: one split name, a list of them, or ``None`` for every split folder under ``root``.
    ``has_splits=False`` reads ``<root>/<identity>/<image>`` instead. The identity label is the
    folder name. Output is sorted by split, identity, file name. Raises ``ValueError`` if ``root``
    or a requested split is missing, or no image is found.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root} is not a directory")
    exts = tuple(e.lower() for e in extensions)
    if not has_splits:
        dirs = [root]
    elif split is None:
        dirs = sorted(p for p in root.iterdir() if p.is_dir())
    else:
        names = [split] if isinstance(split, str) else list(split)
        dirs = [root / s for s in names]
        missing = [str(d) for d in dirs if not d.is_dir()]
        if missing:
            found = ", ".join(sorted(p.name for p in root.iterdir() if p.is_dir())) or "none"
            raise ValueError(f"split folder(s) not found: {', '.join(missing)} (found: {found})")
    paths, labels = [], []
    for d in dirs:
        p, l_ = _identity_images(d, exts)
        paths += p
        labels += l_
    if not paths:
        raise ValueError(f"no images ({', '.join(exts)}) found under {root} in the layout "
                         f"{'<split>/' if has_splits else ''}<identity>/<image>")
    return paths, labels
