#!/usr/bin/env bash
# pyright --verifytypes needs trioflow installed as a package (not an editable
# path hook), so install a copy into a scratch directory and point at it.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
py="${PYTHON:-$here/.venv/bin/python}"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
"$py" -m pip install -q --no-deps --target "$scratch" "$here" 2>/dev/null
cd "$scratch"
out=$(PYTHONPATH="$scratch" "$py" -m pyright --verifytypes trioflow --ignoreexternal --pythonpath "$py" 2>&1) || {
  echo "$out"
  exit 1
}
echo "$out" | grep -E "score|exported by"
