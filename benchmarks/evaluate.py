#!/usr/bin/env python
"""Measured results for the README: EDC pAUC of PreFIQs against every baseline, ranking checks,
speed and memory, and the paper-style table on public verification benchmarks.

Without --bin / --identity-folder / --ijb it runs the built-in sections:

1. real faces: every face detected in the real photos (plus mirror images), each also degraded
   synthetically (6 kinds x 2 severities, ``prefiqs_core.evaluation.degrade``). Identity = the photo's person
   (obama*.jpg and obama_partial_face*.jpg are one person; every other face is its own identity),
   so the genuine pairs compare a face with its mirror and its degraded copies: the intra-identity
   variation is synthetic. pAUC of the FNM-EDC up to 20 % and 30 % discarded, both conventions
   (``prefiqs_core.evaluation``); how often a clean chip outranks its own degraded copy; face versus
   non-face AUROC on scikit-image's lfw_subset;
2. speed: each method's time per face relative to one dense forward (preparation included) of the
   same network on the same batch in the same run, and its peak memory;
3. with --plugin: compute_prefiqs end to end on a FiftyOne dataset of chips (real MongoDB).

    python benchmarks/evaluate.py --plugin --out out/eval
    python benchmarks/evaluate.py --bin lfw.bin --bin agedb_30.bin     # paper-style table
    python benchmarks/evaluate.py --identity-folder ~/fiftyone/lfw     # <split>/<identity>/<image>
    python benchmarks/evaluate.py --ijb IJB_release --ijb-max-templates 5000   # IJB-C 1:1, templates
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from prefiqs_core.alignment import convert_chip, resize_chip  # noqa: E402
from prefiqs_core.backbones import load_backbone  # noqa: E402
from prefiqs_core.evaluation.baselines import PreFIQsMethod, available_methods  # noqa: E402
from prefiqs_core.evaluation.benchmarks_io import read_identity_folder, read_verification_bin  # noqa: E402
from prefiqs_core.defaults import default_pruning  # noqa: E402
from prefiqs_core.evaluation.degrade import degraded_set  # noqa: E402
from prefiqs_core.demo import collect_demo_chips  # noqa: E402
from prefiqs_core.evaluation import edc, pair_quality_from, pauc, plot_edc  # noqa: E402
from prefiqs_core.evaluation.ijb import read_ijb  # noqa: E402
from prefiqs_core.evaluation.pairs import TEMPLATE_QUALITY, aggregate_templates, make_pairs  # noqa: E402
from prefiqs_core.pipeline import ChipDataset, iter_images  # noqa: E402
from prefiqs_core.pruning import PruneSpec  # noqa: E402
from speed import jittered, timed_pair  # noqa: E402
from sweep import auroc, lfw_subset_chips  # noqa: E402
from tools.fo_processes import private_fiftyone  # noqa: E402

LIMITS = (0.2, 0.3)
CONVENTIONS = ("fixed", "per_level")
# Other pruning settings compared with the default (single copies from benchmarks/sweep.py's grid)
OTHER_PRUNING = [PruneSpec("global_l1", 0.4), PruneSpec("layerwise_l1", 0.2), PruneSpec("random", 0.03)]
QUICK_METHODS = ["prefiqs", "embedding_norm", "sharpness", "random"]
ORACLE = "(reference: − degradation severity, knows the truth)"


# ------------------------------------------------------------------------------------------------
# methods and embeddings


def build_methods(backbone, quick: bool) -> dict:
    """Display name → QualityMethod: PreFIQs (default and other pruning) and every baseline."""
    default = default_pruning(backbone.name)
    names = QUICK_METHODS if quick else None
    out = {}
    for key, m in available_methods(backbone, names).items():
        label = f"PreFIQs (default, {'+'.join(s.label() for s in default)})" if key == "prefiqs" else m.name
        out[label] = m
        if key == "prefiqs" and not quick:
            for spec in OTHER_PRUNING:
                if spec not in default:
                    out[f"PreFIQs {spec.label()}"] = PreFIQsMethod(backbone, spec)
    return out


@torch.inference_mode()
def embed(backbone, chips, batch=64, flip=False) -> np.ndarray:
    """L2-normalised dense embeddings: what the verification similarities are computed from.

    ``flip``: each chip's embedding and its mirror image's, each normalised, concatenated (as
    CR-FIQA's feature extraction does for its benchmark tables)."""
    def run(x):
        out = [F.normalize(backbone.net(backbone.prepare(x[i:i + batch], backbone.device)).float(), dim=1)
               for i in range(0, len(x), batch)]
        return torch.cat(out).cpu().numpy().astype(np.float64)

    e = run(chips)
    if not flip:
        return e
    # two unit halves: dividing by √2 keeps the whole a unit vector, so dot products stay cosines
    return np.concatenate([e, run(np.ascontiguousarray(chips[:, :, ::-1]))], axis=1) / np.sqrt(2)


def score_all(methods, chips, log) -> dict:
    out = {}
    for name, m in methods.items():
        t = time.perf_counter()
        out[name] = m.score(chips)
        log(f"  {name}: {len(chips)} chips in {time.perf_counter() - t:.1f} s")
    return out


# ------------------------------------------------------------------------------------------------
# EDC tables


def reachable_fmr(n_nonmated: int, target: float) -> tuple[float, str | None]:
    """``target`` if at least one false match is allowed among ``n_nonmated`` pairs, else the
    smallest FMR that is (``1/n``), with a sentence saying so."""
    if target * n_nonmated >= 1 - 1e-9:
        return target, None
    fmr = 1.0 / n_nonmated
    return fmr, (f"FMR {target:g} is unreachable with {n_nonmated} impostor pairs (it would allow no false "
                 f"match); reported at the smallest reachable FMR, 1/{n_nonmated} = {fmr:.3g}")


def edc_block(sims, mated, qualities: dict, target_fmr: float) -> dict:
    """For each method and convention: the curve and pAUC@20/30 (plain and minus the best area)."""
    fmr, note = reachable_fmr(int((~mated).sum()), target_fmr)
    res = {"fmr": fmr, "note": note, "methods": {}}
    for name, pq in qualities.items():
        row = {}
        for conv in CONVENTIONS:
            c = edc(sims, mated, pq, target_fmr=fmr, threshold=conv)
            row[conv] = c
            for lim in LIMITS:
                try:
                    row[(conv, lim)] = pauc(c, lim)
                    row[(conv, lim, "best")] = pauc(c, lim, subtract_best=True)
                except ValueError:  # a per_level level with no mated or no impostor pair left
                    row[(conv, lim)] = row[(conv, lim, "best")] = float("nan")
        res["methods"][name] = row
    return res


def pair_qualities(scores: dict, a, b) -> dict:
    return {n: pair_quality_from(q[a], q[b], "min") for n, q in scores.items()}


def fmt(v, digits=4):
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.{digits}f}"


