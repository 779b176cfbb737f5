#!/usr/bin/env bash
# Prepare scratch environments for benchmarks/run.py.  Idempotent.
#
# Creates, OUTSIDE the repository (gunicorn is never a dependency of unicornd):
#   $BENCH_DIR/gunicorn27  gunicorn[gevent]==27.0.1 + flask
#   $BENCH_DIR/gunicorn23  gunicorn==23.0.0 + eventlet + flask
#   $BENCH_DIR/granian     granian==2.8.9 + flask (Rust I/O, `--interface wsgi`)
#   $BENCH_DIR/unicornd    unicornd from this repo (pip install -e, gevent and eventlet extras) + flask
# and installs Debian's wrk, strace (for syscalls.py) and valgrind (for instructions.py) if they
# are missing.
# The pure-Python floor is ../shared/bench/py_floor.py (stdlib only, nothing to install).
#
# Environment:
#   BENCH_DIR        where the venvs go (default ~/.cache/unicornd-bench)
#   PYTHON           interpreter used to create venvs (default python3)
#   GUNICORN27_VENV  an existing venv to reuse for gunicorn 27 (symlinked)
#   GUNICORN23_VENV  an existing venv to reuse for gunicorn 23 (symlinked)
#   GRANIAN_VENV     an existing venv to reuse for granian (symlinked)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
BENCH_DIR="${BENCH_DIR:-$HOME/.cache/unicornd-bench}"
PYTHON="${PYTHON:-python3}"

mkdir -p "$BENCH_DIR"

log() { printf '[setup] %s\n' "$*"; }

# has_pkgs VENV "name==ver" "name" ... : true if every requirement is installed
has_pkgs() {
    local venv="$1"; shift
    [ -x "$venv/bin/python" ] || return 1
    "$venv/bin/python" - "$@" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version, PackageNotFoundError
for req in sys.argv[1:]:
    name, _, want = req.partition("==")
    try:
        got = version(name)
    except PackageNotFoundError:
        sys.exit(1)
    if want and got != want:
        sys.exit(1)
PY
}

# make_venv NAME REUSE_VAR_VALUE PIP_ARGS... -- CHECK_REQS...
make_venv() {
    local name="$1" reuse="$2"; shift 2
    local pip_args=() checks=()
    while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do pip_args+=("$1"); shift; done
    [ "${1:-}" = "--" ] && shift
    checks=("$@")
    local venv="$BENCH_DIR/$name"

    if [ -n "$reuse" ]; then
        if has_pkgs "$reuse" "${checks[@]}"; then
            if [ "$(readlink -f "$venv" 2>/dev/null)" != "$(readlink -f "$reuse")" ]; then
                rm -rf "$venv"
                ln -s "$reuse" "$venv"
            fi
            log "$name: reusing $reuse"
            return
        fi
        log "$name: $reuse lacks ${checks[*]}; building $venv instead"
        [ -L "$venv" ] && rm -f "$venv"
    fi

    if has_pkgs "$venv" "${checks[@]}"; then
        log "$name: up to date ($venv)"
        return
    fi
    [ -L "$venv" ] && rm -f "$venv"
    [ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv"
    log "$name: installing ${pip_args[*]}"
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q "${pip_args[@]}"
    has_pkgs "$venv" "${checks[@]}" || { log "$name: install check failed"; exit 1; }
}

make_venv gunicorn27 "${GUNICORN27_VENV:-}" \
    "gunicorn[gevent]==27.0.1" flask -- gunicorn==27.0.1 gevent flask
make_venv gunicorn23 "${GUNICORN23_VENV:-}" \
    "gunicorn==23.0.0" eventlet flask -- gunicorn==23.0.0 eventlet flask
make_venv granian "${GRANIAN_VENV:-}" \
    "granian==2.8.9" flask -- granian==2.8.9 flask

# unicornd: editable install, so it always runs the work tree's code.
UVENV="$BENCH_DIR/unicornd"
[ -x "$UVENV/bin/python" ] || "$PYTHON" -m venv "$UVENV"
if has_pkgs "$UVENV" unicornd flask && \
   "$UVENV/bin/python" -c 'import sys, unicornd; sys.exit(0 if unicornd.__file__.startswith(sys.argv[1]) else 1)' "$REPO/" 2>/dev/null; then
    log "unicornd: up to date ($UVENV -> $REPO)"
else
    log "unicornd: pip install -e $REPO[gevent,eventlet] + flask"
    "$UVENV/bin/python" -m pip install -q --upgrade pip
    "$UVENV/bin/python" -m pip install -q -e "$REPO[gevent,eventlet]" flask
fi

# apt_install PROGRAM PACKAGE: install a Debian package if PROGRAM is not on PATH
apt_install() {
    command -v "$1" >/dev/null 2>&1 && return
    log "installing $2 (apt-get)"
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get install -y -q "$2" >/dev/null 2>&1 || {
        $sudo apt-get update -q >/dev/null
        $sudo apt-get install -y -q "$2"
    }
}
apt_install wrk wrk
apt_install strace strace
apt_install valgrind valgrind
log "wrk: $(command -v wrk); strace: $(command -v strace); valgrind: $(command -v valgrind)"
log "done. Run: python3 $HERE/run.py --help"
