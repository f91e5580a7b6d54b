#!/bin/sh
# moat's PostgreSQL sidecar, run as the postgres user. The data directory is
# made on the first start (a persisted one is kept); every start sets the
# run's password and makes the run's database, through a server that listens
# on a Unix socket only, then the real server listens on every address.
set -eu
bin=/usr/lib/postgresql/15/bin
data=/var/lib/moat/service/data
socket=/tmp
if [ ! -s "$data/PG_VERSION" ]; then
    "$bin/initdb" --pgdata="$data" --username=postgres --auth-local=trust \
        --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >/dev/null
    printf 'host all all 0.0.0.0/0 scram-sha-256\nhost all all ::/0 scram-sha-256\n' >>"$data/pg_hba.conf"
fi
"$bin/pg_ctl" --pgdata="$data" --wait --silent \
    -o "-c listen_addresses='' -c unix_socket_directories=$socket" start
psql -v ON_ERROR_STOP=1 -q -h "$socket" -U postgres -d postgres \
    -v user="$MOAT_SERVICE_USER" -v password="$MOAT_SERVICE_PASSWORD" -v db="$MOAT_SERVICE_DB" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN', :'user') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'user') \gexec
ALTER ROLE :"user" WITH LOGIN PASSWORD :'password';
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'user') WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \gexec
SQL
"$bin/pg_ctl" --pgdata="$data" --wait --silent --mode=fast stop
exec "$bin/postgres" -D "$data" -c listen_addresses='*' -c "unix_socket_directories=$socket" -p "$MOAT_SERVICE_PORT"
