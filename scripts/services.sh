#!/usr/bin/env bash
# Makes RabbitMQ, Redis and PostgreSQL reachable for the tests, and the
# independent clients the tests use (kcat, python3-pika, rabbitmqctl) present;
# then starts the clustered setups of scripts/clusters.sh (Redis Cluster, Redis
# with Sentinel, a 3-node RabbitMQ cluster) unless REDIS_CLUSTER_ADDRS,
# REDIS_SENTINEL_ADDRS or AMQP_CLUSTER_URLS name other ones.
#
# For each service: already reachable -> left alone; installed but stopped ->
# started; otherwise a Docker engine -> `docker compose up -d --wait`; otherwise
# Debian as root -> apt-get install and start; otherwise stop and say what to
# install. Kafka needs nothing here: the tests start an in-process broker
# unless KAFKA_BROKERS names a cluster.
#
# Usage: services.sh [--check] [--no-clusters]
#   --check        parse AMQP_URL, REDIS_URL and POSTGRES_URL, print what was
#                  understood and stop (a value that does not parse is refused)
#   --no-clusters  only the single-node services, not scripts/clusters.sh
set -euo pipefail

cd "$(dirname "$0")/.."

AMQP_URL=${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/0}
POSTGRES_URL=${POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test?sslmode=disable}

log() { echo "services: $*" >&2; }

# The URLs come from the environment and this script runs as root, so they are
# parsed strictly and nothing taken from them is ever interpolated into shell
# code or SQL text. A value this script does not understand is refused (by
# variable name: the value may hold a password) before anything is done.
refuse() { # variable reason
  log "$1: $2; refusing to go on (expected scheme://[user[:password]@]host[:port][/path][?key=value&...])"
  exit 2
}

