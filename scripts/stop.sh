#!/usr/bin/env bash
# `make stop`: stop the pixserve started by `make run` (SIGTERM, then SIGKILL after 30 s).
set -uo pipefail
VENV=${VENV:-.venv}
if [ -f var/pixserve.pid ]; then
  pid=$(cat var/pixserve.pid)
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
  kill -KILL -- "-$pid" 2>/dev/null
  rm -f var/pixserve.pid
fi
"$VENV/bin/ray" stop --force >/dev/null 2>&1
if [ -f var/redis.pid ]; then
  kill "$(cat var/redis.pid)" 2>/dev/null
  rm -f var/redis.pid
fi
echo "pixserve stopped"
