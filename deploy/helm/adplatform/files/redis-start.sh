#!/bin/sh
# Starts one Redis Cluster node: writes the password file that redis.conf includes,
# then replaces itself with redis-server. REDIS_PASSWORD comes from the Secret.
set -eu
umask 077
mkdir -p /run/redis
if [ -n "${REDIS_PASSWORD:-}" ]; then
  printf 'requirepass "%s"\nmasterauth "%s"\n' "$REDIS_PASSWORD" "$REDIS_PASSWORD" > /run/redis/auth.conf
else
  : > /run/redis/auth.conf
fi
exec redis-server /etc/redis/redis.conf \
  --port "$REDIS_PORT" --cluster-port "$REDIS_BUS_PORT" \
  --cluster-node-timeout "$REDIS_NODE_TIMEOUT_MS" --appendfsync "$REDIS_APPENDFSYNC" \
  --maxmemory "$REDIS_MAXMEMORY" "$@"