def edc_table(block) -> str:
    lines = ["| method | fixed pAUC@20% | fixed pAUC@30% | fixed @20% − best | fixed @30% − best | "
             "per-level pAUC@20% | per-level pAUC@30% |", "|---|---|---|---|---|---|---|"]
    for name, r in block["methods"].items():
        lines.append(f"| {name} | {fmt(r[('fixed', .2)])} | {fmt(r[('fixed', .3)])} | "
                     f"{fmt(r[('fixed', .2, 'best')])} | {fmt(r[('fixed', .3, 'best')])} | "
                     f"{fmt(r[('per_level', .2)])} | {fmt(r[('per_level', .3)])} |")
    return "\n".join(lines)


def write_plots(block, out: Path | None, stem: str, title: str) -> list[str]:
    if out is None:
        return []
    paths = []
    for conv in CONVENTIONS:
        p = out / f"{stem}_{conv}.png"
        plot_edc({n[:40]: r[conv] for n, r in block["methods"].items()}, p,
                 title=f"{title}\n{conv}, FMR {block['fmr']:.3g}", limit=0.3)
        paths.append(str(p))
    return paths


# ------------------------------------------------------------------------------------------------
# 1. real faces with synthetic degradations


def identity_of(caption: str) -> str:
    """The person of a demo face: the obama* photos show one man; every other face is its own."""
    stem = caption.split("#")[0]
    return "obama" if stem.startswith("obama") else caption