# parse_url VARIABLE DEFAULT_PORT -> sets url_host, url_port, url_path,
# url_query, url_authority (scheme://userinfo@host:port) or exits.
parse_url() {
  local name=$1 def=$2 value=${!1}
  local re_scheme='^([a-z][a-z0-9+.-]*)://(.*)$'
  local re_host='^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?)(:([0-9]{1,5}))?$'
  local re_path='^(/[A-Za-z0-9._~%-]*)?$'
  local re_query='^([A-Za-z0-9._-]+=[A-Za-z0-9._%-]*(&[A-Za-z0-9._-]+=[A-Za-z0-9._%-]*)*)?$'
  local re_user='^[A-Za-z0-9._~%!$&()*+,;=:-]*$'
  [[ $value =~ $re_scheme ]] || refuse "$name" "not a URL (scheme:// missing or invalid)"
  local scheme=${BASH_REMATCH[1]} rest=${BASH_REMATCH[2]}
  case $rest in *'#'*) refuse "$name" "a fragment (#...) is not accepted" ;; esac
  local authority=${rest%%[/?]*}
  rest=${rest:${#authority}}
  local userinfo='' hostport=$authority
  if [[ $authority == *@* ]]; then
    userinfo=${authority%@*}
    hostport=${authority##*@}
    [[ $userinfo =~ $re_user ]] || refuse "$name" "invalid characters in the user part (percent-encode them)"
  fi
  [[ $hostport =~ $re_host ]] || refuse "$name" "the host must be a name or an address and the port digits"
  url_host=${BASH_REMATCH[1]}
  url_port=${BASH_REMATCH[4]:-$def}
  if ((10#$url_port < 1 || 10#$url_port > 65535)); then
    refuse "$name" "the port must be a number from 1 to 65535"
  fi
  url_port=$((10#$url_port))
  url_path=${rest%%\?*}
  url_query=${rest:${#url_path}}
  url_query=${url_query#\?}
  [[ $url_path =~ $re_path ]] || refuse "$name" "invalid characters in the path"
  [[ $url_query =~ $re_query ]] || refuse "$name" "the query must be key=value pairs of letters, digits and ._%-"
  url_authority=$scheme://${userinfo:+$userinfo@}$hostport
  url_scheme=$scheme url_userinfo=$userinfo url_hostport=$hostport
}

# pct_decode STRING: percent-decoding of a URL part, as data (printf %b
# sees only \xHH escapes: the part passed the user-part whitelist above).
pct_decode() { local s=${1//\\/\\\\}; printf '%b' "${s//%/\\x}"; }

parse_url AMQP_URL 5672
amqp_host=$url_host amqp_port=$url_port
parse_url REDIS_URL 6379
redis_host=$url_host redis_port=$url_port
[[ $url_path =~ ^(/[0-9]{0,2})?$ ]] || refuse REDIS_URL "the path must be empty or a database number"
parse_url POSTGRES_URL 5432
pg_host=$url_host pg_port=$url_port
pg_db=${url_path#/}
[[ $pg_db =~ ^[A-Za-z_][A-Za-z0-9_-]{0,62}$ ]] ||
  refuse POSTGRES_URL "the path must name a database (letters, digits, _ and -, at most 63)"
# The password goes to psql through PGPASSWORD, never on its command line
# (where ps shows it).
pg_user=${url_userinfo%%:*} pg_password=
[[ $url_userinfo == *:* ]] && pg_password=$(pct_decode "${url_userinfo#*:}")
pg_admin_url=$url_scheme://${pg_user:+$pg_user@}$url_hostport/postgres${url_query:+?$url_query}

check= clusters=1
for arg in "$@"; do
  case $arg in
    --check) check=1 ;;
    --no-clusters) clusters= ;;
    *) log "unknown argument (usage: services.sh [--check] [--no-clusters])"; exit 2 ;;
  esac
done

if [ -n "$check" ]; then
  # Print what was parsed and stop: for the script's own tests.
  printf '%s %s %s\n' amqp "$amqp_host" "$amqp_port" redis "$redis_host" "$redis_port" postgres "$pg_host" "$pg_port"
  printf 'database %s\n' "$pg_db"
  exit 0
fi

reachable() { # host port (from parse_url: never interpolated into code)
  timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' probe "${1//[\[\]]/}" "$2" 2>/dev/null
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
ensure() { # name host port start_fn apt_packages...
  local name=$1 host=$2 port=$3 start=$4
  shift 4
  if reachable "$host" "$port"; then
    log "$name reachable on $host:$port"
    return 0
  fi
  case "$host" in 127.*|localhost|'[::1]') ;; *)
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

ensure RabbitMQ "$amqp_host" "$amqp_port" start_rabbitmq rabbitmq-server
ensure Redis "$redis_host" "$redis_port" start_redis redis-server
ensure PostgreSQL "$pg_host" "$pg_port" start_postgres postgresql

# The tests' database must exist (the default URL names database "test"). The
# name reaches SQL only as a psql variable (:'db' quotes it as a literal, :"db"
# as an identifier), never spliced into the statement text.
if command -v psql >/dev/null; then
  admin() { PGPASSWORD=$pg_password psql -X -q -At -v ON_ERROR_STOP=1 -d "$pg_admin_url" -v db="$pg_db" "$@"; }
  for i in $(seq 1 30); do
    admin -c 'select 1' >/dev/null 2>&1 && break
    sleep 1
  done
  if ! admin <<<"select 1 from pg_database where datname = :'db'" 2>/dev/null | grep -qx 1; then
    log "creating database $pg_db"
    admin <<<'create database :"db"' || true
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
# Clustered servers for the scale-out tests (scripts/clusters.sh), except
# those the variables point elsewhere.
if [ -n "$clusters" ]; then
  setups=()
  [ -n "${REDIS_CLUSTER_ADDRS:-}" ] || setups+=(redis-cluster)
  [ -n "${REDIS_SENTINEL_ADDRS:-}" ] || setups+=(sentinel)
  [ -n "${AMQP_CLUSTER_URLS:-}" ] || setups+=(rabbitmq)
  missing=()
  if [[ " ${setups[*]} " == *" redis-"* || " ${setups[*]} " == *" sentinel "* ]]; then
    command -v redis-server >/dev/null && command -v redis-cli >/dev/null || missing+=(redis-server)
  fi
  if [[ " ${setups[*]} " == *" rabbitmq "* ]]; then
    command -v rabbitmq-server >/dev/null && command -v rabbitmqctl >/dev/null || missing+=(rabbitmq-server)
  fi
  if [ ${#missing[@]} -gt 0 ] && have_apt; then
    log "installing for the clustered setups: ${missing[*]}"
    apt_install "${missing[@]}"
  fi
  if [ ${#setups[@]} -gt 0 ]; then
    bash scripts/clusters.sh start "${setups[@]}"
  fi
fi
log "ready"
