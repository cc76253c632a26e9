#!/usr/bin/env bash
# `make run`: migrate, seed the demo, start the web server and a Celery worker with beat;
# Ctrl-C stops both. Embedded defaults: SQLite, local storage, console e-mail, a
# file-system Celery broker under var/ (override with the variables in README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBUG=${DEBUG:-1}
PY=.venv/bin/python
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8000}

$PY manage.py migrate --noinput -v 0
$PY manage.py make_demo_release
pids=()
stop() {
  trap - INT TERM EXIT
  echo; echo "Stopping Gatehouse..."
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop INT TERM EXIT

.venv/bin/celery -A portal worker --beat --pool=solo --queues=default \
  --schedule=var/celerybeat-schedule --loglevel=INFO &
pids+=($!)
.venv/bin/uvicorn portal.asgi:application --host "$HOST" --port "$PORT" --log-level warning &
pids+=($!)

for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null && break
  sleep 0.2
done
echo
echo "Gatehouse is running at http://$HOST:$PORT/  (Ctrl-C stops it)"
$PY manage.py seed_demo
echo "E-mails (verification links, password resets) are printed in this terminal."
echo
wait -n "${pids[@]}"