def real_face_set(preprocess, quick: bool):
    """Chips, identities, variant names and the index of each chip's clean original."""
    chips, captions, _ = collect_demo_chips(preprocess)
    chips = np.stack(chips)
    labels = [identity_of(c) for c in captions]
    if not quick:  # mirror images double the clean faces without inventing any (as sweep.py)
        chips = np.concatenate([chips, chips[:, :, ::-1]])
        labels = labels + labels
    n = len(chips)
    all_chips, all_labels, variants, origin = [chips], list(labels), ["clean"] * n, list(range(n))
    for kind, level, _, deg in degraded_set(chips):
        if quick and level != 2:
            continue
        all_chips.append(deg)
        all_labels += labels
        variants += [f"{kind}{level}"] * n
        origin += list(range(n))
    return np.concatenate(all_chips), all_labels, np.asarray(variants), np.asarray(origin)


def ranking_table(methods, scores, variants, origin, lfw_scores, costs) -> str:
    """Clean-above-degraded order (all / strong severities) and face/non-face AUROC per method."""
    lines = ["| method | clean > degraded (all) | clean > degraded (strong) | face/non-face AUROC | "
             "forwards/face |", "|---|---|---|---|---|"]
    deg = variants != "clean"
    strong = deg & np.char.endswith(variants.astype(str), "2")
    for name in methods:
        q = scores[name]
        wins = q[origin] > q  # strict, as benchmarks/sweep.py: a tie is not a win
        face, nonface = lfw_scores[name]
        lines.append(f"| {name} | {wins[deg].mean():.3f} | {wins[strong].mean():.3f} | "
                     f"{auroc(face, nonface):.3f} | {costs[name]:g} |")
    return "\n".join(lines)


def run_real(backbone, methods, args, out, log) -> list[str]:
    log("real faces: detecting and degrading")
    chips, labels, variants, origin = real_face_set(backbone.preprocess, args.quick)
    faces, nonfaces = lfw_subset_chips(backbone.preprocess.size)
    if args.quick:
        faces, nonfaces = faces[:40], nonfaces[:40]
    log(f"scoring {len(chips)} real-face chips and {len(faces) + len(nonfaces)} lfw_subset chips")
    scores = score_all(methods, chips, log)
    lfw = {n: (m.score(faces), m.score(nonfaces)) for n, m in methods.items()}
    emb = embed(backbone, chips)
    pairs = make_pairs(labels, max_impostors=args.max_impostors, seed=0)
    sims = np.einsum("ij,ij->i", emb[pairs.a], emb[pairs.b])
    # A reference that knows the truth: minus the degradation severity (clean 0, mild 1, strong 2).
    # It shows what discarding the degraded chips first buys, and how the fixed convention, which
    # discards tied qualities together, treats a quality with three values.
    severity = np.array([0.0 if v == "clean" else float(v[-1]) for v in variants])
    with_ref = dict(scores, **{ORACLE: -severity})
    block = edc_block(sims, pairs.mated, pair_qualities(with_ref, pairs.a, pairs.b), args.fmr)
    n_clean = int((variants == "clean").sum())
    e0 = next(iter(block["methods"].values()))["fixed"].fnmr[0]
    head = (f"### Real faces, synthetic degradations ({backbone.name})\n\n"
            f"{n_clean} clean chips ({'no mirrors' if args.quick else 'incl. mirrors'}) of {len(set(labels))} "
            f"identities + {len(chips) - n_clean} degraded copies; {pairs.n_mated} genuine and {pairs.n_nonmated} "
            f"impostor pairs{' (sampled)' if pairs.notes else ''}; FNM-EDC at FMR {block['fmr']:.3g}, pair quality "
            f"= min, similarity = cosine of the dense embeddings; FNMR with nothing discarded {e0:.4f}. "
            "Lower pAUC is better; “− best” subtracts the theoretical-best area. The last row is not a method: "
            "it ranks chips by their known degradation severity (3 values, so the fixed convention discards "
            "each value's pairs in one step).\n\n"
            "**The intra-identity variation is synthetic**: apart from the 5 photos of one person, genuine pairs "
            "compare a face with its own mirror image and degraded copies (blur, down-scaling, noise, JPEG, "
            "occlusion, darkening), not with other photos of the person.")
    if block["note"]:
        head += f"\n\nNote: {block['note']}."
    costs = {n: m.forwards_per_face for n, m in methods.items()}
    rank = ("\n\nRanking checks: share of degraded chips whose clean original scores higher (strict); "
            f"AUROC of quality for {len(faces)} lfw_subset faces against {len(nonfaces)} non-faces; "
            "forwards/face is each method's nominal cost.\n\n"
            + ranking_table(methods, scores, variants, origin, lfw, costs))
    plots = write_plots(block, out, "real_faces", f"real faces, synthetic degradations, {backbone.name}")
    return [head + "\n\n" + edc_table(block) + rank] + ([f"EDC plots: {', '.join(plots)}"] if plots else [])


