#!/usr/bin/env bash
# `make run`: the demo portal and its playground, on the production processes.
#
# Starts a private redis-server (127.0.0.1, REDIS_PORT or the first free port from 6380, its
# append-only file and log in var/redis/) and points REDIS_URL at it, so the cache, the Celery broker
# and results and the playground's streams all use it; migrates, builds and seeds the demo; then
# runs the web server (uvicorn, ASGI), a Celery worker with beat for the `default` queue and a
# CPU GPU-worker (`python -m inference_worker.worker`) serving opt-demo. With REDIS_URL already
# set, that Redis is used and none is started. SQLite and local file storage stay the defaults.
#
# Each process runs in its own session, so Ctrl-C (or SIGTERM) reaches only this script, which
# stops the web server and the workers (the GPU worker drains for PLAYGROUND_DRAIN_SECONDS, 5
# here), then Redis; whatever outlives its grace period is killed. A second Ctrl-C kills at once.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBUG=${DEBUG:-1}
export PLAYGROUND_DRAIN_SECONDS=${PLAYGROUND_DRAIN_SECONDS:-5}
PY=.venv/bin/python
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8000}
export SITE_URL=${SITE_URL:-http://$HOST:$PORT}  # the links in e-mails
RELEASE=opt-demo  # make_demo_release's slug
VAR=$(realpath -m "${GATEHOUSE_VAR_DIR:-var}")

listening() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

wait_for_port() {  # host, port, seconds, name
  for _ in $(seq 1 $(($3 * 5))); do listening "$1" "$2" && return 0; sleep 0.2; done
  echo "run-demo: $4 did not start listening on $1:$2" >&2
  return 1
}

names=(); pids=()
start() {  # name, command...: in a session of its own (its process group is its pid)
  local name=$1; shift
  setsid "$@" &
  names+=("$name"); pids+=($!)
}

alive() {  # pid: running (a zombie left for `wait` does not count)
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [ "${stat%% *}" != Z ]
}

force=0
reap() {  # index: wait out its grace period, then kill what is left of its process group
  local pid=${pids[$1]} grace=15 deadline
  [ "${names[$1]}" != gpu-worker ] || grace=$((${PLAYGROUND_DRAIN_SECONDS%.*} + 15))
  deadline=$((SECONDS + grace))
  while alive "$pid" && [ "$SECONDS" -lt "$deadline" ] && [ "$force" = 0 ]; do sleep 0.2; done
  if alive "$pid"; then echo "run-demo: ${names[$1]} did not stop in time; killing it" >&2; fi
  kill -KILL -- "-$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

stop() {
  trap - EXIT
  trap 'force=1' INT TERM HUP
  [ ${#pids[@]} -gt 0 ] || return 0
  echo; echo "Stopping Gatehouse..."
  local i
  # Everything but Redis first, all at once: the workers need Redis to drain.
  for i in "${!pids[@]}"; do
    if [ "${names[$i]}" != redis ]; then kill -TERM "${pids[$i]}" 2>/dev/null || true; fi
  done
  for i in "${!pids[@]}"; do
    if [ "${names[$i]}" != redis ]; then reap "$i"; fi
  done
  for i in "${!pids[@]}"; do
    if [ "${names[$i]}" = redis ]; then kill -TERM "${pids[$i]}" 2>/dev/null || true; reap "$i"; fi
  done
  echo "Stopped."
}
trap stop EXIT
trap 'stop; exit 0' INT TERM HUP

if listening "$HOST" "$PORT"; then echo "run-demo: $HOST:$PORT is taken; set PORT" >&2; exit 1; fi
if [ -z "${REDIS_URL:-}" ]; then
  scripts/install-system-packages.sh redis-server:redis-server
  mkdir -p "$VAR/redis"
  pidfile=$VAR/redis/redis.pid
  if [ -s "$pidfile" ] && [ "$(cat "/proc/$(cat "$pidfile")/comm" 2>/dev/null)" = redis-server ]; then
    echo "run-demo: $VAR/redis is in use by redis-server (pid $(cat "$pidfile")): is another make run going?" >&2
    exit 1
  fi
  redis_port=${REDIS_PORT:-6380}
  while listening 127.0.0.1 "$redis_port"; do
    [ -z "${REDIS_PORT:-}" ] || { echo "run-demo: port $redis_port is taken (REDIS_PORT)" >&2; exit 1; }
    redis_port=$((redis_port + 1))
  done
  # Persistence in var/redis (append-only file), so jobs queued when it stopped run at the next start.
  start redis redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly yes \
    --dir "$VAR/redis" --pidfile "$pidfile" --logfile "$VAR/redis/redis.log"
  wait_for_port 127.0.0.1 "$redis_port" 10 redis-server
  export REDIS_URL="redis://127.0.0.1:$redis_port/0"
fi

$PY manage.py migrate --noinput -v 0
$PY manage.py make_demo_release
checkpoint=$($PY manage.py shell -v 0 -c "from artifacts.models import Variant
print(Variant.objects.get(release__slug='$RELEASE', name='hf-safetensors').location)")

start worker .venv/bin/celery -A portal worker --beat --pool=solo --queues=default \
  --schedule="$VAR/celerybeat-schedule" --loglevel=WARNING
start web .venv/bin/uvicorn portal.asgi:application --host "$HOST" --port "$PORT" --log-level warning \
  --timeout-graceful-shutdown 5 --no-proxy-headers --no-server-header
if [ -d "$checkpoint" ]; then
  start gpu-worker "$PY" -m inference_worker.worker --release "$RELEASE" --checkpoint "$checkpoint" \
    --max-batch 4 --threads 1
else
  echo "run-demo: no GPU worker: the demo checkpoint is at $checkpoint, not a local directory" >&2
fi
wait_for_port "$HOST" "$PORT" 20 uvicorn

echo
echo "Gatehouse is running at http://$HOST:$PORT/  (Ctrl-C stops it)"
$PY manage.py seed_demo
cat <<EOF

The playground is at http://$HOST:$PORT/playground/, served by a CPU worker for $RELEASE (random
weights, so the text is gibberish). The researcher's application is pending: sign in as the
reviewer, approve it at /review/, then sign in as the researcher and prompt (or use the API with
a token from /access/tokens/).
E-mails (verification links, password resets) are printed in this terminal.
Redis: $REDIS_URL

EOF
status=0
wait -n -p exited "${pids[@]}" || status=$?
for i in "${!pids[@]}"; do
  if [ "${pids[$i]}" = "${exited:-}" ]; then echo "run-demo: ${names[$i]} exited ($status); stopping" >&2; fi
done
exit "$status"
