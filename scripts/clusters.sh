#!/usr/bin/env bash
# Clustered servers on loopback for the scale-out tests, next to (and
# independent of) the single-node services of services.sh:
#
#   redis-cluster  6 redis-server --cluster-enabled nodes, 127.0.0.1:7000-7005,
#                  3 primaries with one replica each
#   sentinel       a Redis primary (127.0.0.1:6380), its replica (6381) and
#                  3 Sentinels (26380-26382) watching master "uuidforge" with
#                  fast failover (down after 1 s)
#   rabbitmq       a 3-node RabbitMQ cluster uf1@localhost..uf3@localhost,
#                  AMQP on 127.0.0.1:5681-5683, distribution on 25681-25683,
#                  no plugins (so no clash on 15672/15692)
#
# Usage: clusters.sh start|stop|status [redis-cluster|sentinel|rabbitmq]...
#   start   reachable and healthy -> left alone; processes missing -> started
#           again from their data; still not healthy -> wiped and created anew
#   stop    stops the setup's processes (their data is kept)
#   status  prints "<setup> healthy" or "<setup> unhealthy: why"; exit 1 if any
#           is unhealthy
# With no setup named, all three. Data, configuration and logs live under
# FORGE_CLUSTERS_DIR (default /var/lib/uuidforge-clusters as root, else
# $TMPDIR/uuidforge-clusters-$UID). As root, the servers run as the redis and
# rabbitmq users when they exist. The RabbitMQ nodes use that user's Erlang
# cookie, so `rabbitmqctl -n uf2@localhost stop_app` works as for the default
# node.
set -euo pipefail

log() { echo "clusters: $*" >&2; }
die() { log "$*"; exit 1; }

is_root() { [ "$(id -u)" = 0 ]; }
if is_root; then
  base=${FORGE_CLUSTERS_DIR:-/var/lib/uuidforge-clusters}
else
  base=${FORGE_CLUSTERS_DIR:-${TMPDIR:-/tmp}/uuidforge-clusters-$(id -u)}
