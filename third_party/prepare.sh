#!/usr/bin/env bash
# Lays out the patched llama.cpp + ggml tree that the Makefile builds.
#
#   third_party/prepare.sh DEST
#
# Downloads the pinned module through the Go module proxy (verified against
# the hash in pin.env), copies only the C/C++ sources the CPU build needs into
# DEST, then applies third_party/patches/*.patch in order. DEST is generated
# and git-ignored; it is re-laid whenever the pin or a patch changes (the
# Makefile tracks that), rewriting only the files whose content changed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dest=${1:?usage: prepare.sh DEST}
# shellcheck source=pin.env
. "$here/pin.env"

json=$(GOFLAGS=-mod=mod go mod download -json "$OLLAMA_MODULE@$OLLAMA_VERSION")
dir=$(printf '%s' "$json" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
sum=$(printf '%s' "$json" | sed -n 's/^[[:space:]]*"Sum": "\(.*\)",\{0,1\}$/\1/p')
if [ -z "$dir" ] || [ ! -d "$dir" ]; then
  echo "prepare.sh: go mod download of $OLLAMA_MODULE@$OLLAMA_VERSION gave no source folder:" >&2
  printf '%s\n' "$json" >&2
  exit 1
fi
if [ "$sum" != "$OLLAMA_SUM" ]; then
  echo "prepare.sh: $OLLAMA_MODULE@$OLLAMA_VERSION has hash $sum, pin.env expects $OLLAMA_SUM" >&2
  exit 1
fi

tmp="$dest.tmp.$$"
rm -rf "$tmp"
trap 'rm -rf "$tmp"' EXIT

# copy_sources FROM TO: the C/C++ sources and headers directly in FROM.
copy_sources() {
  mkdir -p "$2"
  find "$1" -maxdepth 1 -type f \( -name '*.c' -o -name '*.cpp' -o -name '*.h' \) -exec cp {} "$2/" \;
}
L="$dir/llama/llama.cpp"
G="$dir/ml/backend/ggml/ggml"
copy_sources "$L/include"                   "$tmp/llama/include"
copy_sources "$L/src"                       "$tmp/llama/src"
copy_sources "$L/src/models"                "$tmp/llama/src/models"
copy_sources "$G/include"                   "$tmp/ggml/include"
copy_sources "$G/src"                       "$tmp/ggml/src"
copy_sources "$G/src/ggml-cpu"              "$tmp/ggml/src/ggml-cpu"
copy_sources "$G/src/ggml-cpu/arch/x86"     "$tmp/ggml/src/ggml-cpu/arch/x86"
copy_sources "$G/src/ggml-cpu/llamafile"    "$tmp/ggml/src/ggml-cpu/llamafile"
copy_sources "$G/src/ggml-cpu/amx"          "$tmp/ggml/src/ggml-cpu/amx"
cp "$L/LICENSE" "$tmp/llama/LICENSE"
cp "$G/LICENSE" "$tmp/ggml/LICENSE"
chmod -R u+w "$tmp"

for p in "$here"/patches/*.patch; do
  [ -e "$p" ] || continue
  echo "prepare.sh: applying $(basename "$p")"
  if ! patch -d "$tmp" -p1 --forward --quiet --no-backup-if-mismatch < "$p"; then
    echo "prepare.sh: patch $(basename "$p") does not apply to $OLLAMA_MODULE@$OLLAMA_VERSION" >&2
    exit 1
  fi
done

# Sync into DEST, touching only files whose content changed, so that make
# rebuilds just the objects a new patch affects.
mkdir -p "$dest"
(cd "$tmp" && find . -type f) | while read -r f; do
  if ! cmp -s "$tmp/$f" "$dest/$f"; then
    mkdir -p "$(dirname "$dest/$f")"
    cp "$tmp/$f" "$dest/$f"
  fi
done
(cd "$dest" && find . -type f ! -name .prepared) | while read -r f; do
  [ -e "$tmp/$f" ] || rm -f "$dest/$f"
done
trap - EXIT
echo "prepare.sh: patched llama.cpp $LLAMA_COMMIT (from $OLLAMA_MODULE@$OLLAMA_VERSION) laid out in $dest"
