"""Safe checkpoint loading: plain tensors only, with errors a user can act on.

Face-recognition weights come from many training codebases, each with its own wrapping
(``{"state_dict": ...}``, DataParallel's ``module.`` prefix, MagFace's ``features.module.``...).
This module turns any of them into a flat ``{name: tensor}`` dict, and refuses anything whose
loading would need Python's pickle to build arbitrary objects, because that runs code from the file.
"""
from __future__ import annotations

import os
import pickle
import re
import stat
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

__all__ = ["CheckpointError", "check_user_file", "load_state_dict", "match_state_dict"]


class CheckpointError(ValueError):
    """A checkpoint file cannot be used: missing, unreadable, unsafe, or for another network."""


# Keys under which training scripts nest the weights, tried in this order. arcface_torch's
# resume files use "state_dict_backbone" next to the margin head's "state_dict_softmax_fc".
_CONTAINER_KEYS = ("state_dict_backbone", "backbone", "state_dict", "model")

# Wrapper prefixes removed when *every* key carries them (DataParallel/DDP wrappers, Lightning-like
# modules holding the network as an attribute). MagFace's DDP-trained backbone is "features.module.".
_WRAPPER_PREFIXES = ("features.module.", "module.", "backbone.", "model.")

# MagFace training checkpoints hold the backbone under one of these prefixes *and*, beside it, the
# MagLinear margin layer ("parallel_fc.weight" for DDP runs, "module.fc.weight" for DataParallel
# runs), so the "every key shares the prefix" rule alone would never fire for them.
_SUBNET_PREFIXES = ("features.module.", "module.features.")

_MAX_LISTED = 10

# Largest model file accepted from a path typed by a user: iResNet-100 is ~260 MB, so 2 GiB leaves
# room for any face backbone while refusing to read a disk image or a multi-GB dump by mistake.
MAX_CHECKPOINT_BYTES = 2 * 1024 ** 3
# Optional allow-list for shared servers: os.pathsep-separated folders that checkpoints must lie in.
CHECKPOINT_DIRS_ENV = "PREFIQS_CHECKPOINT_DIRS"


def check_user_file(path, *, what: str = "checkpoint", max_bytes: int | None = None,
                    allowed_dirs=None) -> Path:
    """Validate a file path typed by a user (e.g. in the App) before anything reads it.

    The path is only ever opened for reading by the model loaders: it is never executed, never
    expanded (no ``~`` or ``$VAR``) and never passed to a shell. Checks: a non-empty string without
    NUL bytes; it exists once symlinks are resolved; it is a *regular* file (a FIFO or a device such
    as ``/dev/zero`` would block or never end); it is readable; it is not empty and at most
    ``max_bytes`` (default :data:`MAX_CHECKPOINT_BYTES`); and, when ``allowed_dirs`` is given or
    ``$PREFIQS_CHECKPOINT_DIRS`` is set, it lies inside one of those folders.

    Returns the resolved path; raises :class:`CheckpointError` saying what is wrong.
    """
    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)):
        raise CheckpointError(f"{what} path must be a string, got {type(path).__name__}")
    text = os.fspath(path)
    if not text.strip():
        raise CheckpointError(f"{what} path is empty")
    if "\x00" in text:
        raise CheckpointError(f"{what} path contains a NUL byte")
    if len(text) > 4096:
        raise CheckpointError(f"{what} path is too long ({len(text)} characters)")
    try:
        resolved = Path(text).resolve(strict=True)
        st = resolved.stat()
    except FileNotFoundError:
        raise CheckpointError(f"{what} file not found: {text}") from None
    except (OSError, RuntimeError) as e:  # permission denied on a parent, symlink loop...
        raise CheckpointError(f"{what} path cannot be accessed: {text} ({e.__class__.__name__})") from None
    if not stat.S_ISREG(st.st_mode):
        raise CheckpointError(f"{what} path is not a regular file: {text}")
    if not os.access(resolved, os.R_OK):
        raise CheckpointError(f"{what} file is not readable: {text}")
    limit = MAX_CHECKPOINT_BYTES if max_bytes is None else int(max_bytes)
    if st.st_size == 0:
        raise CheckpointError(f"{what} file is empty: {text}")
    if st.st_size > limit:
        raise CheckpointError(f"{what} file is too large: {text} ({st.st_size} bytes; the limit is {limit})")
    if allowed_dirs is None and os.environ.get(CHECKPOINT_DIRS_ENV):
        allowed_dirs = [d for d in os.environ[CHECKPOINT_DIRS_ENV].split(os.pathsep) if d]
    if allowed_dirs:
        roots = [Path(d).resolve() for d in allowed_dirs]
        if not any(resolved.is_relative_to(r) for r in roots):
            raise CheckpointError(f"{what} file {text} is outside the allowed folders "
                                  f"({', '.join(map(str, roots))}; see ${CHECKPOINT_DIRS_ENV})")
    return resolved


