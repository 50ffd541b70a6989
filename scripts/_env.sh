# Shared by scripts/*: create or reuse the project's virtualenv and install bluegreen into it.
# Needs nothing but Python >= 3.11 on PATH (python3.11 preferred, then python3.13, python3.12, python3).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
pick_python() {
  for py in python3.11 python3.13 python3.12 python3; do
    if command -v "$py" >/dev/null 2>&1 && "$py" -c 'import sys; sys.exit(0 if sys.version_info[:2]>=(3,11) else 1)'; then
      echo "$py"; return 0
    fi
  done
  echo "bluegreen needs Python >= 3.11 on PATH (python3.11, python3.12, python3.13 or python3)" >&2
  return 1
}
ensure_venv() {
  local extras="${1:-}"
  local stamp="$VENV/.bluegreen-installed$extras"
  if [ ! -x "$VENV/bin/python" ]; then
    "$(pick_python)" -m venv "$VENV"
  fi
  # Reinstall when pyproject.toml changed since the last install.
  if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
    "$VENV/bin/python" -m pip install --quiet --upgrade pip >/dev/null
    if [ -n "$extras" ]; then
      "$VENV/bin/python" -m pip install --quiet -e "$ROOT[$extras]"
    else
      "$VENV/bin/python" -m pip install --quiet -e "$ROOT"
    fi
    touch "$stamp"
  fi
}
ensure_powerloss_deps() {
  # The power-loss recorder (tests/powerloss) needs fusermount3 and libfuse3 (Debian fuse3); as root only.
  if [ "$(id -u)" = 0 ] && ! command -v fusermount3 >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q fuse3; } >/dev/null 2>&1 \
      || echo "warning: could not install fuse3; the powerloss tests will fail" >&2
  fi
}
