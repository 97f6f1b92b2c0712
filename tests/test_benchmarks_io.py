"""Verification .bin reader (incl. refusal of malicious pickles) and the identity-folder reader."""
import io
import pickle
import struct

import numpy as np
import pytest
from PIL import Image

from prefiqs_core.evaluation.benchmarks_io import (BenchmarkFormatError, read_identity_folder,
                                        read_verification_bin, safe_unpickle)


def encode(chip, fmt="JPEG"):
    buf = io.BytesIO()
    Image.fromarray(chip).save(buf, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


@pytest.fixture(scope="module")
def chips112(real_chips):
    """Four real chips resized to the 112x112 ArcFace size the .bin files hold."""
    return np.stack([np.asarray(Image.fromarray(c).resize((112, 112), Image.BILINEAR))
                     for c in real_chips[:4]])


def py2_pickle(bins, issame):
    """The bytes Python 2's cPickle (protocol 2) writes for (list of str, list of bool)."""
    out = [b"\x80\x02", b"]", b"("]  # PROTO 2, EMPTY_LIST, MARK
    for b in bins:  # Python 2 str → SHORT_BINSTRING / BINSTRING
        out.append(b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<I", len(b)) + b)
    out += [b"e", b"]", b"("]  # APPENDS, EMPTY_LIST, MARK
    out += [b"\x88" if s else b"\x89" for s in issame]  # NEWTRUE / NEWFALSE
    out += [b"e", b"\x86", b"."]  # APPENDS, TUPLE2, STOP
    return b"".join(out)


@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_reads_python3_bin(tmp_path, chips112, protocol):
    bins = [encode(c) for c in chips112]
    issame = [True, False]
    path = tmp_path / "lfw.bin"
    path.write_bytes(pickle.dumps((bins, issame), protocol=protocol))
    vb = read_verification_bin(path)
    assert vb.name == "lfw" and len(vb) == 2
    assert vb.images.shape == (4, 112, 112, 3) and vb.images.dtype == np.uint8
    np.testing.assert_array_equal(vb.issame, [True, False])
    a, b = vb.pair_indices()
    np.testing.assert_array_equal(a, [0, 2])
    np.testing.assert_array_equal(b, [1, 3])
    # Same pixels as decoding the JPEG directly; close to the original chip (JPEG is lossy).
    np.testing.assert_array_equal(vb.images[1], np.asarray(Image.open(io.BytesIO(bins[1])).convert("RGB")))
    assert np.abs(vb.images.astype(int) - chips112.astype(int)).mean() < 6


def test_png_bin_is_exact_rgb(tmp_path, chips112):
    # Lossless images: the decoded array must equal the chip exactly (no BGR swap, no resampling).
    path = tmp_path / "agedb_30.bin"
    path.write_bytes(pickle.dumps(([encode(c, "PNG") for c in chips112], [True, True]), protocol=4))
    np.testing.assert_array_equal(read_verification_bin(path).images, chips112)


def test_reads_python2_bin(tmp_path, chips112):
    bins = [encode(c) for c in chips112]
    data = py2_pickle(bins, [False, True])
    with pytest.raises(UnicodeDecodeError):  # why encoding="bytes" is needed
        pickle.loads(data)
    path = tmp_path / "cfp_fp.bin"
    path.write_bytes(data)
    vb = read_verification_bin(path)
    np.testing.assert_array_equal(vb.issame, [False, True])
    np.testing.assert_array_equal(vb.images[0], np.asarray(Image.open(io.BytesIO(bins[0])).convert("RGB")))


def test_max_pairs_and_size_check(tmp_path, chips112):
    path = tmp_path / "calfw.bin"
    path.write_bytes(pickle.dumps(([encode(c) for c in chips112], [True, False]), protocol=4))
    vb = read_verification_bin(path, max_pairs=1)
    assert vb.images.shape[0] == 2 and vb.issame.tolist() == [True]
    with pytest.raises(BenchmarkFormatError, match="expected 96x96"):
        read_verification_bin(path, expected_size=(96, 96))
    assert read_verification_bin(path, expected_size=None).images.shape[1:] == (112, 112, 3)


class _Payload:
    """Unpickling this runs exec(), which writes a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('pwned')",)


def test_malicious_bin_is_refused_and_runs_nothing(tmp_path, chips112):
    # Control: the payload really does execute under a plain pickle.loads.
    control = tmp_path / "control_marker"
    pickle.loads(pickle.dumps(_Payload(control)))
    assert control.exists()

    marker = tmp_path / "marker"
    for evil in ([_Payload(marker)], ([encode(chips112[0]), _Payload(marker)], [True]), _Payload(marker)):
        path = tmp_path / "evil.bin"
        path.write_bytes(pickle.dumps(evil, protocol=4))
        with pytest.raises(BenchmarkFormatError, match="refusing"):
            read_verification_bin(path)
        assert not marker.exists()
    # The unpickler alone (no opcode scan) refuses to look up any global either.
    from prefiqs_core.evaluation.benchmarks_io import _NoGlobalsUnpickler
    with pytest.raises(BenchmarkFormatError, match="refusing to load builtins.exec"):
        _NoGlobalsUnpickler(io.BytesIO(pickle.dumps(_Payload(marker), protocol=4))).load()
    assert not marker.exists()


@pytest.mark.parametrize("obj, match", [
    ({"a": 1}, "EMPTY_DICT"),  # dicts are not part of the format
    ((np.zeros(3, np.uint8), [True]), "refusing"),  # numpy arrays need a global
    (([b"x"], [True]), "2 images per pair"),
    (([b"x", 5], [True]), "not encoded bytes"),
    ([1, 2, 3], "pickled pair"),
])
def test_unexpected_content_is_refused(tmp_path, obj, match):
    path = tmp_path / "odd.bin"
    path.write_bytes(pickle.dumps(obj, protocol=4))
    with pytest.raises(BenchmarkFormatError, match=match):
        read_verification_bin(path)


def test_truncated_garbage_and_undecodable(tmp_path, chips112):
    good = pickle.dumps(([encode(c) for c in chips112[:2]], [True]), protocol=4)
    cases = {"truncated": good[: len(good) // 2], "garbage": b"this is not a pickle at all\n" * 10,
             "empty": b""}
    for name, data in cases.items():
        path = tmp_path / f"{name}.bin"
        path.write_bytes(data)
        with pytest.raises(BenchmarkFormatError):
            read_verification_bin(path)
    path = tmp_path / "badjpeg.bin"
    path.write_bytes(pickle.dumps(([b"\xff\xd8 not really a jpeg", encode(chips112[0])], [True]), protocol=4))
    with pytest.raises(BenchmarkFormatError, match="image 0 is not a decodable image"):
        read_verification_bin(path)
    assert issubclass(BenchmarkFormatError, ValueError)
    assert safe_unpickle(pickle.dumps(([b"ab"], (1, True)), protocol=5)) == ([b"ab"], (1, True))


def test_read_identity_folder(tmp_path, chips112):
    layout = {"train": {"Alice": ["2.jpg", "1.jpg"], "Bob": ["x.png"]}, "test": {"Carol": ["c.JPG"]}}
    for split, ids in layout.items():
        for ident, files in ids.items():
            (tmp_path / split / ident).mkdir(parents=True)
            for f in files:
                (tmp_path / split / ident / f).write_bytes(encode(chips112[0]))
    (tmp_path / "train" / "Alice" / "notes.txt").write_text("not an image")
    paths, labels = read_identity_folder(tmp_path, "train")
    assert [p.split("/")[-1] for p in paths] == ["1.jpg", "2.jpg", "x.png"]
    assert labels == ["Alice", "Alice", "Bob"]
    paths, labels = read_identity_folder(tmp_path)  # all splits, sorted: test then train
    assert labels == ["Carol", "Alice", "Alice", "Bob"]
    paths, labels = read_identity_folder(tmp_path / "train", has_splits=False)
    assert labels == ["Alice", "Alice", "Bob"]
    with pytest.raises(ValueError, match="split folder"):
        read_identity_folder(tmp_path, "validation")
    with pytest.raises(ValueError, match="not a directory"):
        read_identity_folder(tmp_path / "nope")
    (tmp_path / "empty" / "Dan").mkdir(parents=True)
    with pytest.raises(ValueError, match="no images"):
        read_identity_folder(tmp_path, "empty")
