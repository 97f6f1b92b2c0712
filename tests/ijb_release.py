"""A tiny IJB-C release in insightface's layout, written from the real photos (for the tests)."""
from pathlib import Path

from PIL import Image

from prefiqs_core import assets
from prefiqs_core.alignment import YuNetDetector
from prefiqs_core.evaluation.degrade import blur, downscale
from prefiqs_core.images import load_rgb


def loose_crops():
    """(identity, crop, 5 points in crop pixels, detector score, the photo and its points) per face."""
    det = YuNetDetector()
    out = []
    for p in assets.demo_photos():
        img = load_rgb(p)
        for k, f in enumerate(det.detect(img)):
            x0, y0, x1, y1 = f.box
            m = 0.6 * max(x1 - x0, y1 - y0)  # a loose crop: the face and a wide margin, as IJB's
            cx0, cy0 = int(max(0, x0 - m)), int(max(0, y0 - m))
            cx1, cy1 = int(min(img.shape[1], x1 + m)), int(min(img.shape[0], y1 + m))
            ident = "obama" if p.stem.startswith("obama") else f"{p.stem}#{k}"
            out.append((ident, img[cy0:cy1, cx0:cx1].copy(), f.landmarks - [cx0, cy0], f.score, img, f.landmarks))
    return out


def write_release(folder: Path, crops, prefix="ijbc"):
    """Per identity: template A (the clean crop, one media) and template B (a blurred and a
    down-scaled copy of it: two faces of one media); the three obama photos give three
    templates of their own. Genuine pairs: A-B of each identity and every pair of obama
    templates; impostor pairs: the A templates of different identities."""
    (folder / "loose_crop").mkdir(parents=True)
    (folder / "meta").mkdir()
    faces, tid_mid, templates = [], [], {}
    media = iter(range(9000, 10000))

    def add(img, lm, score, tid, mid):
        name = f"{len(faces) + 1}.jpg"
        Image.fromarray(img).save(folder / "loose_crop" / name, quality=95)
        faces.append(f"{name} " + " ".join(f"{v:.3f}" for v in lm.ravel()) + f" {score:.4f}")
        tid_mid.append(f"{name} {tid} {mid}")

    obama_t = []
    for k, (ident, crop, lm, score, _, _) in enumerate(crops):
        ta = 100 + k
        add(crop, lm, score, ta, next(media))
        templates.setdefault(ident, []).append(ta)
        if ident == "obama":
            obama_t.append(ta)
            continue
        tb, mb = 500 + k, next(media)
        add(blur(crop, 2.0), lm, score, tb, mb)
        add(downscale(crop, max(16, crop.shape[0] // 4)), lm, score * 0.9, tb, mb)
        templates[ident].append(tb)
    pairs = []
    for ident, ts in templates.items():
        pairs += [f"{a} {b} 1" for i, a in enumerate(ts) for b in ts[i + 1:]]
    heads = [ts[0] for ts in templates.values()]
    pairs += [f"{a} {b} 0" for i, a in enumerate(heads) for b in heads[i + 1:]]
    (folder / "meta" / f"{prefix}_name_5pts_score.txt").write_text("\n".join(faces) + "\n")
    (folder / "meta" / f"{prefix}_face_tid_mid.txt").write_text("\n".join(tid_mid) + "\n")
    (folder / "meta" / f"{prefix}_template_pair_label.txt").write_text("\n".join(pairs) + "\n")
    return templates
