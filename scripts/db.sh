#!/usr/bin/env bash
# db.sh: the PostgreSQL server that recalc's tests, conformance cases and demo use.
#
#   scripts/db.sh url            print DATABASE_URL when it is set; otherwise make sure the
#                                throwaway cluster in .pg/ runs and print its URL
#   scripts/db.sh stop           stop the throwaway cluster (no-op when it is not running)
#   scripts/db.sh status         say whether the throwaway cluster runs (exit 0 when it does)
#   scripts/db.sh destroy        stop the throwaway cluster and delete its files
#   scripts/db.sh createdb NAME  create database NAME on the server of `url` unless it exists;
#                                print a connection string for it
#   scripts/db.sh dropdb NAME    drop database NAME if it exists (closing its connections)
#                                (both connect to the database postgres when `url` names NAME)
#   scripts/db.sh pgenv [URL]    print `export PGHOST=… PGPORT=… PGUSER=…` for a URL-form
#                                connection string (default: `url`), for libpq tools
#   scripts/db.sh psql [ARGS]    run psql against the server of `url`
#
# The throwaway cluster: data in .pg/data, unix socket in .pg/run, logs in .pg/log, listening
# on 127.0.0.1 only, port 54329 (RECALC_PG_PORT overrides; when that port is taken by another
# server, the next free one is used), trust auth, user postgres, and durability switched off
# (fsync, synchronous_commit, full_page_writes): it is for tests, never for data you keep.
# It allows a few prepared transactions (PostgreSQL allows none by default), for the test of
# writes committed in two phases (TestTwoPhaseCommitWrites, skipped where none is allowed).
# initdb and pg_ctl refuse to run as root, so as root they run as the system user recalcpg.
# When that user cannot reach the project folder (or the socket path would be too long),
# the cluster lives in a mktemp folder under /tmp, recorded in .pg/location.
#
# Only connection strings go to stdout; every diagnostic goes to stderr.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
pgdir=$root/.pg
pguser=recalcpg
want_port=${RECALC_PG_PORT:-54329}

