# shellcheck shell=bash
# Shared by scripts/run and scripts/test (sourced, not run): find the project, make its
# virtualenv, install the pinned requirements only when they changed.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"

say() { echo "trustcard: $*" >&2; }
die() { say "$*"; exit 1; }

# requirement_files FILE: FILE and every file it includes with -r, recursively.
requirement_files() {
  local file="$1" included
  echo "$file"
  sed -n 's/^[[:space:]]*\(-r\|--requirement\)[[:space:]=]*\([^[:space:]#]*\).*/\2/p' "$file" |
    while read -r included; do requirement_files "$(dirname "$file")/$included"; done
}

# ensure_venv REQUIREMENTS_FILE: create .venv when it is missing, then install the file
# (and the project itself, for the `trustcard` command) when it, a file it includes or
# pyproject.toml changed since the last install of that file. The stamp in .venv holds
# a hash of them, one stamp per requirements file, so scripts/run and scripts/test do
# not undo each other's work.
ensure_venv() {
  local requirements="$1"
  if [ ! -x "$PY" ]; then
    command -v python3 >/dev/null 2>&1 || die "python3 is not installed; Python 3.11 or newer is needed."
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
      || die "Python 3.11 or newer is needed; python3 is $(python3 -V 2>&1)."
    say "creating the virtualenv in .venv"
    if ! python3 -m venv "$VENV"; then
      rm -rf "$VENV"  # only what this failed attempt made: it did not exist a moment ago
      die "could not create .venv (on Debian or Ubuntu: apt-get install python3-venv)."
    fi
  fi
  local stamp="$VENV/.installed-${requirements%.txt}.sha256" wanted files
  mapfile -t files < <(cd "$ROOT" && requirement_files "$requirements")
  wanted="$(cd "$ROOT" && cat "${files[@]}" pyproject.toml | sha256sum | cut -d' ' -f1)"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    say "installing $requirements into .venv"
    # -qq for the project itself: setuptools warns on every editable install.
    (cd "$ROOT" && export PIP_DISABLE_PIP_VERSION_CHECK=1 &&
      "$PY" -m pip install --quiet -r "$requirements" &&
      "$PY" -m pip install --quiet --quiet --no-deps -e .) >&2 \
      || die "installing $requirements failed (see pip's message above)."
    echo "$wanted" > "$stamp"
  fi
}
