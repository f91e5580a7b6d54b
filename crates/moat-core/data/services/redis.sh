#!/bin/sh
# moat's Redis sidecar, run as the redis user: the run's password, every
# address, data (an append-only file) in moat's data directory.
set -eu
config=/tmp/redis.conf
umask 077
cat >"$config" <<CONF
bind * -::*
port $MOAT_SERVICE_PORT
protected-mode no
requirepass $MOAT_SERVICE_PASSWORD
dir /var/lib/moat/service/data
appendonly yes
daemonize no
CONF
exec redis-server "$config"