# ------------------------------------------------------------------------------------------------
# 2. speed and memory


def _rss_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _peak_memory(fn, device) -> dict:
    """Peak memory of one call of ``fn``: resident-set growth above the level before the call
    (Linux: the high-water mark is reset through /proc/self/clear_refs first; elsewhere the
    process's ru_maxrss growth, which misses peaks below an earlier one), the Python-heap peak
    (tracemalloc: numpy buffers, not torch's CPU allocator) and the CUDA peak."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        before, hwm = _rss_kib("VmRSS"), "VmHWM"
    except OSError:
        before, hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    tracemalloc.start()
    fn()
    _, py_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    after = _rss_kib(hwm) if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = dict(rss=max(0, after - before) / 1024, py=py_peak / 2 ** 20)
    if device.type == "cuda":
        out["cuda"] = (torch.cuda.max_memory_allocated(device) - base) / 2 ** 20
    return out


def _memory_child(backbone_name, checkpoint, device_name, quick, chips) -> dict:
    """In a fresh process: each method scores the batch once to warm up, then once measured."""
    device = torch.device(device_name)
    backbone = load_backbone(backbone_name, checkpoint).to(device)
    def dense():
        with torch.inference_mode():
            backbone.net(backbone.prepare(chips, device))

    dense()
    out = {"dense forward (reference)": _peak_memory(dense, device)}
    for name, m in build_methods(backbone, quick).items():
        m.score(chips)
        out[name] = _peak_memory(lambda: m.score(chips), device)
    return out


def memory_table(args, chips) -> dict:
    """Per-method peak memory, measured in a spawned child process whose malloc returns every block
    of 64 KiB or more to the system when freed (``MALLOC_MMAP_THRESHOLD_``): otherwise memory freed by
    an earlier call is reused silently and every method's growth reads 0. Timing is not done there,
    since that setting slows large allocations."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    old = os.environ.get("MALLOC_MMAP_THRESHOLD_")
    os.environ["MALLOC_MMAP_THRESHOLD_"] = "65536"
    try:
        with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
            return pool.submit(_memory_child, args.backbone, args.checkpoint, args.device, args.quick,
                               chips).result()
    finally:
        if old is None:
            os.environ.pop("MALLOC_MMAP_THRESHOLD_")
        else:
            os.environ["MALLOC_MMAP_THRESHOLD_"] = old


def timed_pair_cpu(fa, fb, reps: int, device=None) -> tuple[float, float, float]:
    """``speed.timed_pair`` in CPU time of this process (all its threads): on a shared machine,
    wall time also counts the time other processes held the cores, and would make the ratio depend
    on their load rather than on the methods."""
    return timed_pair(fa, fb, reps, device, clock=time.process_time)


