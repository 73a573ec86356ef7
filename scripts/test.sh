#!/usr/bin/env bash
# Set up and run marsam's test suite on a fresh Debian machine (Python 3.11, no GPU, no display).
# System packages: Xvfb and Mesa software GL for the napari tests (installed when run as root).
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs="xvfb xauth libgl1-mesa-dri libegl1 libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0 \
libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 libxcb-xinput0 libxcb-xfixes0 \
libxcb-shape0 libxcb-cursor0 libdbus-1-3 libfontconfig1 libglib2.0-0"
if ! command -v xvfb-run >/dev/null 2>&1 || ! dpkg -s libxcb-cursor0 >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need_pkgs >/dev/null
    else
        echo "scripts/test.sh: install as root first: apt-get install $need_pkgs" >&2
    fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/pip install -q -e ".[gui,geo,onnx,dev]"

export QT_QPA_PLATFORM=${QT_QPA_PLATFORM:-xcb}
export MARSAM_CACHE_DIR=${MARSAM_CACHE_DIR:-$(mktemp -d)}
if command -v xvfb-run >/dev/null 2>&1; then
    exec xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python -m pytest "$@"
else
    echo "scripts/test.sh: no xvfb-run; gui tests will be skipped" >&2
    exec .venv/bin/python -m pytest "$@"
fi
