#!/usr/bin/env bash
# Makes RabbitMQ, Redis and PostgreSQL reachable for the tests, and the
# independent clients the tests use (kcat, python3-pika, rabbitmqctl) present.
#
# For each service: already reachable -> left alone; installed but stopped ->
# started; otherwise a Docker engine -> `docker compose up -d --wait`; otherwise
# Debian as root -> apt-get install and start; otherwise stop and say what to
# install. Kafka needs nothing here: the tests start an in-process broker
# unless KAFKA_BROKERS names a cluster.
set -euo pipefail

cd "$(dirname "$0")/.."

AMQP_URL=${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/0}
POSTGRES_URL=${POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test?sslmode=disable}

log() { echo "services: $*" >&2; }

# hostport URL DEFAULT_PORT -> "host port"
hostport() {
  local rest=${1#*://}
  rest=${rest##*@}
  rest=${rest%%/*}
  rest=${rest%%\?*}
  local host=${rest%:*} port=${rest##*:}
  [ "$host" = "$rest" ] && port=$2
  echo "${host:-127.0.0.1} ${port}"
}

reachable() { # host port
  timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null
}

wait_for() { # name host port seconds
  local i
  for ((i = 0; i < $4 * 2; i++)); do
    reachable "$2" "$3" && return 0
    sleep 0.5
  done
  log "$1 did not become reachable on $2:$3 within $4s"
  return 1
}

is_root() { [ "$(id -u)" = 0 ]; }
have_docker_engine() { command -v docker >/dev/null && docker info >/dev/null 2>&1; }
have_apt() { is_root && command -v apt-get >/dev/null; }

apt_updated=
apt_install() {
  if [ -z "$apt_updated" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null
}

start_postgres() {
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    local v
    v=$(ls /etc/postgresql | sort -V | tail -1)
    pg_ctlcluster --skip-systemctl-redirect "$v" main start || true
    return 0
  fi
  return 1
}
start_redis() {
  if command -v redis-server >/dev/null; then
    mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$1" --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log
    return 0
  fi
  return 1
}
start_rabbitmq() {
  if command -v rabbitmq-server >/dev/null; then
    rabbitmq-server -detached || true
    return 0
  fi
  return 1
}

compose_tried=
ensure() { # name url default_port start_fn apt_packages...
  local name=$1 url=$2 def=$3 start=$4
  shift 4
  local host port
  read -r host port < <(hostport "$url" "$def")
  if reachable "$host" "$port"; then
    log "$name reachable on $host:$port"
    return 0
  fi
  case "$host" in 127.*|localhost|::1) ;; *)
    log "$name at $host:$port is unreachable and not on this machine: start it or change the URL"
    return 1 ;;
  esac
  if $start "$port"; then
    log "$name installed but stopped: starting it"
    wait_for "$name" "$host" "$port" 90 && return 0
  fi
  if have_docker_engine && [ -z "$compose_tried" ]; then
    log "starting services with docker compose"
    compose_tried=1
    docker compose up -d --wait
    wait_for "$name" "$host" "$port" 120 && return 0
  fi
  if have_apt; then
    log "$name not installed: apt-get install $*"
    apt_install "$@"
    $start "$port" || true
    wait_for "$name" "$host" "$port" 120 && return 0
  fi
  log "$name is not reachable on $host:$port and cannot be started here."
  log "Install it ($*) or run 'docker compose up -d --wait', then run make test again."
  return 1
}

ensure RabbitMQ "$AMQP_URL" 5672 start_rabbitmq rabbitmq-server
ensure Redis "$REDIS_URL" 6379 start_redis redis-server
ensure PostgreSQL "$POSTGRES_URL" 5432 start_postgres postgresql

# The tests' database must exist (the default URL names database "test").
db=${POSTGRES_URL##*/}
db=${db%%\?*}
if command -v psql >/dev/null; then
  admin_url=${POSTGRES_URL%/*}/postgres
  for i in $(seq 1 30); do
    psql "$admin_url" -Atqc 'select 1' >/dev/null 2>&1 && break
    sleep 1
  done
  if ! psql "$admin_url" -Atqc "select 1 from pg_database where datname = '$db'" 2>/dev/null | grep -q 1; then
    log "creating database $db"
    psql "$admin_url" -qc "create database \"$db\"" || true
  fi
fi

# RabbitMQ accepts TCP before it accepts AMQP logins: wait for a login.
if command -v rabbitmqctl >/dev/null; then
  for i in $(seq 1 60); do
    rabbitmqctl -q await_startup >/dev/null 2>&1 && break
    sleep 1
  done
fi

# Independent clients the tests read messages back with.
missing=()
command -v kcat >/dev/null || missing+=(kcat)
/usr/bin/python3 -c 'import pika' >/dev/null 2>&1 || missing+=(python3-pika)
command -v amqp-publish >/dev/null || missing+=(amqp-tools)
if [ ${#missing[@]} -gt 0 ]; then
  if have_apt; then
    log "installing test clients: ${missing[*]}"
    apt_install "${missing[@]}"
  else
    log "missing test clients: ${missing[*]} (tests that need them will fail under FORGE_REQUIRE_SERVICES=1)"
  fi
fi
log "ready"