def run_speed(backbone, methods, args, device, log) -> list[str]:
    real, _, _ = collect_demo_chips(backbone.preprocess)
    chips = jittered(np.stack(real), args.batch)  # the same batch for every method
    log(f"speed: batch {args.batch}, {args.reps} repetitions per method")

    def dense():
        with torch.inference_mode():
            backbone.net(backbone.prepare(chips, device))

    rows = []
    log("speed: peak memory per method, in a child process")
    memory = memory_table(args, chips)
    log("speed: timing")
    timer = timed_pair if device.type == "cuda" else timed_pair_cpu
    threads = torch.get_num_threads()
    if device.type != "cuda":
        # one thread: OpenMP threads spin while waiting for a core, and that spinning is counted
        # as CPU time, so with several threads a busy machine would still inflate the ratios
        torch.set_num_threads(1)
    try:
        timings = {n: timer(dense, lambda: m.score(chips), args.reps, device) for n, m in methods.items()}
    finally:
        torch.set_num_threads(threads)
    for name, m in methods.items():
        t_dense, t_m, ratio = timings[name]
        mem = memory[name]
        rows.append((name, 1e3 * t_m / args.batch, ratio, m.forwards_per_face, mem, 1e3 * t_dense / args.batch))
    cuda = device.type == "cuda"
    lines = [f"### Speed and memory ({backbone.name}, {device}, "
             f"{'' if device.type == 'cuda' else '1 torch thread for the timing, '}"
             f"batch {args.batch})\n",
             "Cost = median over repetitions of (method time / dense-forward time), each dense forward "
             "(preparation included) timed right before the method on the same batch; "
             + ("GPU wall time." if cuda else "CPU time of this process on one torch thread, which other processes' "
                "load inflates far less than wall time.")
             + " Memory, measured in a separate process after one warm-up call: peak growth of the resident set "
             "during one call of the batch above its level before the call, and the Python-heap peak (tracemalloc; "
             "torch's CPU tensors are not traced)" + ("; CUDA: torch.cuda.max_memory_allocated growth" if cuda
                                                      else "") + ". Each method scores in its own internal "
             "batches (PreFIQs 64, EmbeddingNorm 32, SER-FIQ and JVP 16), which sets its peak.\n",
             f"| method | cost (dense forwards) | {'' if cuda else 'CPU '}ms/face | dense forward, same repetitions | "
             "nominal forwards/face | peak RSS growth (MiB) | Python-heap peak (MiB) |"
             + (" CUDA peak (MiB) |" if cuda else ""),
             "|---|---|---|---|---|---|---|" + ("---|" if cuda else "")]
    for name, ms, ratio, nominal, mem, dense_ms in rows:
        lines.append(f"| {name} | {ratio:.2f} | {ms:.2f} | {dense_ms:.2f} | {nominal:g} | {mem['rss']:.1f} | "
                     f"{mem['py']:.1f} |" + (f" {mem['cuda']:.1f} |" if cuda else ""))
    ref = memory["dense forward (reference)"]
    lines.insert(4, f"| dense forward (reference) | 1 | | | 1 | {ref['rss']:.1f} | {ref['py']:.1f} |"
                 + (f" {ref['cuda']:.1f} |" if cuda else ""))
    lines.append(f"\nLoad average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (other "
                 "processes share this machine). Process peak RSS (ru_maxrss) so far: "
                 f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB.")
    return ["\n".join(lines)]


# ------------------------------------------------------------------------------------------------
# 3. the plugin end to end


def _fiftyone_env():
    """A private database unless one is configured, and this checkout as the plugin."""
    private_fiftyone(Path(tempfile.mkdtemp(prefix="prefiqs-evaluate-")), ROOT)
    # keep stdout to the tables: no MongoDB version notice, no progress bars
    os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
    os.environ.setdefault("FIFTYONE_SHOW_PROGRESS_BARS", "false")


def run_plugin(backbone, args, prefiqs, log) -> list[str]:
    from PIL import Image

    _fiftyone_env()
    t = time.perf_counter()
    import fiftyone as fo
    import fiftyone.operators as foo

    t_import = time.perf_counter() - t
    real, _, _ = collect_demo_chips(backbone.preprocess)
    chips = jittered(np.stack(real), args.plugin_faces, seed=1)
    prefiqs.batch_size = 64  # as the operator's batch
    with tempfile.TemporaryDirectory() as d:
        for i, c in enumerate(chips):
            Image.fromarray(c).save(f"{d}/chip_{i:05d}.png")
        ds = fo.Dataset()  # non-persistent: removed with the database connection
        try:
            ds.add_samples([fo.Sample(filepath=f"{d}/chip_{i:05d}.png") for i in range(len(chips))])
            op = foo.get_operator("@prefiqs/prefiqs/compute_prefiqs")
            log(f"plugin: compute_prefiqs on {len(ds)} chips (cold, then warm), model-only runs beside them")
            times, model = [], []
            for overwrite in (False, True):  # cold: loads and prunes the network; warm: cached scorer
                t = time.perf_counter()
                prefiqs.score(chips)  # the same chips, already decoded: the model-only floor
                model.append(time.perf_counter() - t)
                t = time.perf_counter()
                summary = op(ds, aligned=True, backbone=backbone.name, batch_size=64, device=args.device,
                             overwrite=overwrite)
                times.append(time.perf_counter() - t)
        finally:
            ds.delete()
    n = summary["num_scored"]
    lines = [f"### Plugin end to end ({backbone.name}, {args.device}, FiftyOne {fo.__version__}, MongoDB)\n",
             f"compute_prefiqs operator (aligned=True, batch 64, embeddings stored) on a dataset of {n} PNG chips; "
             "each run is preceded by the model-only PreFIQs scoring of the same chips, already decoded, in "
             "this process (the floor):\n",
             "| run | seconds | faces/s | model-only faces/s just before | end to end / model-only |",
             "|---|---|---|---|---|"]
    for label, t, tm in zip(("cold (loads + prunes the network)", "warm (scorer cached)"), times, model):
        lines.append(f"| {label} | {t:.2f} | {n / t:.1f} | {n / tm:.1f} | {100 * tm / t:.0f} % |")
    lines.append(f"\n`import fiftyone` took {t_import:.1f} s (not counted).")
    return ["\n".join(lines)]


# ------------------------------------------------------------------------------------------------
# 4. public benchmarks: insightface .bin files and identity folders


def to_backbone_chips(images, backbone, source_template="arcface112"):
    """Benchmark chips (ArcFace-aligned) re-framed for the backbone's own template."""
    pre = backbone.preprocess
    if pre.template == source_template:
        return np.stack([resize_chip(im, pre.size) for im in images])
    return np.stack([convert_chip(im, source_template, pre.template) for im in images])


def bin_benchmark(path, backbone, methods, args, log) -> dict:
    vb = read_verification_bin(path, max_pairs=args.max_pairs)
    log(f"{vb.name}: {len(vb)} pairs, {len(vb.images)} images")
    chips = to_backbone_chips(vb.images, backbone)
    scores = score_all(methods, chips, log)
    emb = embed(backbone, chips, flip=args.flip)
    a, b = vb.pair_indices()
    sims = np.einsum("ij,ij->i", emb[a], emb[b])
    block = edc_block(sims, vb.issame, pair_qualities(scores, a, b), args.fmr)
    return dict(name=vb.name, block=block, pairs=f"{int(vb.issame.sum())} genuine / {int((~vb.issame).sum())} "
                                                  "impostor pairs (the file's own)")


def folder_benchmark(root, backbone, methods, args, log) -> dict:
    paths, labels = read_identity_folder(root, has_splits=not args.no_splits)
    mode = "aligned" if args.aligned else "detect"
    log(f"{Path(root).name}: {len(paths)} images of {len(set(labels))} identities ({mode})")
    chips, keep = [], []
    for i, im in enumerate(iter_images(ChipDataset(paths, backbone.preprocess, mode))):
        if im.error is None and len(im.chips):
            chips.append(im.chips[0])  # the best face of each image
            keep.append(i)
    labels = [labels[i] for i in keep]
    chips = np.stack(chips)
    scores = score_all(methods, chips, log)
    emb = embed(backbone, chips, flip=args.flip)
    pairs = make_pairs(labels, max_impostors=args.max_impostors, seed=0)
    if pairs.n_mated == 0 or pairs.n_nonmated == 0:
        raise SystemExit(f"{root}: {' '.join(pairs.notes)}")
    sims = np.einsum("ij,ij->i", emb[pairs.a], emb[pairs.b])
    block = edc_block(sims, pairs.mated, pair_qualities(scores, pairs.a, pairs.b), args.fmr)
    skipped = len(paths) - len(keep)
    return dict(name=Path(root).name, block=block,
                pairs=f"{pairs.n_mated} genuine / {pairs.n_nonmated} impostor pairs from {len(keep)} faces"
                      + (f" ({skipped} images without a usable face skipped)" if skipped else "")
                      + (f"; {pairs.notes[0]}" if pairs.notes else ""))


IJB_CHUNK = 512  # faces scored together: every method sees the same chunk; only scores are kept


def ijb_benchmark(root, backbone, methods, args, log) -> dict:
    """IJB-B/C 1:1 template verification: the benchmark's own 5 points align each loose crop,
    faces are scored and embedded in chunks (memory stays flat on 227k faces), templates are
    aggregated the IJB way (media mean, then sum) and rated by the min of their faces' quality."""
    proto = read_ijb(root)
    total = len(proto.pair_label)
    proto = proto.subset(args.max_pairs, seed=0, max_templates=args.ijb_max_templates)
    log(f"{proto.name}: {len(proto.pair_label)} template pairs, {len(proto)} faces "
        f"in {len(np.unique(proto.template_ids))} templates")
    ds = ChipDataset(proto.paths, backbone.preprocess, "landmarks", landmarks=proto.landmarks)
    scores = {n: np.full(len(proto), np.nan) for n in methods}
    emb, ok, errors = None, np.zeros(len(proto), bool), []
    chunk, where = [], []

    def flush():
        nonlocal emb
        if not chunk:
            return
        c = np.stack(chunk)
        e = embed(backbone, c, flip=args.flip)
        if emb is None:
            emb = np.zeros((len(proto), e.shape[1]))
        emb[where] = e
        for n, m in methods.items():
            scores[n][where] = m.score(c)
        ok[where] = True
        chunk.clear()
        where.clear()

    t = time.perf_counter()
    for i, im in enumerate(iter_images(ds, batch_size=IJB_CHUNK)):
        if im.error is not None:
            errors.append(f"{Path(im.path).name}: {im.error}")
            continue
        chunk.append(im.chips[0])
        where.append(i)
        if len(chunk) == IJB_CHUNK:
            flush()
            log(f"  {int(ok.sum())}/{len(proto)} faces scored ({time.perf_counter() - t:.0f} s)")
    flush()
    if emb is None:
        raise SystemExit(f"{root}: no face image could be read ({errors[0] if errors else 'none listed'})")
    kept = np.flatnonzero(ok)
    weights = proto.face_scores[kept] if args.ijb_detector_weights else None
    templates = aggregate_templates(emb[kept], proto.template_ids[kept], proto.media_ids[kept], weights)
    r1, r2, usable = templates.pair_rows(proto.pair_t1, proto.pair_t2)
    r1, r2 = r1[usable], r2[usable]
    sims = templates.similarities(r1, r2)
    mated = proto.pair_label[usable]
    qualities = {}
    for n, q in scores.items():
        tq = templates.reduce_quality(q[kept], args.template_quality)
        qualities[n] = pair_quality_from(tq[r1], tq[r2], "min")
    block = edc_block(sims, mated, qualities, args.fmr)
    desc = (f"{int(mated.sum())} genuine / {int((~mated).sum())} impostor template pairs of {len(templates.ids)} "
            f"templates ({len(kept)} faces; template quality = {args.template_quality} of its faces"
            + (", features weighted by detector score" if args.ijb_detector_weights else "") + ")")
    if len(proto.pair_label) < total:
        desc += f"; a seeded sample ({proto.name.split(' (')[1][:-1]}) of the protocol's {total} pairs"
    if errors:
        desc += f"; {len(errors)} unreadable face images skipped (first: {errors[0]})"
    if (~usable).any():
        desc += f"; {int((~usable).sum())} pairs dropped: a template had no readable face"
    return dict(name=proto.name.split(" ")[0], block=block, pairs=desc)


def paper_table(results, backbone, flip=False) -> list[str]:
    names = list(results[0]["block"]["methods"])
    out = []
    for conv, what in (("per_level", "threshold re-set at each discard level (CR-FIQA erc.py, as the papers)"),
                       ("fixed", "threshold set once (ISO/IEC 29794-1 FNM-EDC)")):
        head = "| method | " + " | ".join(f"{r['name']} @20% | {r['name']} @30%" for r in results) + " |"
        lines = [f"### pAUC per benchmark, {conv}: {what} ({backbone.name})\n", head,
                 "|---|" + "---|---|" * len(results)]
        for n in names:
            cells = " | ".join(f"{fmt(r['block']['methods'][n][(conv, .2)])} | "
                               f"{fmt(r['block']['methods'][n][(conv, .3)])}" for r in results)
            lines.append(f"| {n} | {cells} |")
        out.append("\n".join(lines))
    notes = []
    for r in results:
        b = r["block"]
        e0 = next(iter(b["methods"].values()))["fixed"].fnmr[0]
        notes.append(f"- {r['name']}: {r['pairs']}; FMR {b['fmr']:.3g}, FNMR with nothing discarded {e0:.4f}"
                     + (f" ({b['note']})" if b["note"] else ""))
    out.append("Lower is better; pair quality = min of the two faces (of the two templates for IJB); "
               "similarity = cosine of the dense embeddings"
               + (" (each concatenated with its mirror image's, as CR-FIQA)" if flip else "") + ".\n"
               + "\n".join(notes))
    return out


# ------------------------------------------------------------------------------------------------


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="dlib_resnet29")
    ap.add_argument("--checkpoint")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", help="write the tables (evaluate.md) and the EDC PNGs here")
    ap.add_argument("--quick", action="store_true", help="fewer methods and chips (for tests)")
    ap.add_argument("--plugin", action="store_true", help="also time compute_prefiqs through FiftyOne")
    ap.add_argument("--bin", action="append", default=[], help="insightface verification .bin (repeatable)")
    ap.add_argument("--identity-folder", action="append", default=[],
                    help="<root>/<split>/<identity>/<image> folder (repeatable)")
    ap.add_argument("--ijb", action="append", default=[],
                    help="IJB-C (or IJB-B) release in insightface's layout: the IJBC folder holding meta/ and "
                         "loose_crop/, or IJB_release above it (repeatable)")
    ap.add_argument("--template-quality", choices=TEMPLATE_QUALITY, default="min",
                    help="IJB template quality from its faces' (default min, as CR-FIQA)")
    ap.add_argument("--ijb-max-templates", type=int,
                    help="a seeded sample of this many IJB templates and the pairs among them (decodes only "
                         "their faces: the quick way to a smaller IJB run)")
    ap.add_argument("--ijb-detector-weights", action="store_true",
                    help="weight IJB face features by the detector score (insightface's option)")
    ap.add_argument("--no-splits", action="store_true", help="identity folders are <root>/<identity>/<image>")
    ap.add_argument("--aligned", action="store_true", help="identity-folder images are aligned chips")
    ap.add_argument("--builtin", action="store_true", help="with --bin/--identity-folder: run the built-in "
                                                           "real-face and speed sections too")
    ap.add_argument("--max-pairs", type=int, help="read only the first pairs of each .bin; a seeded sample of "
                                                  "this many IJB template pairs (and only their faces)")
    ap.add_argument("--max-impostors", type=int, default=100_000)
    ap.add_argument("--flip", action="store_true", help="benchmarks: compare embeddings concatenated with their "
                                                        "mirror image's (CR-FIQA's protocol)")
    ap.add_argument("--fmr", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=None, help="speed batch (default 32, quick 8)")
    ap.add_argument("--reps", type=int, default=None, help="speed repetitions (default 5, quick 1)")
    ap.add_argument("--plugin-faces", type=int, default=None, help="chips for --plugin (default 256, quick 32)")
    args = ap.parse_args(argv)
    args.batch = args.batch or (8 if args.quick else 32)
    args.reps = args.reps or (1 if args.quick else 5)
    args.plugin_faces = args.plugin_faces or (32 if args.quick else 256)
    return args


