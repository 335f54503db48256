# Shared by scripts/run and scripts/test: find the project, make its virtualenv, install.
# Sourced, not run.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"

# ensure_venv REQUIREMENTS_FILE...: create .venv when missing and install the given files
# again whenever their content changed since the last install (a stamp holds their hash).
ensure_venv() {
  if [ ! -x "$PY" ]; then
    echo "trustcard: creating the virtualenv in .venv" >&2
    python3 -m venv "$VENV"
    "$PY" -m pip install --quiet --upgrade pip >&2
  fi
  local stamp="$VENV/.requirements.sha256" wanted
  wanted="$(cd "$ROOT" && cat "$@" requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    echo "trustcard: installing $* into .venv" >&2
    (cd "$ROOT" && "$PY" -m pip install --quiet $(printf -- '-r %s ' "$@") && "$PY" -m pip install --quiet --no-deps -e .) >&2
    echo "$wanted" > "$stamp"
  fi
}
