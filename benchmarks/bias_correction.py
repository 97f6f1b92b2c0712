"""Does a pruned copy with its activation statistics restored make a better drift? Magnitude pruning
without fine-tuning shifts every layer's output for every face alike (the removed weights' mean
contribution). That shared shift moves all embeddings, typical faces included, and may drown the
per-face part the PreFIQs hypothesis is about. This study removes it and scores the rest, like the
sweep, on LFW-dev halves A and B (nAUC20, FMR 1e-3, people-level bootstrap 95 % intervals; Δ
against the first row, the backbone's default, on the same resampled people).

    python benchmarks/bias_correction.py ../shared/data/lfw_dev --backbone dlib_resnet29 \\
        --prune "global_l1@0.7+from:blocks.12,global_l1@0.9+from:blocks.12,global_l1@0.7+from:blocks.10"

Corrections, each fitted on the faces of half A only (people-disjoint from B):

- ``mean``: every conv/linear output of the pruned tail, channel by channel, in the order the
  layers run, is shifted so that its mean over the reference faces equals the dense layer's
  (bias correction; the later layers are fitted with the earlier ones already corrected);
- ``mean+std``: the same, also rescaled to the dense layer's standard deviation;
- ``output``: only the embedding: the mean difference of pruned and dense raw embeddings over the
  reference faces is subtracted from each pruned embedding before it is normalised.

A study, not a pruning option: the product's methods need no reference set.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from lfw import LFWBench, halves_bench, print_halves_table  # noqa: E402
from prefiqs_core.backbones.base import prunable_modules  # noqa: E402
from prefiqs_core.defaults import default_pruning  # noqa: E402
from prefiqs_core.evaluation.lfw import people_halves  # noqa: E402
from prefiqs_core.pruning import format_prune, parse_prune, prune_tail  # noqa: E402
from prefiqs_core.scoring import quality_from_drift  # noqa: E402

MODES = ("mean", "mean+std", "output")


def _layers(tail: nn.Module) -> dict[str, nn.Module]:
    return dict(prunable_modules(tail))


def _channel_dims(y: torch.Tensor) -> tuple[int, ...]:
    return (0, 2, 3) if y.ndim == 4 else (0,)


@torch.inference_mode()
def _run(tail: nn.Module, acts: torch.Tensor, batch: int) -> torch.Tensor:
    return torch.cat([tail(acts[i:i + batch]).float() for i in range(0, len(acts), batch)])


@torch.inference_mode()
def layer_stats(tail: nn.Module, acts: torch.Tensor, batch: int, names=None) -> tuple[dict, list[str]]:
    """Per-channel mean and standard deviation of each conv/linear output of ``tail`` over ``acts``
    (float64 sums), and the names in the order the layers ran."""
    layers = _layers(tail)
    names = list(layers) if names is None else names
    sums: dict[str, list] = {}
    order: list[str] = []
    hooks = []
    for name in names:
        def hook(mod, inp, out, name=name):
            y = out.double()
            dims = _channel_dims(y)
            n = y.numel() // y.shape[1]
            s = [y.sum(dim=dims), (y ** 2).sum(dim=dims), n]
            if name in sums:
                sums[name] = [a + b for a, b in zip(sums[name], s)]
            else:
                sums[name] = s
                order.append(name)
        hooks.append(layers[name].register_forward_hook(hook))
    try:
        _run(tail, acts, batch)
    finally:
        for h in hooks:
            h.remove()
    stats = {}
    for name, (s1, s2, n) in sums.items():
        mu = s1 / n
        stats[name] = (mu, (s2 / n - mu ** 2).clamp_min(1e-12).sqrt())
    return stats, order


def correct_tail(dense_tail: nn.Module, pruned_tail: nn.Module, ref_acts: torch.Tensor, batch: int,
                 with_std: bool) -> list:
    """Installs, layer by layer in running order, a forward hook on each conv/linear of
    ``pruned_tail`` that maps its output's per-channel mean (and standard deviation) over
    ``ref_acts`` onto the dense layer's. Returns the hooks (remove them to undo)."""
    dense, order = layer_stats(dense_tail, ref_acts, batch)
    layers = _layers(pruned_tail)
    hooks = []
    for name in order:
        (mp, sp), = layer_stats(pruned_tail, ref_acts, batch, [name])[0].values()
        md, sd = dense[name]
        scale = (sd / sp) if with_std else torch.ones_like(sd)
        shift = md - mp * scale

        def fix(mod, inp, out, a=scale.float(), b=shift.float()):
            shape = (1, -1, 1, 1) if out.ndim == 4 else (1, -1)
            return out * a.view(shape) + b.view(shape)
        hooks.append(layers[name].register_forward_hook(fix))
    return hooks