def load_state_dict(path) -> dict[str, torch.Tensor]:
    """Read a checkpoint file into a flat ``{name: tensor}`` dict, without unpickling objects.

    Uses ``torch.load(..., weights_only=True)`` only, so a file that needs arbitrary classes is
    refused rather than executed. Unwraps ``{"state_dict": ...}``, ``{"model": ...}``,
    ``{"backbone": ...}`` and ``{"state_dict_backbone": ...}`` containers, extracts the backbone from
    a MagFace training checkpoint (dropping its margin layer), and strips the prefixes
    ``features.module.``, ``module.``, ``backbone.`` and ``model.`` when all keys share them.
    Non-tensor entries (epoch counters, optimizer settings) are dropped.

    Raises :class:`CheckpointError` naming the file for every failure.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint file not found: {path}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint path is not a regular file: {path}")

    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # The weights-only unpickler names the first class or function it refused as "GLOBAL x.y".
        blocked = re.search(r"GLOBAL\s+([\w.]+)", str(e))
        if blocked:
            # `from None`: torch's own message suggests weights_only=False, the very thing refused here.
            raise CheckpointError(
                f"refused to load {path}: it refers to the Python class or function "
                f"{blocked.group(1)!r}, and loading it would execute code from the file (pickle). "
                "Only plain tensor checkpoints are accepted. Re-save the weights as a plain state "
                "dict from trusted code that builds the network (e.g. the original training code): "
                "`torch.save(model.state_dict(), 'weights.pth')`, and load that file instead."
            ) from None
        raise CheckpointError(f"{path} is not a torch checkpoint (unreadable pickle data)") from e
    except Exception as e:  # torch raises RuntimeError, KeyError, EOFError... for foreign files
        reason = f"{type(e).__name__}: {str(e).strip()[:200]}" if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path} is not a torch checkpoint ({reason})") from e

    state = _unwrap(obj, path)
    state = _select_magface_backbone(state)
    state = _strip_wrapper_prefixes(state)
    return state


def match_state_dict(module: nn.Module, state_dict: Mapping[str, torch.Tensor], *, what: str) -> None:
    """Load ``state_dict`` into ``module`` strictly, or raise a :class:`CheckpointError` that says why not.

    The message lists (up to 10 each) missing keys, unexpected keys and shape mismatches with the
    expected and found shapes, so that e.g. an r50 checkpoint given to an r100 network is obvious.
    ``what`` names the network in the message. BatchNorm ``num_batches_tracked`` counters may be
    absent (old or converted checkpoints): they do not affect inference.
    """
    expected = module.state_dict()
    state_dict = dict(state_dict)
    for k, v in expected.items():
        if k.endswith("num_batches_tracked") and k not in state_dict:
            state_dict[k] = v

    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [(k, tuple(expected[k].shape), tuple(state_dict[k].shape))
                  for k in expected if k in state_dict and expected[k].shape != state_dict[k].shape]

    if missing or unexpected or mismatched:
        parts = [f"checkpoint does not fit {what} ({len(expected)} expected entries, "
                 f"{len(state_dict)} given)"]
        if missing:
            parts.append(f"{len(missing)} missing keys: {_listing(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys: {_listing(unexpected)}")
        if mismatched:
            shown = [f"{k}: expected shape {e}, got {g}" for k, e, g in mismatched[:_MAX_LISTED]]
            more = f" (+{len(mismatched) - _MAX_LISTED} more)" if len(mismatched) > _MAX_LISTED else ""
            parts.append(f"{len(mismatched)} shape mismatches: " + "; ".join(shown) + more)
        parts.append("is it a checkpoint for a different architecture, depth or embedding size?")
        raise CheckpointError("\n  ".join(parts))

    module.load_state_dict(state_dict, strict=True)


# --------------------------------------------------------------------------------------------------

def _listing(keys: list[str]) -> str:
    more = f" (+{len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else ""
    return ", ".join(keys[:_MAX_LISTED]) + more


def _unwrap(obj, path: Path) -> dict[str, torch.Tensor]:
    """Descend through container dicts until the level that holds the tensors."""
    for _ in range(4):  # containers are never nested deeply; bound the loop anyway
        if not isinstance(obj, Mapping):
            raise CheckpointError(
                f"{path} holds a {type(obj).__name__}, not a dict of tensors (state dict)")
        inner = next((obj[k] for k in _CONTAINER_KEYS
                      if k in obj and isinstance(obj[k], Mapping)), None)
        if inner is None:
            break
        obj = inner
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        keys = ", ".join(map(str, list(obj)[:_MAX_LISTED]))
        raise CheckpointError(f"{path} contains no tensors (top-level keys: {keys or 'none'})")
    return tensors


def _select_magface_backbone(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """From a MagFace training checkpoint keep only the backbone, under its own key names.

    Applies only when a sub-network prefix holds a nested network (keys with further dots, which a
    plain iResNet's own ``features`` BatchNorm1d never has) and everything else is a flat parameter
    of a single layer such as the margin head (``parallel_fc.weight``, ``module.fc.weight``), so
    a generic model that merely has a ``features`` sub-module is left alone.
    """
    for prefix in _SUBNET_PREFIXES:
        inside = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        outside = [k for k in state if not k.startswith(prefix)]
        if not inside or not outside or not any("." in k for k in inside):
            continue
        if all(k.removeprefix("module.").count(".") == 1 for k in outside):
            return inside
    return state


def _strip_wrapper_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove wrapper prefixes shared by every key, repeatedly (e.g. ``module.`` then ``backbone.``)."""
    changed = True
    while changed:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if all(k.startswith(prefix) and len(k) > len(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                changed = True
    return state