def main(argv=None):
    args = parse_args(argv)
    t0 = time.time()
    device = torch.device(args.device)

    def log(msg):
        print(f"[{time.time() - t0:6.1f} s] {msg}", file=sys.stderr, flush=True)

    out = Path(args.out) if args.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    backbone = load_backbone(args.backbone, args.checkpoint).to(device)
    methods = build_methods(backbone, args.quick)
    log(f"{backbone.name}: methods {', '.join(methods)}")
    external = bool(args.bin or args.identity_folder or args.ijb)
    sections = []
    if external:
        results = [bin_benchmark(p, backbone, methods, args, log) for p in args.bin]
        results += [folder_benchmark(p, backbone, methods, args, log) for p in args.identity_folder]
        results += [ijb_benchmark(p, backbone, methods, args, log) for p in args.ijb]
        sections += paper_table(results, backbone, args.flip)
        for r in results:
            sections += [f"EDC plots: {', '.join(p)}"] if (p := write_plots(r["block"], out, r["name"], r["name"])) else []
    if not external or args.builtin:
        sections += run_real(backbone, methods, args, out, log)
        sections += run_speed(backbone, methods, args, device, log)
        if args.plugin:
            sections += run_plugin(backbone, args, next(iter(methods.values())), log)
    cmd = "python benchmarks/evaluate.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = f"`{cmd.strip()}` ({time.time() - t0:.0f} s)\n\n" + "\n\n".join(sections) + "\n"
    print(text)
    if out:
        (out / "evaluate.md").write_text(text)
        log(f"wrote {out / 'evaluate.md'}")


if __name__ == "__main__":
    main()
