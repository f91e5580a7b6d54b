#!/bin/sh
# moat's MariaDB sidecar, run as the mysql user. The data directory is made
# on the first start (a persisted one is kept); every start sets the run's
# account, password and database from an init file the server reads before
# it accepts connections.
set -eu
data=/var/lib/moat/service/data
init=/tmp/moat-init.sql
if [ ! -d "$data/mysql" ]; then
    mariadb-install-db --datadir="$data" --auth-root-authentication-method=socket \
        --skip-test-db >/dev/null
fi
umask 077
cat >"$init" <<SQL
CREATE DATABASE IF NOT EXISTS \`$MOAT_SERVICE_DB\`;
CREATE USER IF NOT EXISTS '$MOAT_SERVICE_USER'@'%' IDENTIFIED BY '$MOAT_SERVICE_PASSWORD';
ALTER USER '$MOAT_SERVICE_USER'@'%' IDENTIFIED BY '$MOAT_SERVICE_PASSWORD';
GRANT ALL PRIVILEGES ON \`$MOAT_SERVICE_DB\`.* TO '$MOAT_SERVICE_USER'@'%';
SQL
exec mariadbd --datadir="$data" --init-file="$init" --bind-address=0.0.0.0 \
    --port="$MOAT_SERVICE_PORT" --socket=/tmp/mysqld.sock --pid-file=/tmp/mariadbd.pid --skip-name-resolve
