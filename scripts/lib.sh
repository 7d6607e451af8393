# shellcheck shell=bash
# Shared helpers for the scripts in this folder. Source it, do not run it:
#
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# Every function is idempotent and quiet when what it ensures is already there, and is
# safe under `set -euo pipefail`. Installs use Debian's packages (apt-get, as root or
# through sudo): a new machine (CI) may have neither Postgres, Redis nor HAProxy.
#
# Environment (all optional):
#   CHAT_PG_HOST, CHAT_PG_PORT        Postgres address        (127.0.0.1, 5432)
#   CHAT_PG_USER, CHAT_PG_PASSWORD    login used by every URL (postgres, postgres)
#   CHAT_REDIS_PORT                   Redis port on 127.0.0.1 (6379)
#   CHAT_WAIT_S                       longest wait for a service to answer (60)
#
# After sourcing: CHAT_ROOT is the repository root, CHAT_PG_URL_BASE the Postgres URL
# without a database (append "/NAME"), CHAT_PG_ADMIN_URL the URL of database `postgres`.

if [[ -n "${_CHAT_LIB_SOURCED:-}" ]]; then
    return 0
fi
_CHAT_LIB_SOURCED=1

CHAT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CHAT_PG_HOST="${CHAT_PG_HOST:-127.0.0.1}"
CHAT_PG_PORT="${CHAT_PG_PORT:-5432}"
CHAT_PG_USER="${CHAT_PG_USER:-postgres}"
CHAT_PG_PASSWORD="${CHAT_PG_PASSWORD:-postgres}"
CHAT_PG_URL_BASE="postgres://${CHAT_PG_USER}:${CHAT_PG_PASSWORD}@${CHAT_PG_HOST}:${CHAT_PG_PORT}"
CHAT_PG_ADMIN_URL="${CHAT_PG_URL_BASE}/postgres"
CHAT_REDIS_PORT="${CHAT_REDIS_PORT:-6379}"
CHAT_WAIT_S="${CHAT_WAIT_S:-60}"
export CHAT_ROOT CHAT_PG_URL_BASE CHAT_PG_ADMIN_URL

# ---------------------------------------------------------------------------------------
# Output

# log MESSAGE...: one line on stderr, prefixed with the calling script's name.
log() {
    printf '[%s] %s\n' "$(basename "${0:-chat}")" "$*" >&2
}

# die MESSAGE...: log and exit 1.
die() {
    log "ERROR: $*"
    exit 1
}

# section TITLE: a visible header between the steps of a long script.
section() {
    printf '\n==== %s ====\n' "$*" >&2
}

# ---------------------------------------------------------------------------------------
# Packages

