#!/bin/sh
# Starts one Redis Cluster node: writes the password file that redis.conf includes,
# then replaces itself with redis-server. REDIS_PASSWORD comes from the Secret.
set -eu
conf="${REDIS_CONF:-/etc/redis/redis.conf}"
auth="${REDIS_AUTH_FILE:-/run/redis/auth.conf}"  # the path redis.conf includes
umask 077
mkdir -p "$(dirname "$auth")"
if [ -n "${REDIS_PASSWORD:-}" ]; then
  printf 'requirepass "%s"\nmasterauth "%s"\n' "$REDIS_PASSWORD" "$REDIS_PASSWORD" > "$auth"
else
  : > "$auth"
fi
exec redis-server "$conf" \
  --port "$REDIS_PORT" --cluster-port "$REDIS_BUS_PORT" \
  --cluster-node-timeout "$REDIS_NODE_TIMEOUT_MS" --appendfsync "$REDIS_APPENDFSYNC" \
  --maxmemory "$REDIS_MAXMEMORY" "$@"
