#!/bin/sh
# Starts one Redis Cluster node: writes the password file that redis.conf includes, brings
# the node's own address in nodes.conf up to date, starts a background loop that finds the
# other nodes again, then replaces itself with redis-server.
#
# Why the address work: nodes.conf records the IP every node had when it was last written,
# and pods get new IPs when they are recreated. One recreated node is found again through
# the cluster bus (it still knows the others' addresses and pings them). When every node
# is recreated at once (a cluster restart, a node pool replaced), every recorded address
# is stale, nobody can reach anybody, and the cluster would stay down. So, when this node
# already belongs to a cluster:
#   1. before Redis reads nodes.conf, the `myself` entry gets the pod's current IP (what
#      CLUSTER NODES / CLUSTER SLOTS report to clients until gossip corrects it);
#   2. once Redis answers, every node of REDIS_NODES is resolved through DNS (the headless
#      Service's per-pod names) and sent a CLUSTER MEET with its current IP, client port
#      and cluster bus port. Meeting a node ID it already knows at a new address makes
#      Redis update that node's address, and the met node then learns ours from our pings.
#      Repeated every REDIS_MEET_INTERVAL_S until this node reports cluster_state:ok (at
#      most REDIS_MEET_TIMEOUT_S). A new, empty node never meets anyone: forming the
#      cluster is the init Job's work (redis-cluster-init.sh).
#
# Environment: REDIS_PORT, REDIS_BUS_PORT, REDIS_NODE_TIMEOUT_MS, REDIS_APPENDFSYNC,
# REDIS_MAXMEMORY (server options); REDIS_PASSWORD (the Secret); REDIS_POD_IP (downward
# API status.podIP; default `hostname -i`); REDIS_NODES (space-separated host:port of every
# node, this one included).
set -eu
conf="${REDIS_CONF:-/etc/redis/redis.conf}"
auth="${REDIS_AUTH_FILE:-/run/redis/auth.conf}"  # the path redis.conf includes
interval="${REDIS_MEET_INTERVAL_S:-3}"
timeout="${REDIS_MEET_TIMEOUT_S:-1800}"
umask 077
mkdir -p "$(dirname "$auth")"
if [ -n "${REDIS_PASSWORD:-}" ]; then
  printf 'requirepass "%s"\nmasterauth "%s"\n' "$REDIS_PASSWORD" "$REDIS_PASSWORD" > "$auth"
  export REDISCLI_AUTH="$REDIS_PASSWORD"
else
  : > "$auth"
fi

log() { echo "redis-start: $*"; }

self_ip="${REDIS_POD_IP:-$(hostname -i 2>/dev/null | awk '{print $1}')}"
nodes_conf="$(awk '$1 == "cluster-config-file" {print $2}' "$conf")"
case "$nodes_conf" in
  /*) ;;
  *) nodes_conf="$(awk '$1 == "dir" {print $2}' "$conf")/${nodes_conf:-nodes.conf}" ;;
esac

# Node lines of nodes.conf (the last line is `vars ...`): more than one means this node
# has been part of a cluster.
known_nodes=0
if [ -s "$nodes_conf" ]; then
  known_nodes="$(awk '$1 != "vars" && NF >= 8' "$nodes_conf" | wc -l)"
fi

# 1. Our own entry: <id> <ip>:<port>@<cport>[,<hostname>...] <flags incl. myself> ...
#    The port is what follows the last colon (an IPv6 address has colons of its own).
if [ "$known_nodes" -gt 0 ] && [ -n "$self_ip" ]; then
  awk -v ip="$self_ip" '
    $3 ~ /(^|,)myself(,|$)/ && index($2, "@") > 0 {
      at = index($2, "@")
      port = substr($2, 1, at - 1)
      sub(/.*:/, "", port)
      $2 = ip ":" port substr($2, at)
    }
    { print }
  ' "$nodes_conf" > "$nodes_conf.new"
  mv "$nodes_conf.new" "$nodes_conf"
  log "own address in nodes.conf set to $self_ip"
fi

# 2. Meet every peer at its current address until the cluster is whole again.
local_cli() { redis-cli -h "${self_ip:-127.0.0.1}" -p "$REDIS_PORT" "$@"; }
cluster_state() {
  local_cli cluster info 2>/dev/null | tr -d '\r' | awk -F: '$1 == "cluster_state" {print $2}'
}
resolve() {
  case "$1" in
    *[!0-9.]*) getent hosts "$1" | awk 'NR == 1 {print $1}' ;;
    *) echo "$1" ;;
  esac
}
meet_peers() {
  redis_pid="$1"
  deadline=$(( $(date +%s) + timeout ))
  until [ "$(local_cli ping 2>/dev/null)" = "PONG" ]; do
    kill -0 "$redis_pid" 2>/dev/null || return 0
    [ "$(date +%s)" -lt "$deadline" ] || return 0
    sleep 1
  done
  while kill -0 "$redis_pid" 2>/dev/null; do
    met=""
    for node in ${REDIS_NODES:-}; do
      ip="$(resolve "${node%:*}")" || ip=""
      if [ -n "$ip" ] && [ "$ip" != "$self_ip" ] \
        && local_cli cluster meet "$ip" "${node##*:}" "$REDIS_BUS_PORT" >/dev/null 2>&1; then
        met="$met $ip"
      fi
    done
    sleep "$interval"
    if [ "$(cluster_state)" = "ok" ]; then
      log "cluster_state:ok (met:$met)"
      return 0
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      log "cluster_state not ok after ${timeout}s; giving up meeting peers"
      return 0
    fi
  done
}
if [ "$known_nodes" -gt 1 ] && [ -n "${REDIS_NODES:-}" ]; then
  # After the exec below this shell's PID is redis-server's: the loop stops with it.
  meet_peers "$$" &
fi

exec redis-server "$conf" \
  --port "$REDIS_PORT" --cluster-port "$REDIS_BUS_PORT" \
  --cluster-node-timeout "$REDIS_NODE_TIMEOUT_MS" --appendfsync "$REDIS_APPENDFSYNC" \
  --maxmemory "$REDIS_MAXMEMORY" "$@"
