#!/bin/sh
# servers.sh start|stop DIR - the PostgreSQL cluster shared by one ctest run.
#
# start: initdb (once) and start PostgreSQL with its data in DIR/data, TCP off,
#        its unix socket in DIR; write DIR/env (PGHOST, PGPORT, PGUSER,
#        PGDATABASE) for tests/support/ts_testenv.c. Idempotent: a cluster that
#        already runs in DIR is kept. As root, PostgreSQL runs as user postgres.
# stop:  stop that cluster by its PID (pg_ctl stop -m fast) and remove DIR.
# Redis is not started here: each test starts its own redis-server.
set -eu

usage() { echo "usage: $0 start|stop DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
cmd=$1
dir=$2
case "$dir" in /*) ;; *) dir="$(pwd)/$dir" ;; esac

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4 -n | tail -n 1)
[ -n "$bindir" ] && [ -x "$bindir/postgres" ] || { echo "no PostgreSQL found" >&2; exit 1; }

if [ "$(id -u)" -eq 0 ]; then
    pguser=postgres
    as_pg() { runuser -u postgres -- "$@"; }
else
    pguser=$(id -un)
    as_pg() { "$@"; }
fi

case "$cmd" in
start)
    mkdir -p "$dir"
    if [ -f "$dir/env" ] && as_pg "$bindir/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
        echo "PostgreSQL already running in $dir"
        exit 0
    fi
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres: "$dir"
        # The postgres user must be able to reach DIR through its parents.
        p=$(dirname "$dir")
        while [ "$p" != "/" ]; do
            if ! runuser -u postgres -- test -x "$p"; then
                echo "user postgres cannot reach $p (needs o+x)" >&2
                exit 1
            fi
            p=$(dirname "$p")
        done
    fi
    chmod 700 "$dir"
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        as_pg "$bindir/initdb" -D "$dir/data" --username="$pguser" --auth=trust \
            --no-sync --encoding=UTF8 --locale=C >"$dir/initdb.log" 2>&1 ||
            { cat "$dir/initdb.log" >&2; exit 1; }
    fi
    as_pg "$bindir/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
        -o "-c listen_addresses='' -c unix_socket_directories='$dir' -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
        start >/dev/null || { cat "$dir/postgres.log" >&2; exit 1; }
    cat >"$dir/env.tmp" <<ENV
PGHOST=$dir
PGPORT=5432
PGUSER=$pguser
PGDATABASE=postgres
ENV
    mv "$dir/env.tmp" "$dir/env"
    echo "PostgreSQL running in $dir (pid $(head -n 1 "$dir/data/postmaster.pid"))"
    ;;
stop)
    if [ -f "$dir/data/postmaster.pid" ]; then
        as_pg "$bindir/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null 2>&1 || {
            pid=$(head -n 1 "$dir/data/postmaster.pid" 2>/dev/null || true)
            [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null || true
        }
    fi
    rm -rf "$dir"
    ;;
*) usage ;;
esac
