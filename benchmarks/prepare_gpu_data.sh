#!/usr/bin/env bash
# Copy what the GPU session reads into .gpu_data/ (ignored by git), to carry with the device
# call: the CIFAR-10 / CIFAR-10N npz files, cleanlab's pure-Python package from this
# environment (the device has none and cannot download), and FER2013 when everything still
# fits the 64 MiB the device accepts (working tree included).
#
#   bash benchmarks/prepare_gpu_data.sh [DATA]    # DATA default $GAAVE_DATA, else ../shared/data
set -eu
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SRC="${1:-${GAAVE_DATA:-$ROOT/../shared/data}}"
DEST="$ROOT/.gpu_data"
LIMIT=$((64 * 1024 * 1024))
PYTHON="${PYTHON:-python3}"
[ -f "$SRC/cifar10/cifar10_jpeg.npz" ] || { echo "prepare_gpu_data.sh: error: no $SRC/cifar10/cifar10_jpeg.npz" >&2; exit 2; }
rm -rf "$DEST"
mkdir -p "$DEST/cifar10" "$DEST/site"
cp "$SRC"/cifar10/*.npz "$DEST/cifar10/"
if CL="$("$PYTHON" -c 'import cleanlab, os; print(os.path.dirname(cleanlab.__file__))' 2>/dev/null)"; then
  cp -r "$CL" "$DEST/site/"
  find "$DEST/site" -name __pycache__ -prune -exec rm -rf {} +
else
  echo "prepare_gpu_data.sh: cleanlab is not installed here: the session's cleanlab row will be skipped" >&2
fi
tree_bytes=$(git -C "$ROOT" ls-files -z | (cd "$ROOT" && xargs -0 du -cb 2>/dev/null) | tail -1 | cut -f1)
used=$(( $(du -sb "$DEST" | cut -f1) + tree_bytes ))
fer="$SRC/fer2013/fer2013.npz"
if [ -f "$fer" ] && (( used + $(stat -c %s "$fer") <= LIMIT )); then
  mkdir -p "$DEST/fer2013" && cp "$fer" "$DEST/fer2013/"
  used=$(( used + $(stat -c %s "$fer") ))
elif [ -f "$fer" ]; then
  echo "fer2013.npz left out: $(( ($(stat -c %s "$fer") + used) / 1048576 )) MiB would pass the 64 MiB limit"
fi
echo "$DEST: $(( used / 1048576 )) MiB with the working tree (limit 64 MiB)"