@torch.inference_mode()
def corrected_drifts(bench: LFWBench, spec, reference: np.ndarray) -> dict[str, np.ndarray]:
    """The drift of every face through ``spec``'s pruned tail, plain and under each correction."""
    k, pruned, _ = prune_tail(bench.bb.net, spec)
    dense_tail = nn.Sequential(*(st for _, st in bench.stages[k:])).eval()
    acts = bench.activations(k)
    if acts is None:  # whole-network pruning: the tail starts at the prepared chips
        acts = torch.cat([bench.bb.prepare(bench.chips[i:i + bench.batch])
                          for i in range(0, len(bench.chips), bench.batch)])
    ref = acts[torch.from_numpy(np.flatnonzero(reference))]
    dense_raw = _run(dense_tail, acts, bench.batch)
    unit = F.normalize(dense_raw, dim=1)
    out = {}

    def drift(raw):
        return torch.linalg.norm(unit - F.normalize(raw, dim=1), dim=1).double().numpy()

    raw = _run(pruned, acts, bench.batch)
    out["plain"] = drift(raw)
    # the plain drift split into its part along the reference faces' mean move and the rest
    move = F.normalize(raw, dim=1) - unit
    m = F.normalize(move[torch.from_numpy(np.flatnonzero(reference))].mean(dim=0), dim=0)
    along = move @ m
    out["along"] = along.double().numpy()
    out["across"] = torch.linalg.norm(move - along[:, None] * m, dim=1).double().numpy()
    delta = (raw - dense_raw)[torch.from_numpy(np.flatnonzero(reference))].mean(dim=0)
    out["output"] = drift(raw - delta)
    # no pruned forward at all: every face's dense raw embedding moved by the same mean shift
    out["shift"] = drift(dense_raw + delta)
    for mode, with_std in (("mean", False), ("mean+std", True)):
        hooks = correct_tail(dense_tail, pruned, ref, bench.batch, with_std)
        try:
            out[mode] = drift(_run(pruned, acts, bench.batch))
        finally:
            for h in hooks:
                h.remove()
    return out


def main(argv=None):
    def extra(ap):
        ap.add_argument("--modes", default=",".join(MODES), help="comma-separated: " + ", ".join(MODES))

    args, bench = halves_bench(__doc__, "dlib_resnet29", argv, prune=True, extra=extra)
    modes = [m for m in args.modes.split(",") if m]
    bad = sorted(set(modes) - set(MODES))
    if bad:
        raise SystemExit(f"error: unknown mode(s) {', '.join(bad)}; choose from {', '.join(MODES)}")
    default = default_pruning(bench.bb.name)
    specs = parse_prune(args.prune) if args.prune else default
    ref, _ = people_halves(bench.labels, 0)
    rows = {f"{format_prune(default)} (the default)": quality_from_drift(bench.mean_drift(default))}
    for spec in specs:
        label = format_prune([spec])
        d = corrected_drifts(bench, spec, ref)
        rows[f"{label}, plain"] = quality_from_drift(d["plain"])
        rows[f"{label}, along the mean move"] = quality_from_drift(d["along"])
        rows[f"{label}, across the mean move"] = quality_from_drift(d["across"])
        rows[f"{label}: dense + the mean shift (no pruned forward)"] = quality_from_drift(d["shift"])
        for mode in modes:
            rows[f"{label}, {mode} corrected"] = quality_from_drift(d[mode])
        bench.log(f"  {label} done")
    print_halves_table(bench, rows)


if __name__ == "__main__":
    main()