_as_root() {
    if [[ "$(id -u)" -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root (or sudo) to run: $*"
    fi
}

# ensure_apt_updated: `apt-get update` once per run (exported: the scripts this one
# starts do not update again), only when something is installed.
ensure_apt_updated() {
    if [[ -n "${_CHAT_APT_UPDATED:-}" ]]; then
        return 0
    fi
    log "apt-get update"
    local out
    out="$(mktemp)"
    if ! _as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >"$out" 2>&1; then
        cat "$out" >&2
        rm -f "$out"
        die "apt-get update failed"
    fi
    rm -f "$out"
    export _CHAT_APT_UPDATED=1
}

# apt_install PACKAGE...: install Debian packages quietly (output shown only on failure).
apt_install() {
    ensure_apt_updated
    log "apt-get install $*"
    local out
    out="$(mktemp)"
    if ! _as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends "$@" >"$out" 2>&1; then
        cat "$out" >&2
        rm -f "$out"
        die "apt-get install $* failed"
    fi
    rm -f "$out"
}

# ensure_command COMMAND PACKAGE: install PACKAGE unless COMMAND is on PATH.
ensure_command() {
    command -v "$1" >/dev/null 2>&1 || apt_install "$2"
    command -v "$1" >/dev/null 2>&1 || die "'$1' still missing after installing $2"
}

# ensure_promtool: put promtool on PATH. Where it is missing, it is unpacked from
# Debian's prometheus package into .run/tools, not installed: installing the package
# would also set up (and, under systemd, start) a Prometheus server.
ensure_promtool() {
    command -v promtool >/dev/null 2>&1 && return 0
    local tools="$CHAT_ROOT/.run/tools"
    if [[ ! -x "$tools/usr/bin/promtool" ]]; then
        ensure_apt_updated
        ensure_command dpkg-deb dpkg
        local dl
        dl="$(mktemp -d)"
        log "unpacking promtool from Debian's prometheus package into $tools"
        (cd "$dl" && apt-get download -qq prometheus >/dev/null 2>&1) ||
            (cd "$dl" && _as_root apt-get download -qq prometheus >/dev/null) ||
            die "apt-get download prometheus failed"
        mkdir -p "$tools"
        dpkg-deb -x "$dl"/prometheus_*.deb "$tools"
        rm -rf "$dl"
    fi
    [[ -x "$tools/usr/bin/promtool" ]] || die "promtool missing from Debian's prometheus package"
    export PATH="$tools/usr/bin:$PATH"
}

# ---------------------------------------------------------------------------------------
# Waiting and processes

# wait_until SECONDS WHAT COMMAND...: retry COMMAND every 0.5 s until it succeeds; fail
# with a message naming WHAT after SECONDS.
wait_until() {
    local limit=$1 what=$2
    shift 2
    local deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            log "ERROR: $what: not ready after ${limit}s"
            return 1
        fi
        sleep 0.5
    done
}

# pid_alive PID: true while PID runs (a zombie counts as dead).
pid_alive() {
    local pid=$1 state
    [[ -r "/proc/$pid/stat" ]] || return 1
    state="$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)" || return 1
    [[ -n "$state" && "$state" != Z && "$state" != X ]]
}

# stop_pid PID [SECONDS]: SIGTERM, wait up to SECONDS (15), then SIGKILL. Reaps our child.
stop_pid() {
    local pid=$1 limit=${2:-15}
    if pid_alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        local deadline=$((SECONDS + limit))
        while pid_alive "$pid" && ((SECONDS < deadline)); do
            sleep 0.2
        done
        if pid_alive "$pid"; then
            log "process $pid still running ${limit}s after SIGTERM; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true
    # Forget it: once reaped, the pid may be reused by an unrelated process.
    local kept=() p
    for p in "${CHAT_STARTED_PIDS[@]}"; do
        [[ "$p" == "$pid" ]] || kept+=("$p")
    done
    CHAT_STARTED_PIDS=("${kept[@]}")
}

# Background processes started through start_bg, stopped by stop_started (newest first).
CHAT_STARTED_PIDS=()

# start_bg LOGFILE COMMAND...: run COMMAND in the background, output appended to LOGFILE;
# its pid is in BG_PID and remembered for stop_started.
start_bg() {
    local logfile=$1
    shift
    "$@" >>"$logfile" 2>&1 </dev/null &
    BG_PID=$!
    CHAT_STARTED_PIDS+=("$BG_PID")
}

# stop_started: stop every process start_bg started: SIGTERM to all at once (newest
# first), then up to CHAT_STOP_S (15) seconds for all of them, then SIGKILL. For an EXIT trap.
stop_started() {
    local pids=("${CHAT_STARTED_PIDS[@]}") i pid
    ((${#pids[@]} > 0)) || return 0
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        if pid_alive "${pids[$i]}"; then
            kill -TERM "${pids[$i]}" 2>/dev/null || true
        fi
    done
    local deadline=$((SECONDS + ${CHAT_STOP_S:-15}))
    for pid in "${pids[@]}"; do
        while pid_alive "$pid" && ((SECONDS < deadline)); do
            sleep 0.2
        done
    done
    for pid in "${pids[@]}"; do
        if pid_alive "$pid"; then
            log "process $pid still running ${CHAT_STOP_S:-15}s after SIGTERM; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
    CHAT_STARTED_PIDS=()
}

# http_status URL: the HTTP status code of a GET (000 when nothing answers).
http_status() {
    curl -s -o /dev/null -m 2 -w '%{http_code}' "$1" 2>/dev/null || true
}

_http_is_200() {
    [[ "$(http_status "$1")" == 200 ]]
}

# wait_http_ok URL [SECONDS] [PID] [LOGFILE]: wait for a 200 on URL. With PID, fail at
# once if that process exits; with LOGFILE, show its tail on failure.
wait_http_ok() {
    local url=$1 limit=${2:-$CHAT_WAIT_S} pid=${3:-} logfile=${4:-}
    local deadline=$((SECONDS + limit))
    until _http_is_200 "$url"; do
        if [[ -n "$pid" ]] && ! pid_alive "$pid"; then
            log "ERROR: process $pid exited before $url answered 200"
            [[ -n "$logfile" && -f "$logfile" ]] && tail -n 40 "$logfile" >&2
            return 1
        fi
        if ((SECONDS >= deadline)); then
            log "ERROR: $url did not answer 200 within ${limit}s (last status $(http_status "$url"))"
            [[ -n "$logfile" && -f "$logfile" ]] && tail -n 40 "$logfile" >&2
            return 1
        fi
        sleep 0.5
    done
}

# port_in_use PORT: true when something accepts TCP connections on 127.0.0.1:PORT.
port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# free_port: print a TCP port on 127.0.0.1 that is free right now.
free_port() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
        return 0
    fi
    local port tries
    for ((tries = 0; tries < 100; tries++)); do
        port=$((20000 + RANDOM % 40000))
        if ! port_in_use "$port"; then
            echo "$port"
            return 0
        fi
    done
    die "no free port found"
}

# ---------------------------------------------------------------------------------------
# Rust

# ensure_rust: cargo on PATH (adding ~/.cargo/bin if needed), or a clear failure. No
# toolchain can be downloaded here, so this never installs one.
ensure_rust() {
    if ! command -v cargo >/dev/null 2>&1; then
        local home="${HOME:-/root}"
        if [[ -f "$home/.cargo/env" ]]; then
            # shellcheck source=/dev/null
            . "$home/.cargo/env"
        elif [[ -x "$home/.cargo/bin/cargo" ]]; then
            PATH="$home/.cargo/bin:$PATH"
            export PATH
        fi
    fi
    command -v cargo >/dev/null 2>&1 ||
        die "cargo not found (neither on PATH nor in ~/.cargo/bin): install Rust $CHAT_RUST_MIN or newer with rustup (https://rustup.rs), not the distribution's cargo"
    local have major minor
    have="$(rustc --version 2>/dev/null | awk '{print $2}')"
    IFS=. read -r major minor _ <<<"$have"
    local want_major want_minor
    IFS=. read -r want_major want_minor _ <<<"$CHAT_RUST_MIN"
    if [[ -z "$have" ]] || ((major < want_major || (major == want_major && minor < want_minor))); then
        die "Rust ${have:-?} is too old: the workspace needs $CHAT_RUST_MIN or newer (rustup update stable)"
    fi
    # Crates with C parts (ring-like, libc) and the linker itself need a C toolchain.
    if ! command -v cc >/dev/null 2>&1; then
        apt_install gcc libc6-dev
    fi
    # cargo fetches crates over HTTPS: minimal images have no CA certificates.
    if [[ ! -s /etc/ssl/certs/ca-certificates.crt ]]; then
        apt_install ca-certificates
    fi
    if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
        if command -v rustup >/dev/null 2>&1; then
            rustup component add rustfmt clippy >/dev/null 2>&1 ||
                log "rustup component add rustfmt clippy failed"
        fi
    fi
}

# The oldest Rust the workspace builds with (its rust-version).
CHAT_RUST_MIN=1.92

# ---------------------------------------------------------------------------------------
# Node configuration

# default_jwt_secret SECRET [CONFIG_FILE]: export CHAT__AUTH__JWT_SECRET=SECRET unless it is
# set already or CONFIG_FILE sets a non-empty auth.jwt_secret (the built-in default is
# empty, and a node refuses to start without one).
default_jwt_secret() {
    local secret=$1 file=${2:-}
    if [[ -n "${CHAT__AUTH__JWT_SECRET:-}" ]]; then
        return 0
    fi
    if [[ -n "$file" && -f "$file" ]] &&
        grep -Eq '^[[:space:]]*jwt_secret[[:space:]]*=[[:space:]]*["'"'"'][^"'"'"']' "$file"; then
        return 0
    fi
    export CHAT__AUTH__JWT_SECRET="$secret"
}

# ---------------------------------------------------------------------------------------
# Python

# ensure_venv DIR: a working Python venv (with pip) at DIR, python3 and its venv module
# installed from Debian's packages if missing.
ensure_venv() {
    local dir=$1
    if [[ -x "$dir/bin/python" && -x "$dir/bin/pip" ]]; then
        return 0
    fi
    command -v python3 >/dev/null 2>&1 || apt_install python3 python3-venv
    mkdir -p "$(dirname "$dir")"
    rm -rf "$dir"
    if ! python3 -m venv "$dir" >/dev/null 2>&1; then
        rm -rf "$dir"
        apt_install python3-venv
        python3 -m venv "$dir" || die "python3 -m venv $dir failed"
    fi
}

# ---------------------------------------------------------------------------------------
# Postgres

# Run psql against URL, never prompting for a password, with a short connect timeout.
_psql() {
    local url=$1
    shift
    PGCONNECT_TIMEOUT=5 psql -X -w -q -v ON_ERROR_STOP=1 "$url" "$@"
}

_pg_ready() {
    pg_isready -q -h "$CHAT_PG_HOST" -p "$CHAT_PG_PORT" -t 2
}

_pg_login_ok() {
    _psql "$CHAT_PG_ADMIN_URL" -Atc 'SELECT 1' >/dev/null 2>&1
}

# Run psql as the local `postgres` OS user over the Unix socket (peer authentication):
# runuser as root, sudo otherwise (runuser refuses other users).
_psql_as_postgres() {
    if [[ "$(id -u)" -eq 0 ]]; then
        (cd / && runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -p "$CHAT_PG_PORT" "$@")
    else
        (cd / && sudo -n -u postgres psql -X -q -v ON_ERROR_STOP=1 -p "$CHAT_PG_PORT" "$@")
    fi
}

_pg_set_password() {
    log "setting the password of Postgres role $CHAT_PG_USER"
    local pw=${CHAT_PG_PASSWORD//\'/\'\'}
    _psql_as_postgres -d postgres -c "ALTER ROLE \"$CHAT_PG_USER\" WITH LOGIN PASSWORD '$pw'" >/dev/null ||
        die "could not set the password of Postgres role $CHAT_PG_USER"
}

_pg_start_local_clusters() {
    local conf version name started=0
    for conf in /etc/postgresql/*/*/postgresql.conf; do
        [[ -f "$conf" ]] || continue
        version="$(basename "$(dirname "$(dirname "$conf")")")"
        name="$(basename "$(dirname "$conf")")"
        started=1
        if _as_root pg_ctlcluster "$version" "$name" status >/dev/null 2>&1; then
            continue
        fi
        log "starting Postgres cluster $version/$name"
        _as_root pg_ctlcluster --skip-systemctl-redirect "$version" "$name" start >/dev/null ||
            log "pg_ctlcluster $version $name start failed (see /var/log/postgresql/)"
    done
    if ((started == 0)); then
        # Server packages without a cluster (e.g. created with create_main_cluster=false).
        version="$(find /usr/lib/postgresql -maxdepth 1 -mindepth 1 -printf '%f\n' 2>/dev/null | sort -V | tail -n 1)"
        [[ -n "$version" ]] || die "no Postgres server version found under /usr/lib/postgresql"
        log "creating Postgres cluster $version/main"
        _as_root pg_createcluster "$version" main -p "$CHAT_PG_PORT" >/dev/null ||
            die "pg_createcluster $version main failed"
        _as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start >/dev/null 2>&1 ||
            die "pg_ctlcluster $version main start failed"
    fi
}

# ensure_postgres: a Postgres server answering on CHAT_PG_HOST:CHAT_PG_PORT that accepts
# CHAT_PG_ADMIN_URL (user/password login). Installs and starts it if needed.
ensure_postgres() {
    local installed_now=0
    if ! command -v pg_isready >/dev/null 2>&1 || ! command -v psql >/dev/null 2>&1; then
        apt_install postgresql-client
    fi
    if ! _pg_ready; then
        if ! command -v pg_ctlcluster >/dev/null 2>&1 ||
            ! compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null; then
            apt_install postgresql
            installed_now=1
        fi
        _pg_ready || _pg_start_local_clusters
        wait_until "$CHAT_WAIT_S" "Postgres on $CHAT_PG_HOST:$CHAT_PG_PORT" _pg_ready ||
            die "Postgres does not answer on $CHAT_PG_HOST:$CHAT_PG_PORT (see /var/log/postgresql/)"
    fi
    # A password is set only on a Postgres this script just installed: an existing
    # server's logins are its owner's, never changed here.
    if ((installed_now)) && ! _pg_login_ok &&
        [[ "$CHAT_PG_HOST" == 127.0.0.1 || "$CHAT_PG_HOST" == localhost ]] && id postgres >/dev/null 2>&1; then
        _pg_set_password
    fi
    _pg_login_ok || die "cannot log in to Postgres as ${CHAT_PG_USER} at ${CHAT_PG_HOST}:${CHAT_PG_PORT}: $(_psql "$CHAT_PG_ADMIN_URL" -Atc 'SELECT 1' 2>&1 | head -n 1)
  Give the login of your server: CHAT_PG_USER and CHAT_PG_PASSWORD (or CHAT_PG_HOST/CHAT_PG_PORT),
  or point the node at a database with CHAT__DATABASE__URL. The scripts never change a password."
    local version
    version="$(_psql "$CHAT_PG_ADMIN_URL" -Atc 'SHOW server_version_num' 2>/dev/null || echo 0)"
    ((version >= 130000)) || die "Postgres $version is too old: the node needs 13 or newer"
}

_check_db_name() {
    [[ "$1" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "invalid database name: '$1'"
}

# ensure_database NAME: create database NAME unless it exists.
ensure_database() {
    local name=$1
    _check_db_name "$name"
    local found
    found="$(_psql "$CHAT_PG_ADMIN_URL" -Atc "SELECT 1 FROM pg_database WHERE datname = '$name'")" ||
        die "cannot query Postgres at $CHAT_PG_HOST:$CHAT_PG_PORT"
    if [[ "$found" != 1 ]]; then
        log "creating database $name"
        _psql "$CHAT_PG_ADMIN_URL" -c "CREATE DATABASE \"$name\"" >/dev/null ||
            die "could not create database $name"
    fi
}

# drop_database NAME: drop database NAME if it exists, closing its connections.
drop_database() {
    local name=$1
    _check_db_name "$name"
    _psql "$CHAT_PG_ADMIN_URL" -c "DROP DATABASE IF EXISTS \"$name\" WITH (FORCE)" >/dev/null 2>&1 ||
        die "could not drop database $name"
}

# drop_databases_like PATTERN: drop every database whose name matches the SQL LIKE
# PATTERN (e.g. 'chat\_t\_%'). Prints how many it dropped.
drop_databases_like() {
    local pattern=$1 name count=0
    local names
    names="$(_psql "$CHAT_PG_ADMIN_URL" -Atc "SELECT datname FROM pg_database WHERE datname LIKE '$pattern'")" ||
        die "cannot list databases"
    for name in $names; do
        drop_database "$name"
        count=$((count + 1))
    done
    echo "$count"
}

# database_url NAME: the URL of database NAME on the local Postgres.
database_url() {
    echo "${CHAT_PG_URL_BASE}/$1"
}

# ---------------------------------------------------------------------------------------
# Redis, HAProxy

_redis_ready() {
    [[ "$(redis-cli -h 127.0.0.1 -p "$CHAT_REDIS_PORT" ping 2>/dev/null)" == PONG ]]
}

# ensure_redis: the redis-server binary installed (tests start their own) and a Redis
# answering on 127.0.0.1:CHAT_REDIS_PORT, started without persistence if needed.
ensure_redis() {
    local installed_now=0 i
    CHAT_REDIS_STARTED_PID=""
    if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
        apt_install redis-server redis-tools
        installed_now=1
    fi
    if _redis_ready; then
        return 0
    fi
    if ((installed_now)); then
        # The package may be starting its own service: give it a moment before ours.
        for ((i = 0; i < 6; i++)); do
            sleep 0.5
            if _redis_ready; then
                return 0
            fi
        done
    fi
    log "starting redis-server on 127.0.0.1:$CHAT_REDIS_PORT"
    local pidfile="${TMPDIR:-/tmp}/chat-redis-$CHAT_REDIS_PORT.pid"
    rm -f "$pidfile"
    (cd / && redis-server --daemonize yes --bind 127.0.0.1 --port "$CHAT_REDIS_PORT" \
        --save "" --appendonly no --pidfile "$pidfile" >/dev/null) || die "redis-server failed to start"
    wait_until "$CHAT_WAIT_S" "Redis on 127.0.0.1:$CHAT_REDIS_PORT" _redis_ready ||
        die "Redis does not answer on 127.0.0.1:$CHAT_REDIS_PORT"
    # The caller may stop what it started (scripts/cluster.sh does).
    # shellcheck disable=SC2034 # read by the scripts that source this file
    CHAT_REDIS_STARTED_PID="$(cat "$pidfile" 2>/dev/null || true)"
}

# ensure_haproxy: the haproxy binary installed (it is started by the scripts that use it).
ensure_haproxy() {
    ensure_command haproxy haproxy
}

# ensure_node: Node.js 20.10 or newer for the client and browser tests (the client
# needs a WebSocket, global or behind --experimental-websocket), and npm; Debian's
# packages when missing. Debian 12 and Ubuntu 24.04 ship 18: where the distribution's node is older,
# the official build is unpacked into .run/tools from the npm registry's node-linux-*
# package (pinned, its sha512 checked) and put first on PATH; npm stays the distribution's.
CHAT_NODE_VERSION=22.23.5
declare -A _CHAT_NODE_SHA512=(
    [x64]=3jhC+wcoWxKZxcRqF2sUSl0c9HEXFnur/nuIPx6O6CWKV0jOUWQm7Htw5SuXqqlMCEhi0cJqybFPEb5hhcBiMw==
    [arm64]=e1LOUGKVruPGuLVutn8+Cgm5pI1APm4Kvh+zbb/qe/ZpD9s+TQby5iUgZOWmPpbSKpj0Td8DP1N0NEnXasHizg==
)

_node_recent() {
    local major minor
    IFS=. read -r major minor _ <<<"$(node --version 2>/dev/null | tr -d v)"
    [[ -n "$major" ]] && ((major > 20 || (major == 20 && minor >= 10)))
}

ensure_node() {
    ensure_command node nodejs
    ensure_command npm npm
    _node_recent && return 0
    local arch
    case "$(uname -m)" in
    x86_64) arch=x64 ;;
    aarch64) arch=arm64 ;;
    *) die "Node.js $(node --version) is too old: the JavaScript client needs 20.10 or newer (https://nodejs.org)" ;;
    esac
    local dir="$CHAT_ROOT/.run/tools/node-$CHAT_NODE_VERSION-$arch"
    if [[ ! -x "$dir/bin/node" ]]; then
        ensure_curl
        local tgz
        tgz="$(mktemp)"
        log "Node.js $(node --version) is too old; fetching Node.js $CHAT_NODE_VERSION (npm package node-linux-$arch) into $dir"
        curl -fsS -m 300 -o "$tgz" \
            "https://registry.npmjs.org/node-linux-$arch/-/node-linux-$arch-$CHAT_NODE_VERSION.tgz" ||
            die "downloading Node.js $CHAT_NODE_VERSION failed"
        local want
        want="$(printf %s "${_CHAT_NODE_SHA512[$arch]}" | base64 -d | od -An -v -tx1 | tr -d ' \n')"
        if [[ "$(sha512sum "$tgz" | cut -d' ' -f1)" != "$want" ]]; then
            rm -f "$tgz"
            die "Node.js $CHAT_NODE_VERSION: the download does not match its pinned sha512"
        fi
        mkdir -p "$dir"
        tar -xzf "$tgz" -C "$dir" --strip-components=1
        rm -f "$tgz"
    fi
    export PATH="$dir/bin:$PATH"
    _node_recent || die "Node.js $CHAT_NODE_VERSION from $dir does not run"
    log "using Node.js $(node --version) from $dir"
}

# ensure_kill: the kill program (procps), not only the shell's builtin: tests signal
# node processes with it (SIGSTOP, SIGTERM).
ensure_kill() {
    type -P kill >/dev/null 2>&1 || apt_install procps
    type -P kill >/dev/null 2>&1 || die "the kill program is still missing after installing procps"
}

# ensure_curl: curl installed (health checks, API calls).
ensure_curl() {
    ensure_command curl curl
}
