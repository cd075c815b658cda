#!/bin/sh
# Forms the Redis Cluster once all nodes answer, and keeps it whole on later runs:
#   - every node empty (fresh install): create the cluster, REDIS_REPLICAS replicas per master;
#   - cluster formed and every node in it: nothing to do (upgrades re-run this Job);
#   - cluster formed, some nodes alone (a node lost its volume): add them as replicas.
# Then `redis-cli --cluster check` must pass. REDIS_NODES is a space-separated list of
# host:port (the StatefulSet pods' stable DNS names); REDISCLI_AUTH the password.
set -eu
: "${REDIS_NODES:?space-separated host:port list}"
REDIS_REPLICAS="${REDIS_REPLICAS:-1}"
WAIT_SECONDS="${WAIT_SECONDS:-600}"

# host:port -> ip:port (cluster meet needs addresses; names are re-resolved each run).
resolve() {
  host="${1%:*}" port="${1##*:}"
  case "$host" in
    *[!0-9.]*) ip="$(getent hosts "$host" | awk 'NR == 1 {print $1}')" ;;
    *) ip="$host" ;;
  esac
  [ -n "$ip" ] || return 1
  echo "$ip:$port"
}
cli() { addr="$1"; shift; redis-cli -h "${addr%:*}" -p "${addr##*:}" "$@"; }
info_field() { cli "$1" cluster info | tr -d '\r' | awk -F: -v k="$2" '$1 == k {print $2}'; }

deadline=$(( $(date +%s) + WAIT_SECONDS ))
addresses=""
for node in $REDIS_NODES; do
  until addr="$(resolve "$node")" && [ "$(cli "$addr" ping 2>/dev/null)" = "PONG" ]; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "redis-cluster-init: $node did not answer within ${WAIT_SECONDS}s" >&2
      exit 1
    fi
    sleep 2
  done
  addresses="$addresses $addr"
done
total=$(echo "$addresses" | wc -w)
first=$(echo "$addresses" | awk '{print $1}')

alone=""
formed=""
for addr in $addresses; do
  known="$(info_field "$addr" cluster_known_nodes)"
  slots="$(info_field "$addr" cluster_slots_assigned)"
  if [ "$known" -le 1 ] && [ "$slots" -eq 0 ]; then
    alone="$alone $addr"
  else
    formed="$addr"
  fi
done

if [ -z "$formed" ]; then
  echo "redis-cluster-init: creating a cluster of $total nodes, $REDIS_REPLICAS replica(s) per master"
  # shellcheck disable=SC2086  # one argument per address
  redis-cli --cluster create $addresses --cluster-replicas "$REDIS_REPLICAS" --cluster-yes
else
  for addr in $alone; do
    echo "redis-cluster-init: $addr is not in the cluster; adding it as a replica"
    # The identity that node had before its data was lost is gone for good: the others
    # list it as `noaddr` without slots. Forget it everywhere, or the cluster keeps
    # counting a dead node.
    stale="$(cli "$formed" cluster nodes | tr -d '\r' | awk '$3 ~ /noaddr/ && NF <= 8 {print $1}')"
    redis-cli --cluster add-node "$addr" "$formed" --cluster-slave
    for id in $stale; do
      for node in $addresses; do
        cli "$node" cluster forget "$id" >/dev/null 2>&1 || true
      done
    done
  done
fi

# Wait for the cluster to agree (gossip takes a few node timeouts), then verify it.
until [ "$(info_field "$first" cluster_state 2>/dev/null || true)" = "ok" ] \
  && [ "$(info_field "$first" cluster_known_nodes)" -eq "$total" ]; do
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "redis-cluster-init: cluster not ok within ${WAIT_SECONDS}s" >&2
    cli "$first" cluster info >&2 || true
    exit 1
  fi
  sleep 1
done
redis-cli --cluster check "$first"
echo "redis-cluster-init: cluster ok with $total nodes"