log() { printf 'db.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
is_root() { [ "$(id -u)" = 0 ]; }

# ---------------------------------------------------------------- PostgreSQL binaries

# bindir prints the folder holding initdb, pg_ctl and postgres, or fails.
bindir() {
  local d=""
  if command -v pg_config >/dev/null 2>&1; then
    d=$(pg_config --bindir 2>/dev/null || true)
    if [ -n "$d" ] && [ -x "$d/initdb" ]; then echo "$d"; return 0; fi
  fi
  d=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  if [ -x "$d/initdb" ]; then echo "$d"; return 0; fi
  if d=$(command -v initdb 2>/dev/null); then dirname "$d"; return 0; fi
  return 1
}

# need_bindir sets $bin, installing PostgreSQL from Debian's packages when root and needed.
need_bindir() {
  if bin=$(bindir); then return 0; fi
  if ! is_root; then
    die "no PostgreSQL server binaries (initdb, pg_ctl, postgres) found; install them, e.g. 'sudo apt-get install postgresql', or set DATABASE_URL to a server you have"
  fi
  command -v apt-get >/dev/null 2>&1 || die "no PostgreSQL server binaries found and no apt-get to install them; install PostgreSQL or set DATABASE_URL"
  log "no PostgreSQL binaries found: installing Debian's postgresql package"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q postgresql </dev/null >&2; then
    apt-get update -q </dev/null >&2
    apt-get install -y -q postgresql </dev/null >&2
  fi
  bin=$(bindir) || die "installed postgresql but still found no initdb"
}

# psql_bin prints a psql to use.
psql_bin() {
  if command -v psql >/dev/null 2>&1; then command -v psql; return 0; fi
  local b
  if b=$(bindir) && [ -x "$b/psql" ]; then echo "$b/psql"; return 0; fi
  need_bindir
  [ -x "$bin/psql" ] || die "no psql found; install postgresql-client"
  echo "$bin/psql"
}

# ---------------------------------------------------------------- the throwaway cluster

# cluster_home prints the folder that holds data/, run/ and log/ (it may not exist yet).
cluster_home() {
  if [ -f "$pgdir/location" ]; then cat "$pgdir/location"; else echo "$pgdir"; fi
}

# as_pg runs a command as the cluster's owner, from /, so that a cwd it cannot read is harmless.
# It closes fd 9, the lock of cmd_url: a server started with it open would hold the lock for
# as long as it runs, and every other caller would wait for it forever.
as_pg() {
  if is_root; then
    (cd / && runuser -u "$pguser" -- "$@" 9>&-)
  else
    (cd / && "$@" 9>&-)
  fi
}

ensure_user() {
  is_root || return 0
  id -u "$pguser" >/dev/null 2>&1 && return 0
  command -v runuser >/dev/null 2>&1 || die "runuser (util-linux) is needed to run initdb and pg_ctl as a non-root user"
  log "creating system user $pguser to own the throwaway cluster"
  useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$pguser" \
    || id -u "$pguser" >/dev/null 2>&1 || die "useradd $pguser failed"
}

# usable_home reports whether $1 can hold the cluster: the cluster's owner can reach it and
# the socket path fits the 107-byte limit of unix socket names.
usable_home() {
  local home=$1
  [ ${#home} -le 80 ] || return 1
  if is_root; then as_pg test -x "$home" -a -w "$home" 2>/dev/null; else [ -x "$home" ] && [ -w "$home" ]; fi
}

# prepare_home creates the cluster folders (picking /tmp when the project folder will not do)
# and prints the cluster home.
prepare_home() {
  local home
  home=$(cluster_home)
  if [ "$home" != "$pgdir" ] && [ ! -d "$home/data" ]; then
    log "recorded cluster folder $home is gone; making a new one"
    rm -f "$pgdir/location"
    home=$pgdir
  fi
  if [ "$home" = "$pgdir" ]; then
    if is_root; then chown "$pguser:" "$pgdir"; chmod 755 "$pgdir"; fi
    if ! usable_home "$pgdir"; then
      home=$(mktemp -d /tmp/recalc-pg.XXXXXX)
      chmod 755 "$home"
      if is_root; then chown "$pguser:" "$home"; fi
      echo "$home" >"$pgdir/location"
      log "$pgdir is not reachable by $(is_root && echo "user $pguser" || echo you) or its path is too long; the cluster lives in $home (recorded in .pg/location)"
    fi
  fi
  mkdir -p "$home/data" "$home/run" "$home/log"
  chmod 700 "$home/data"
  if is_root; then chown -R "$pguser:" "$home/data" "$home/run" "$home/log"; fi
  echo "$home"
}

# alive_port prints the port of the cluster in $1/data when its postmaster process is alive;
# ready_port also wants the postmaster to report that it accepts connections.
alive_port() {
  local data=$1/data lines pid
  [ -f "$data/postmaster.pid" ] || return 1
  mapfile -t lines <"$data/postmaster.pid" 2>/dev/null || return 1
  pid=${lines[0]:-}
  [ -n "$pid" ] && [ -n "${lines[3]:-}" ] && kill -0 "$pid" 2>/dev/null || return 1
  # A stale pid file whose pid now belongs to another process does not count.
  if [ -r "/proc/$pid/comm" ] && [[ $(cat "/proc/$pid/comm") != postgres* ]]; then return 1; fi
  echo "${lines[3]}"
}

ready_port() {
  local data=$1/data lines
  alive_port "$1" >/dev/null || return 1
  mapfile -t lines <"$data/postmaster.pid" 2>/dev/null || return 1
  [[ ${lines[7]:-} == ready* ]] || return 1
  echo "${lines[3]}"
}

port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

cluster_url() { echo "postgres://postgres@127.0.0.1:$1/postgres?sslmode=disable"; }

# wait_ready waits until the server at port $1 accepts connections (pg_ctl -w usually did).
wait_ready() {
  for _ in $(seq 1 100); do
    if "$bin/pg_isready" -q -h 127.0.0.1 -p "$1" -U postgres -d postgres 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  return 1
}

start_cluster() {
  need_bindir
  ensure_user
  local home data port major
  home=$(prepare_home)
  data=$home/data
  if [ ! -f "$data/PG_VERSION" ]; then
    log "creating a throwaway cluster in $data"
    if ! as_pg "$bin/initdb" -D "$data" -U postgres --auth=trust --encoding=UTF8 --locale=C --no-sync \
      >"$home/log/initdb.log" 2>&1; then
      cat "$home/log/initdb.log" >&2
      die "initdb failed (log above, also in $home/log/initdb.log)"
    fi
    cat >>"$data/postgresql.conf" <<EOF

# recalc throwaway test cluster (scripts/db.sh): never keep data here
listen_addresses = '127.0.0.1'
port = $want_port
unix_socket_directories = '$home/run'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
max_prepared_transactions = 10
EOF
  fi
  major=$("$bin/pg_ctl" --version | sed -E 's/.* ([0-9]+)(\.[0-9]+)*.*/\1/')
  if [ "$(cat "$data/PG_VERSION")" != "$major" ]; then
    die "the cluster in $data is PostgreSQL $(cat "$data/PG_VERSION") but the binaries in $bin are $major: run 'scripts/db.sh destroy' to start over"
  fi
  port=$want_port
  while port_taken "$port"; do
    port=$((port + 1))
    [ "$port" -le $((want_port + 50)) ] || die "ports $want_port to $port on 127.0.0.1 are all taken"
  done
  [ "$port" = "$want_port" ] || log "port $want_port is taken by another server; using $port"
  log "starting the throwaway cluster on 127.0.0.1:$port (log: $home/log/postgres.log)"
  if ! as_pg "$bin/pg_ctl" -D "$data" -l "$home/log/postgres.log" -o "-p $port" -w -t 60 start >/dev/null 2>"$home/log/pg_ctl.err"; then
    cat "$home/log/pg_ctl.err" >&2
    tail -n 20 "$home/log/postgres.log" >&2 2>/dev/null || true
    die "pg_ctl start failed"
  fi
  wait_ready "$port" || die "the cluster started but does not accept connections on 127.0.0.1:$port"
  cluster_url "$port"
}

cmd_url() {
  if [ -n "${DATABASE_URL:-}" ]; then echo "$DATABASE_URL"; return 0; fi
  local port
  # Fast path: already running, no lock and no binaries needed.
  if port=$(ready_port "$(cluster_home)"); then cluster_url "$port"; return 0; fi
  mkdir -p "$pgdir"
  exec 9>"$pgdir/lock"
  # Concurrent callers wait here while the first one starts the cluster.
  if command -v flock >/dev/null 2>&1; then flock 9; fi
  if port=$(alive_port "$(cluster_home)"); then
    need_bindir
    wait_ready "$port" || die "the throwaway cluster runs but does not accept connections on 127.0.0.1:$port"
    cluster_url "$port"
    return 0
  fi
  start_cluster
}

cmd_stop() {
  local home
  home=$(cluster_home)
  if ! alive_port "$home" >/dev/null; then log "the throwaway cluster is not running"; return 0; fi
  need_bindir
  log "stopping the throwaway cluster in $home/data"
  as_pg "$bin/pg_ctl" -D "$home/data" -m fast -w -t 60 stop >/dev/null
}

cmd_status() {
  local home port
  home=$(cluster_home)
  if port=$(alive_port "$home"); then
    log "the throwaway cluster in $home/data runs on 127.0.0.1:$port"
    return 0
  fi
  log "the throwaway cluster ($home/data) is not running"
  return 3
}

cmd_destroy() {
  local home
  home=$(cluster_home)
  cmd_stop
  if [ -d "$home" ] && [ "$home" != "$pgdir" ]; then rm -rf "$home"; fi
  rm -rf "$pgdir"
  log "removed the throwaway cluster"
}

# ---------------------------------------------------------------- databases

# with_db prints connection string $1 with its database replaced by $2. URL form keeps every
# query parameter except dbname; keyword form appends dbname=, which wins as the last keyword.
with_db() {
  local conn=$1 db=$2
  case $conn in
    postgres://* | postgresql://*)
      local scheme=${conn%%://*} rest=${conn#*://} query="" out="" kv
      if [[ $rest == *'?'* ]]; then query=${rest#*\?}; rest=${rest%%\?*}; fi
      local IFS='&'
      for kv in $query; do
        case $kv in dbname=* | "") ;; *) out+=${out:+&}$kv ;; esac
      done
      printf '%s://%s/%s%s\n' "$scheme" "${rest%%/*}" "$db" "${out:+?$out}"
      ;;
    *) printf '%s dbname=%s\n' "$conn" "$db" ;;
  esac
}

# url_db prints the database connection string $1 connects to, as libpq reads it. URL form:
# its path, or a dbname query parameter, which wins, percent-decoded; keyword form: its last
# dbname= (spaces around = and single quotes allowed). Naming none: PGDATABASE, else the user
# (the URL's or user=, else PGUSER, else the login name), as libpq defaults it.
url_db() {
  local conn=$1 db="" user="" kv
  case $conn in
    postgres://* | postgresql://*)
      local rest=${conn#*://} query=""
      if [[ $rest == *'?'* ]]; then query=${rest#*\?}; rest=${rest%%\?*}; fi
      [[ $rest == */* ]] && db=${rest#*/}
      if [[ ${rest%%/*} == *@* ]]; then user=${rest%%/*}; user=${user%@*}; user=${user%%:*}; fi
      local IFS='&'
      for kv in $query; do
        case $kv in dbname=*) db=${kv#dbname=} ;; user=*) user=${kv#user=} ;; esac
      done
      db=$(urldecode "$db") user=$(urldecode "$user")
      ;;
    *)
      for kv in $(sed -E 's/[[:space:]]*=[[:space:]]*/=/g' <<<"$conn"); do
        case $kv in dbname=*) db=${kv#dbname=} ;; user=*) user=${kv#user=} ;; esac
      done
      db=${db#\'} db=${db%\'} user=${user#\'} user=${user%\'}
      ;;
  esac
  printf '%s\n' "${db:-${PGDATABASE:-${user:-${PGUSER:-$(id -un)}}}}"
}

# admin_for prints the connection string to create or drop database $1 from: `url`, or the
# same server's database postgres when `url` names $1 itself, since no session can drop the
# database it is connected to, nor connect to one that does not exist yet.
admin_for() {
  local conn
  conn=$(cmd_url)
  if [ "$(url_db "$conn")" = "$1" ]; then with_db "$conn" postgres; else echo "$conn"; fi
}

check_name() {
  [[ ${1:-} =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "database name '${1:-}' must match [A-Za-z_][A-Za-z0-9_]*"
}

admin_psql() {
  "$psql" "$admin" -X -q -v ON_ERROR_STOP=1 "$@"
}

cmd_createdb() {
  check_name "${1:-}"
  local name=$1 admin psql err
  admin=$(admin_for "$name")
  psql=$(psql_bin)
  if [ "$(admin_psql -Atc "SELECT 1 FROM pg_database WHERE datname = '$name'")" != 1 ]; then
    # A concurrent creator may win the race; that is fine as long as the database exists.
    if ! err=$(admin_psql -c "CREATE DATABASE \"$name\"" 2>&1) &&
      [ "$(admin_psql -Atc "SELECT 1 FROM pg_database WHERE datname = '$name'")" != 1 ]; then
      die "could not create database $name: $err"
    fi
  fi
  with_db "$admin" "$name"
}

cmd_dropdb() {
  check_name "${1:-}"
  local name=$1 admin psql err
  admin=$(admin_for "$name")
  psql=$(psql_bin)
  err=$(PGOPTIONS="-c client_min_messages=warning" admin_psql -c "DROP DATABASE IF EXISTS \"$name\" WITH (FORCE)" 2>&1) ||
    die "could not drop database $name: $err"
}

# ---------------------------------------------------------------- libpq environment

urldecode() { local s=${1//+/ }; printf '%b' "${s//%/\\x}"; }

cmd_pgenv() {
  local conn=${1:-}
  [ -n "$conn" ] || conn=$(cmd_url)
  case $conn in
    postgres://* | postgresql://*) ;;
    *) die "pgenv needs a URL-form connection string (postgres://…), not a keyword string" ;;
  esac
  local rest=${conn#*://} query="" auth hostport user="" pass="" host="" port="" kv k v sslmode=""
  if [[ $rest == *'?'* ]]; then query=${rest#*\?}; rest=${rest%%\?*}; fi
  auth=${rest%%/*}
  if [[ $auth == *@* ]]; then
    local userinfo=${auth%@*}
    hostport=${auth##*@}
    user=${userinfo%%:*}
    [[ $userinfo == *:* ]] && pass=${userinfo#*:}
  else
    hostport=$auth
  fi
  if [[ $hostport == \[*\]* ]]; then # [ipv6]:port
    host=${hostport%%]*}; host=${host#[}
    [[ $hostport == *]:* ]] && port=${hostport##*]:}
  else
    host=${hostport%%:*}
    [[ $hostport == *:* ]] && port=${hostport#*:}
  fi
  local IFS='&'
  for kv in $query; do
    k=${kv%%=*}; v=${kv#*=}
    case $k in
      host) host=$v ;; port) port=$v ;; user) user=$v ;; password) pass=$v ;; sslmode) sslmode=$v ;;
    esac
  done
  unset IFS
  local name val
  for name in PGHOST PGPORT PGUSER PGPASSWORD PGSSLMODE; do
    case $name in
      PGHOST) val=$host ;; PGPORT) val=$port ;; PGUSER) val=$user ;; PGPASSWORD) val=$pass ;; PGSSLMODE) val=$sslmode ;;
    esac
    [ -n "$val" ] && printf 'export %s=%q\n' "$name" "$(urldecode "$val")"
  done
  return 0
}

# ---------------------------------------------------------------- main

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2
  exit 2
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case $cmd in
  url) cmd_url ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  destroy) cmd_destroy ;;
  createdb) cmd_createdb "$@" ;;
  dropdb) cmd_dropdb "$@" ;;
  pgenv) cmd_pgenv "$@" ;;
  psql)
    admin=$(cmd_url)
    exec "$(psql_bin)" "$admin" "$@"
    ;;
  -h | --help | help) usage ;;
  *) log "unknown command '${cmd}'"; usage ;;
esac