fi
case $base in /*) ;; *) die "FORGE_CLUSTERS_DIR must be an absolute path" ;; esac
[[ $base =~ ^[A-Za-z0-9/._-]+$ ]] || die "FORGE_CLUSTERS_DIR: only letters, digits and /._- are accepted"

CLUSTER_PORTS=(7000 7001 7002 7003 7004 7005)
SENTINEL_MASTER=uuidforge
SENTINEL_DATA_PORTS=(6380 6381) # primary first, at creation
SENTINEL_PORTS=(26380 26381 26382)
RABBIT_NODES=(uf1@localhost uf2@localhost uf3@localhost)
RABBIT_AMQP_PORTS=(5681 5682 5683)
RABBIT_DIST_PORTS=(25681 25682 25683)

# run_as USER CMD...: as root, run CMD as USER when that user exists.
run_as() {
  local user=$1
  shift
  if is_root && id -u "$user" >/dev/null 2>&1; then
    runuser -u "$user" -- "$@"
  else
    "$@"
  fi
}
own() { # user dir...: give dirs to user (as root, when the user exists)
  local user=$1
  shift
  if is_root && id -u "$user" >/dev/null 2>&1; then
    chown -R "$user:" "$@"
  fi
}

# rcli PORT ARGS...: redis-cli on loopback, \r stripped, 2 s timeout.
rcli() {
  local port=$1
  shift
  timeout 2 redis-cli -h 127.0.0.1 -p "$port" "$@" 2>/dev/null | tr -d '\r'
}
pong() { [ "$(rcli "$1" ping)" = PONG ]; }
# ours PORT CONF: the server on PORT is the one this script started with the
# configuration file CONF.
ours() { [ "$(field "$(rcli "$1" info server)" config_file)" = "$2" ]; }
# field TEXT NAME: the value of NAME:value in INFO-style TEXT.
field() { sed -n "s/^$2://p" <<<"$1" | head -1; }

# stop_redis PORT CONF: shuts the server on PORT down if it is ours; refuses
# to touch anything else listening there.
stop_redis() {
  local port=$1 conf=$2
  pong "$port" || return 0
  ours "$port" "$conf" || die "127.0.0.1:$port is used by a server this script did not start; stop it or free the port"
  rcli "$port" shutdown nosave >/dev/null || true
  local i
  for ((i = 0; i < 50; i++)); do pong "$port" || return 0; sleep 0.1; done
  die "redis on 127.0.0.1:$port did not stop"
}

need_redis() {
  command -v redis-server >/dev/null && command -v redis-cli >/dev/null ||
    die "redis-server and redis-cli are needed (Debian: apt-get install redis-server)"
}

# ---------------------------------------------------------------- Redis Cluster

rc_dir() { echo "$base/redis-cluster/$1"; }

rc_launch() { # port
  local port=$1 dir
  dir=$(rc_dir "$port")
  mkdir -p "$dir"
  cat >"$dir/redis.conf" <<EOF
port $port
bind 127.0.0.1
protected-mode yes
cluster-enabled yes
cluster-config-file nodes.conf
cluster-node-timeout 2000
dir $dir
daemonize yes
pidfile $dir/redis.pid
logfile $dir/redis.log
save ""
appendonly no
repl-diskless-sync-delay 0
EOF
  own redis "$dir"
  run_as redis redis-server "$dir/redis.conf" 9>&-
}

rc_health() { # prints why the cluster is unhealthy, nothing when healthy
  local port info
  for port in "${CLUSTER_PORTS[@]}"; do
    pong "$port" || { echo "127.0.0.1:$port does not answer"; return; }
    ours "$port" "$(rc_dir "$port")/redis.conf" || { echo "127.0.0.1:$port is not a node of this setup"; return; }
    info=$(rcli "$port" cluster info)
    [ "$(field "$info" cluster_state)" = ok ] || { echo "127.0.0.1:$port: cluster_state $(field "$info" cluster_state)"; return; }
    [ "$(field "$info" cluster_known_nodes)" = 6 ] || { echo "127.0.0.1:$port knows $(field "$info" cluster_known_nodes) nodes"; return; }
    [ "$(field "$info" cluster_slots_ok)" = 16384 ] || { echo "127.0.0.1:$port: $(field "$info" cluster_slots_ok) slots ok"; return; }
  done
  # Every primary has a replica (a killed primary came back as a replica).
  local nodes masters replicas
  nodes=$(rcli "${CLUSTER_PORTS[0]}" cluster nodes)
  masters=$(awk '$3 ~ /master/' <<<"$nodes" | wc -l)
  replicas=$(awk '$3 ~ /slave/' <<<"$nodes" | wc -l)
  [ "$masters" = 3 ] && [ "$replicas" = 3 ] || { echo "$masters primaries and $replicas replicas, want 3 and 3"; return; }
  [ -z "$(awk '$3 ~ /fail/' <<<"$nodes")" ] || echo "a node is flagged as failing"
}

rc_wait() { # seconds: wait until healthy
  local end=$((SECONDS + $1))
  while [ -n "$(rc_health)" ]; do
    [ $SECONDS -lt $end ] || return 1
    sleep 0.25
  done
}

rc_start() {
  need_redis
  local why port t0=$SECONDS
  why=$(rc_health)
  if [ -z "$why" ]; then
    log "redis-cluster healthy on 127.0.0.1:${CLUSTER_PORTS[0]}-${CLUSTER_PORTS[5]}"
    return 0
  fi
  # Start the nodes that are down, from their nodes.conf when they have one.
  local created=1
  for port in "${CLUSTER_PORTS[@]}"; do
    [ -f "$(rc_dir "$port")/nodes.conf" ] || created=
    if ! pong "$port"; then
      rc_launch "$port"
    fi
  done
  if [ -n "$created" ] && rc_wait 15; then
    log "redis-cluster healthy again in $((SECONDS - t0))s (was: $why)"
    return 0
  fi
  [ -n "$created" ] && log "redis-cluster unhealthy ($(rc_health)): creating it anew"
  for port in "${CLUSTER_PORTS[@]}"; do stop_redis "$port" "$(rc_dir "$port")/redis.conf"; done
  rm -rf "$base/redis-cluster"
  for port in "${CLUSTER_PORTS[@]}"; do rc_launch "$port"; done
  for port in "${CLUSTER_PORTS[@]}"; do
    local i
    for ((i = 0; i < 50; i++)); do pong "$port" && break; sleep 0.1; done
  done
  local addrs=()
  for port in "${CLUSTER_PORTS[@]}"; do addrs+=("127.0.0.1:$port"); done
  redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes >"$base/redis-cluster/create.log" 2>&1 ||
    die "redis-cli --cluster create failed; see $base/redis-cluster/create.log"
  rc_wait 30 || die "redis-cluster not healthy after creation: $(rc_health)"
  log "redis-cluster created on 127.0.0.1:${CLUSTER_PORTS[0]}-${CLUSTER_PORTS[5]} in $((SECONDS - t0))s"
}

rc_stop() {
  local port
  for port in "${CLUSTER_PORTS[@]}"; do stop_redis "$port" "$(rc_dir "$port")/redis.conf"; done
}

# --------------------------------------------------------------------- Sentinel

sn_dir() { echo "$base/sentinel/$1"; }

# sn_master: the primary's port the Sentinels agree on, or nothing.
sn_master() {
  local port addr first=
  for port in "${SENTINEL_PORTS[@]}"; do
    addr=$(rcli "$port" sentinel get-master-addr-by-name "$SENTINEL_MASTER" | paste -sd: -)
    [ -n "$addr" ] || return 0
    if [ -z "$first" ]; then
      first=$addr
    elif [ "$addr" != "$first" ]; then
      return 0
    fi
  done
  [ "${first%%:*}" = 127.0.0.1 ] && echo "${first##*:}"
}

sn_launch_data() { # port [primary port]
  local port=$1 primary=${2:-} dir
  dir=$(sn_dir "$port")
  mkdir -p "$dir"
  if [ ! -f "$dir/redis.conf" ]; then
    {
      echo "port $port"
      echo "bind 127.0.0.1"
      echo "protected-mode yes"
      echo "dir $dir"
      echo "pidfile $dir/redis.pid"
      echo "logfile $dir/redis.log"
      echo 'save ""'
      echo "appendonly no"
      echo "repl-diskless-sync-delay 0" # a replica (a returning primary) syncs at once
      [ "$port" = "${SENTINEL_DATA_PORTS[0]}" ] || echo "replicaof 127.0.0.1 ${SENTINEL_DATA_PORTS[0]}"
    } >"$dir/redis.conf"
  fi
  own redis "$dir"
  # A node coming back while another is primary starts as its replica, so
  # that there are never two primaries; the Sentinels would convert it anyway.
  local args=("$dir/redis.conf" --daemonize yes)
  [ -n "$primary" ] && [ "$primary" != "$port" ] && args+=(--replicaof 127.0.0.1 "$primary")
  run_as redis redis-server "${args[@]}" 9>&-
}

sn_launch_sentinel() { # port
  local port=$1 dir
  dir=$(sn_dir "$port")
  mkdir -p "$dir"
  if [ ! -f "$dir/sentinel.conf" ]; then
    cat >"$dir/sentinel.conf" <<EOF
port $port
bind 127.0.0.1
protected-mode no
dir $dir
pidfile $dir/sentinel.pid
logfile $dir/sentinel.log
sentinel monitor $SENTINEL_MASTER 127.0.0.1 ${SENTINEL_DATA_PORTS[0]} 2
sentinel down-after-milliseconds $SENTINEL_MASTER 1000
sentinel failover-timeout $SENTINEL_MASTER 3000
sentinel parallel-syncs $SENTINEL_MASTER 1
EOF
  fi
  own redis "$dir"
  run_as redis redis-server "$dir/sentinel.conf" --sentinel --daemonize yes 9>&-
}

sn_health() {
  local port
  for port in "${SENTINEL_DATA_PORTS[@]}"; do
    pong "$port" || { echo "127.0.0.1:$port does not answer"; return; }
    ours "$port" "$(sn_dir "$port")/redis.conf" || { echo "127.0.0.1:$port is not a server of this setup"; return; }
  done
  for port in "${SENTINEL_PORTS[@]}"; do
    pong "$port" || { echo "sentinel 127.0.0.1:$port does not answer"; return; }
  done
  local primary
  primary=$(sn_master)
  [ -n "$primary" ] || { echo "the Sentinels do not agree on a primary"; return; }
  local info
  info=$(rcli "$primary" info replication)
  [ "$(field "$info" role)" = master ] || { echo "127.0.0.1:$primary is named primary but is $(field "$info" role)"; return; }
  for port in "${SENTINEL_DATA_PORTS[@]}"; do
    [ "$port" = "$primary" ] && continue
    info=$(rcli "$port" info replication)
    [ "$(field "$info" role)" = slave ] && [ "$(field "$info" master_port)" = "$primary" ] &&
      [ "$(field "$info" master_link_status)" = up ] ||
      { echo "127.0.0.1:$port is not an up-to-date replica of 127.0.0.1:$primary"; return; }
  done
  for port in "${SENTINEL_PORTS[@]}"; do
    info=$(rcli "$port" sentinel master "$SENTINEL_MASTER" | paste -d: - -)
    [ "$(field "$info" num-other-sentinels)" = 2 ] || { echo "sentinel 127.0.0.1:$port knows $(field "$info" num-other-sentinels) other sentinels"; return; }
    [ "$(field "$info" flags)" = master ] || { echo "sentinel 127.0.0.1:$port flags the primary $(field "$info" flags)"; return; }
  done
}

sn_wait() { # seconds: wait until healthy
  local end=$((SECONDS + $1))
  while [ -n "$(sn_health)" ]; do
    [ $SECONDS -lt $end ] || return 1
    sleep 0.25
  done
}

sn_start() {
  need_redis
  local why port t0=$SECONDS
  why=$(sn_health)
  if [ -z "$why" ]; then
    log "sentinel healthy: master $SENTINEL_MASTER on 127.0.0.1:$(sn_master), sentinels 127.0.0.1:${SENTINEL_PORTS[0]}-${SENTINEL_PORTS[2]}"
    return 0
  fi
  local existed=1
  for port in "${SENTINEL_PORTS[@]}"; do
    [ -f "$(sn_dir "$port")/sentinel.conf" ] || existed=
    pong "$port" || sn_launch_sentinel "$port"
  done
  local primary=""
  if [ -n "$existed" ]; then
    local i
    for ((i = 0; i < 20; i++)); do
      primary=$(sn_master)
      [ -n "$primary" ] && break
      sleep 0.25
    done
  fi
  for port in "${SENTINEL_DATA_PORTS[@]}"; do
    [ -f "$(sn_dir "$port")/redis.conf" ] || existed=
    pong "$port" || sn_launch_data "$port" "$primary"
  done
  if [ -n "$existed" ] && sn_wait 20; then
    log "sentinel healthy again in $((SECONDS - t0))s (was: $why)"
    return 0
  fi
  [ -n "$existed" ] && log "sentinel unhealthy ($(sn_health)): creating it anew"
  sn_stop
  rm -rf "$base/sentinel"
  for port in "${SENTINEL_DATA_PORTS[@]}"; do sn_launch_data "$port"; done
  for port in "${SENTINEL_PORTS[@]}"; do sn_launch_sentinel "$port"; done
  sn_wait 30 || die "sentinel not healthy after creation: $(sn_health)"
  log "sentinel created in $((SECONDS - t0))s: master $SENTINEL_MASTER on 127.0.0.1:${SENTINEL_DATA_PORTS[0]}, sentinels 127.0.0.1:${SENTINEL_PORTS[0]}-${SENTINEL_PORTS[2]}"
}

sn_stop() {
  local port
  for port in "${SENTINEL_PORTS[@]}"; do stop_redis "$port" "$(sn_dir "$port")/sentinel.conf"; done
  for port in "${SENTINEL_DATA_PORTS[@]}"; do stop_redis "$port" "$(sn_dir "$port")/redis.conf"; done
}

# --------------------------------------------------------------------- RabbitMQ

need_rabbit() {
  command -v rabbitmq-server >/dev/null && command -v rabbitmqctl >/dev/null ||
    die "rabbitmq-server and rabbitmqctl are needed (Debian: apt-get install rabbitmq-server)"
  if ! is_root && [ "$(id -un)" != rabbitmq ] && [ -e /usr/lib/rabbitmq/bin/rabbitmq-script-wrapper ]; then
    die "the Debian RabbitMQ scripts run only as root or rabbitmq: run clusters.sh as root"
  fi
}

rq_dir() { echo "$base/rabbitmq/${RABBIT_NODES[$1]%%@*}"; }
ctl() { # index args...: rabbitmqctl against node index, 60 s at most
  local n=${RABBIT_NODES[$1]}
  shift
  timeout 60 rabbitmqctl -n "$n" -q "$@" 9>&- # it may start epmd, which must not hold the lock
}
rq_alive() { ctl "$1" ping >/dev/null 2>&1; }
# rq_running INDEX: the nodes node INDEX reports as running, one per line.
rq_running() {
  ctl "$1" cluster_status --formatter json 2>/dev/null |
    grep -o '"running_nodes":\[[^]]*\]' | grep -o '"[^"]*@[^"]*"' | tr -d '"' | sort
}

rq_launch() { # index
  local i=$1 dir
  dir=$(rq_dir "$i")
  mkdir -p "$dir/mnesia" "$dir/log"
  [ -f "$dir/rabbitmq.conf" ] || cat >"$dir/rabbitmq.conf" <<EOF
listeners.tcp.1 = 127.0.0.1:${RABBIT_AMQP_PORTS[$i]}
EOF
  echo '[].' >"$dir/enabled_plugins"
  echo 'ERL_EPMD_ADDRESS=127.0.0.1' >"$dir/rabbitmq-env.conf"
  own rabbitmq "$dir"
  # The Debian wrapper switches to the rabbitmq user and keeps the
  # environment; the node's own env file replaces /etc/rabbitmq's, which names
  # the default node.
  (
    cd "$dir"
    export RABBITMQ_NODENAME=${RABBIT_NODES[$i]} RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
      RABBITMQ_NODE_PORT=${RABBIT_AMQP_PORTS[$i]} RABBITMQ_DIST_PORT=${RABBIT_DIST_PORTS[$i]} \
      RABBITMQ_MNESIA_BASE=$dir/mnesia RABBITMQ_LOG_BASE=$dir/log RABBITMQ_PID_FILE=$dir/rabbitmq.pid \
      RABBITMQ_CONFIG_FILE=$dir/rabbitmq.conf RABBITMQ_ADVANCED_CONFIG_FILE=$dir/advanced.config \
      RABBITMQ_ENABLED_PLUGINS_FILE=$dir/enabled_plugins RABBITMQ_CONF_ENV_FILE=$dir/rabbitmq-env.conf \
      RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS='-kernel inet_dist_use_interface {127,0,0,1}'
    rabbitmq-server -detached >"$dir/log/detached.out" 2>&1 9>&-
  )
}

rq_await() { # index seconds: wait until the node's app runs
  local i
  for ((i = 0; i < $2; i++)); do
    ctl "$1" await_startup --timeout 5 >/dev/null 2>&1 && return 0
    sleep 1
  done
  return 1
}

rq_join() { # index reset: node index joins the first node's cluster; a node
  # with data of its own (reset non-empty) forgets it first.
  local i=$1
  {
    ctl "$i" stop_app &&
      { [ -z "$2" ] || ctl "$i" reset; } &&
      ctl "$i" join_cluster "${RABBIT_NODES[0]}" &&
      ctl "$i" start_app
  } >>"$(rq_dir "$i")/log/join.log" 2>&1
}

rq_health() {
  local i want got
  want=$(printf '%s\n' "${RABBIT_NODES[@]}" | sort)
  for i in 0 1 2; do
    timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' probe "${RABBIT_AMQP_PORTS[$i]}" 2>/dev/null ||
      { echo "127.0.0.1:${RABBIT_AMQP_PORTS[$i]} does not accept connections"; return; }
  done
  # One node's view is the cluster's: a node that is down or whose app is
  # stopped is missing from its running nodes.
  got=$(rq_running 0)
  [ "$got" = "$want" ] || echo "${RABBIT_NODES[0]} sees running: $(tr '\n' ' ' <<<"$got")"
}

rq_start() {
  need_rabbit
  local why i t0=$SECONDS
  why=$(rq_health)
  if [ -z "$why" ]; then
    log "rabbitmq cluster healthy: ${RABBIT_NODES[*]} on 127.0.0.1:${RABBIT_AMQP_PORTS[0]}-${RABBIT_AMQP_PORTS[2]}"
    return 0
  fi
  local existed=1
  for i in 0 1 2; do
    [ -d "$(rq_dir "$i")/mnesia/${RABBIT_NODES[$i]}" ] || existed=
  done
  # Start every node that is down at once: restarted cluster members wait
  # for each other.
  for i in 0 1 2; do
    rq_alive "$i" || rq_launch "$i"
  done
  if [ -n "$existed" ]; then
    for i in 0 1 2; do
      if rq_alive "$i" && ! grep -qx "${RABBIT_NODES[$i]}" <<<"$(rq_running "$i")"; then
        ctl "$i" start_app >/dev/null 2>&1 || true # left stopped by stop_app
      fi
    done
  fi
  local ok=1 t1
  for i in 0 1 2; do rq_await "$i" 120 || ok=; done
  t1=$((SECONDS - t0))
  if [ -n "$ok" ] && [ -n "$existed" ] && [ -z "$(rq_health)" ]; then
    log "rabbitmq cluster healthy again in $((SECONDS - t0))s (was: $why)"
    return 0
  fi
  if [ -n "$ok" ]; then
    # Fresh nodes, or nodes that forgot the cluster: (re)join uf2 and uf3.
    local joined=1
    for i in 1 2; do
      if [ -n "$existed" ]; then
        grep -qx "${RABBIT_NODES[0]}" <<<"$(rq_running "$i")" && continue
      fi
      rq_join "$i" "$existed" || joined=
    done
    if [ -n "$joined" ] && [ -z "$(rq_health)" ]; then
      log "rabbitmq cluster formed in $((SECONDS - t0))s (nodes up after ${t1}s): ${RABBIT_NODES[*]} on 127.0.0.1:${RABBIT_AMQP_PORTS[0]}-${RABBIT_AMQP_PORTS[2]}"
      return 0
    fi
  fi
  log "rabbitmq cluster unhealthy ($(rq_health)): creating it anew"
  rq_stop
  rm -rf "$base/rabbitmq"
  for i in 0 1 2; do rq_launch "$i"; done
  for i in 0 1 2; do rq_await "$i" 120 || die "${RABBIT_NODES[$i]} did not start; see $(rq_dir "$i")/log"; done
  for i in 1 2; do
    rq_join "$i" "" || die "${RABBIT_NODES[$i]} could not join; see $(rq_dir "$i")/log/join.log"
  done
  [ -z "$(rq_health)" ] || die "rabbitmq cluster not healthy after creation: $(rq_health)"
  log "rabbitmq cluster created in $((SECONDS - t0))s: ${RABBIT_NODES[*]} on 127.0.0.1:${RABBIT_AMQP_PORTS[0]}-${RABBIT_AMQP_PORTS[2]}"
}

rq_stop() {
  local i
  for i in 2 1 0; do
    rq_alive "$i" && { ctl "$i" stop >/dev/null 2>&1 || true; }
  done
  return 0
}

# ------------------------------------------------------------------------ main

usage() { die "usage: clusters.sh start|stop|status [redis-cluster|sentinel|rabbitmq]..."; }
[ $# -ge 1 ] || usage
action=$1
shift
setups=("$@")
[ ${#setups[@]} -gt 0 ] || setups=(redis-cluster sentinel rabbitmq)
for s in "${setups[@]}"; do
  case $s in redis-cluster | sentinel | rabbitmq) ;; *) usage ;; esac
done
case $action in start | stop | status) ;; *) usage ;; esac

# The directory holds configuration the servers run with: it must not be
# writable by others.
if [ "$action" != status ]; then
  mkdir -p "$base"
  chmod 755 "$base"
  [ -O "$base" ] || die "$base is not owned by $(id -un)"
  # One run at a time; a second one waits (then finds everything healthy).
  # Servers are started with fd 9 closed: a daemon keeping it would hold the
  # lock for its whole life.
  exec 9>"$base/.lock"
  flock -w 900 9 || die "another clusters.sh run holds $base/.lock"
fi

rc=0
for s in "${setups[@]}"; do
  case $action:$s in
    start:redis-cluster) rc_start ;;
    start:sentinel) sn_start ;;
    start:rabbitmq) rq_start ;;
    stop:redis-cluster) rc_stop ;;
    stop:sentinel) sn_stop ;;
    stop:rabbitmq) rq_stop ;;
    status:*)
      case $s in redis-cluster) why=$(rc_health) ;; sentinel) why=$(sn_health) ;; rabbitmq) why=$(rq_health) ;; esac
      if [ -z "$why" ]; then echo "$s healthy"; else echo "$s unhealthy: $why"; rc=1; fi
      ;;
  esac
done
exit $rc
