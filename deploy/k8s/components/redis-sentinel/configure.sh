#!/bin/sh
# Writes redis.conf and sentinel.conf for this pod (redis-N) into /conf. The master is whoever
# the Sentinels already follow; with no Sentinel answering (a new set), redis-0.
set -eu
conf=${CONF_DIR:-/conf}
pod=$(hostname) # redis-N: a StatefulSet pod's hostname is its name
self="$pod.redis-headless"
master=""
for peer in redis-0 redis-1 redis-2; do
  [ "$peer" = "$pod" ] && continue
  answer=$(redis-cli -h "$peer.redis-headless" -p 26379 --raw \
    SENTINEL get-master-addr-by-name mymaster 2>/dev/null | head -n 1 || true)
  if [ -n "$answer" ]; then master=$answer; break; fi
done
[ -n "$master" ] || master=redis-0.redis-headless
umask 077
{
  echo "requirepass $REDIS_PASSWORD"
  echo "masterauth $REDIS_PASSWORD"
  echo "replica-announce-ip $self"
  echo "appendonly yes"
  echo 'save ""'
  echo "dir /data"
  if [ "$master" != "$self" ]; then echo "replicaof $master 6379"; fi
} > "$conf/redis.conf"
{
  echo "port 26379"
  echo "dir /tmp"
  echo "sentinel resolve-hostnames yes"
  echo "sentinel announce-hostnames yes"
  echo "sentinel announce-ip $self"
  echo "sentinel monitor mymaster $master 6379 2"
  echo "sentinel auth-pass mymaster $REDIS_PASSWORD"
  echo "sentinel down-after-milliseconds mymaster 5000"
  echo "sentinel failover-timeout mymaster 60000"
  echo "sentinel parallel-syncs mymaster 1"
} > "$conf/sentinel.conf"
echo "redis: $pod follows $master"
