#!/usr/bin/env bash
# A local cluster: N chat nodes on the Redis bus behind HAProxy.
#
#   scripts/cluster.sh [N]     start N nodes (default 3) and HAProxy; Ctrl-C stops them
#   scripts/cluster.sh stop    stop a cluster started by this script (e.g. detached)
#
# Nodes listen on 127.0.0.1:8081..808N (node-1..node-N), HAProxy on 127.0.0.1:8080 with
# config/haproxy.cfg rewritten for N servers. Postgres and Redis are installed and
# started if needed; database `chat` is created. Logs, the generated HAProxy config and
# the pid file are under .run/cluster/. node-1 starts (and migrates the database) first,
# the others once it is ready. A Redis the script had to start is stopped with the
# cluster; one that was running already is left alone.
#
# Environment:
#   CLUSTER_LB_PORT       HAProxy port (8080)
#   CLUSTER_BASE_PORT     port of node-1; node-i gets BASE+i-1 (8081)
#   CLUSTER_DETACH=1      return once everything is ready, leave it running
#   CLUSTER_BUILD=0       do not run cargo build (use the binary as it is)
#   CLUSTER_NODE_BIN      node binary (target/release/chat-node)
#   CLUSTER_CONFIG        --config file for the nodes (config/local.toml if it exists)
#   CHAT_DB_NAME          database (chat)
#   CHAT__*               passed to every node; defaults set here: CHAT__DATABASE__URL,
#                         CHAT__REDIS__URL, CHAT__AUTH__JWT_SECRET (one for all nodes,
#                         unless the --config file sets auth.jwt_secret),
#                         CHAT__API__SERVICE_KEYS (cluster-dev-service-key)
#   CHAT_PG_*, CHAT_REDIS_PORT, CHAT_WAIT_S   see scripts/lib.sh
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$CHAT_ROOT"

RUN_DIR="$CHAT_ROOT/.run/cluster"
PIDS_FILE="$RUN_DIR/pids"
LB_PORT="${CLUSTER_LB_PORT:-8080}"
BASE_PORT="${CLUSTER_BASE_PORT:-8081}"
export CHAT_STOP_S="${CHAT_STOP_S:-30}"

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
}

# ---------------------------------------------------------------------------------------
# stop: end what a previous run recorded in the pid file (lines "PID NAME").

# _pid_is NAME PID: PID runs a program whose command line mentions NAME.
_pid_is() {
    pid_alive "$2" && tr '\0' ' ' <"/proc/$2/cmdline" 2>/dev/null | grep -q -- "$1"
}

stop_recorded() {
    if [[ ! -f "$PIDS_FILE" ]]; then
        log "no cluster recorded in $PIDS_FILE"
        return 0
    fi
    local pid name pids=()
    while read -r pid name; do
        [[ -n "$pid" ]] || continue
        if _pid_is "$name" "$pid"; then
            pids+=("$pid")
        fi
    done <"$PIDS_FILE"
    # A foreground cluster.sh is recorded first: its own trap stops the rest.
    local first
    first="$(head -n 1 "$PIDS_FILE")"
    if _pid_is cluster.sh "${first%% *}"; then
        log "asking cluster.sh (pid ${first%% *}) to stop"
        pids=("${first%% *}")
    fi
    if ((${#pids[@]} == 0)); then
        log "nothing recorded is running"
        rm -f "$PIDS_FILE"
        return 0
    fi
    log "stopping pids ${pids[*]}"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    local deadline=$((SECONDS + CHAT_STOP_S + 5)) p
    for p in "${pids[@]}"; do
        while pid_alive "$p" && ((SECONDS < deadline)); do
            sleep 0.2
        done
        if pid_alive "$p"; then
            log "pid $p did not stop; sending SIGKILL"
            kill -KILL "$p" 2>/dev/null || true
        fi
    done
    rm -f "$PIDS_FILE"
    log "stopped"
}

case "${1:-}" in
stop)
    stop_recorded
    exit 0
    ;;
-h | --help | help) usage ;;
"") N=3 ;;
*)
    [[ "$1" =~ ^[1-9][0-9]*$ && "$1" -le 50 ]] || usage
    N=$1
    ;;
esac
(($# <= 1)) || usage

# ---------------------------------------------------------------------------------------
# Start.

detached=0
[[ "${CLUSTER_DETACH:-0}" == 1 ]] && detached=1
ready=0
cleanup() {
    local rc=$?
    trap - EXIT
    if ((detached && ready)); then
        exit "$rc"
    fi
    if ((${#CHAT_STARTED_PIDS[@]} > 0)); then
        log "stopping the cluster"
        stop_started
        rm -f "$PIDS_FILE"
        log "stopped"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$RUN_DIR"
if [[ -f "$PIDS_FILE" ]]; then
    while read -r pid name; do
        if [[ -n "$pid" ]] && _pid_is "$name" "$pid"; then
            die "a cluster is already running (pid $pid, $name): scripts/cluster.sh stop"
        fi
    done <"$PIDS_FILE"
    rm -f "$PIDS_FILE"
fi
for port in "$LB_PORT" $(seq "$BASE_PORT" $((BASE_PORT + N - 1))); do
    if port_in_use "$port"; then
        die "port 127.0.0.1:$port is in use (set CLUSTER_LB_PORT / CLUSTER_BASE_PORT, or scripts/cluster.sh stop)"
    fi
done

section "services"
ensure_curl
ensure_postgres
ensure_redis
ensure_haproxy
db="${CHAT_DB_NAME:-chat}"
if [[ -z "${CHAT__DATABASE__URL:-}" ]]; then
    ensure_database "$db"
fi

node_bin="${CLUSTER_NODE_BIN:-${CARGO_TARGET_DIR:-$CHAT_ROOT/target}/release/chat-node}"
if [[ "${CLUSTER_BUILD:-1}" != 0 ]]; then
    section "build: cargo build --release -p chat-node"
    ensure_rust
    cargo build --release -p chat-node
fi
[[ -x "$node_bin" ]] || die "node binary $node_bin not found"

config_args=()
config="${CLUSTER_CONFIG:-}"
if [[ -z "$config" && -f config/local.toml ]]; then
    config=config/local.toml
fi
if [[ -n "$config" ]]; then
    [[ -f "$config" ]] || die "config file $config not found"
    config_args=(--config "$config")
fi

export CHAT__DATABASE__URL="${CHAT__DATABASE__URL:-$(database_url "$db")}"
export CHAT__BUS__KIND=redis
export CHAT__REDIS__URL="${CHAT__REDIS__URL:-redis://127.0.0.1:$CHAT_REDIS_PORT}"
default_jwt_secret cluster-dev-secret-not-for-production-0123456789 "$config"
export CHAT__API__SERVICE_KEYS="${CHAT__API__SERVICE_KEYS:-cluster-dev-service-key}"

# HAProxy config for N servers, from config/haproxy.cfg.
if ! grep -q '# BEGIN servers' config/haproxy.cfg || ! grep -q '# END servers' config/haproxy.cfg; then
    die "config/haproxy.cfg lacks the '# BEGIN servers' / '# END servers' markers"
fi
awk -v n="$N" -v base="$BASE_PORT" -v lb="$LB_PORT" '
    /# BEGIN servers/ {
        print
        for (i = 1; i <= n; i++) printf "    server node-%d 127.0.0.1:%d\n", i, base + i - 1
        skip = 1
        next
    }
    /# END servers/ { skip = 0 }
    skip { next }
    /^[ \t]*bind 127\.0\.0\.1:[0-9]+/ { sub(/127\.0\.0\.1:[0-9]+/, "127.0.0.1:" lb) }
    { print }
' config/haproxy.cfg >"$RUN_DIR/haproxy.cfg"
haproxy -c -q -f "$RUN_DIR/haproxy.cfg" || die "generated $RUN_DIR/haproxy.cfg is invalid"

echo "$$ cluster.sh" >"$PIDS_FILE"
if ((detached)); then
    : >"$PIDS_FILE" # no foreground script to ask
fi
# A Redis this script started is stopped with the cluster (last, after the nodes);
# one that was running before is left alone.
if [[ -n "${CHAT_REDIS_STARTED_PID:-}" ]]; then
    echo "$CHAT_REDIS_STARTED_PID redis-server" >>"$PIDS_FILE"
    CHAT_STARTED_PIDS+=("$CHAT_REDIS_STARTED_PID")
fi

start_node() {
    local i=$1 port=$((BASE_PORT + $1 - 1))
    local logfile="$RUN_DIR/node-$i.log"
    : >"$logfile"
    start_bg "$logfile" setsid env CHAT__NODE__ID="node-$i" CHAT__SERVER__BIND="127.0.0.1:$port" \
        "$node_bin" "${config_args[@]}"
    NODE_PIDS[i]=$BG_PID
    echo "$BG_PID chat-node" >>"$PIDS_FILE"
}

section "start: $N node(s), HAProxy"
declare -a NODE_PIDS=()
start_node 1
wait_http_ok "http://127.0.0.1:$BASE_PORT/readyz" "$CHAT_WAIT_S" "${NODE_PIDS[1]}" "$RUN_DIR/node-1.log" ||
    die "node-1 did not become ready (log $RUN_DIR/node-1.log)"
log "node-1 ready"
for ((i = 2; i <= N; i++)); do
    start_node "$i"
done
for ((i = 2; i <= N; i++)); do
    wait_http_ok "http://127.0.0.1:$((BASE_PORT + i - 1))/readyz" "$CHAT_WAIT_S" "${NODE_PIDS[i]}" "$RUN_DIR/node-$i.log" ||
        die "node-$i did not become ready (log $RUN_DIR/node-$i.log)"
    log "node-$i ready"
done

: >"$RUN_DIR/haproxy.log"
start_bg "$RUN_DIR/haproxy.log" setsid haproxy -db -f "$RUN_DIR/haproxy.cfg"
haproxy_pid=$BG_PID
echo "$haproxy_pid haproxy" >>"$PIDS_FILE"
wait_http_ok "http://127.0.0.1:$LB_PORT/readyz" "$CHAT_WAIT_S" "$haproxy_pid" "$RUN_DIR/haproxy.log" ||
    die "HAProxy on 127.0.0.1:$LB_PORT does not reach a ready node"
ready=1

rel_run=".run/cluster"
cat <<EOF

Cluster of $N node(s) is up.
  clients      http://127.0.0.1:$LB_PORT  (API /api/v1, WebSocket ws://127.0.0.1:$LB_PORT/ws?token=...)
$(for ((i = 1; i <= N; i++)); do
    printf '  node-%-7s http://127.0.0.1:%d  pid %s, log %s/node-%d.log\n' "$i" $((BASE_PORT + i - 1)) "${NODE_PIDS[i]}" "$rel_run" "$i"
done)
  haproxy      pid $haproxy_pid, config $rel_run/haproxy.cfg, log $rel_run/haproxy.log
  database     ${CHAT__DATABASE__URL#*@}; redis ${CHAT__REDIS__URL}
  service key  ${CHAT__API__SERVICE_KEYS}
EOF

if ((detached)); then
    echo "Running detached; stop with: scripts/cluster.sh stop"
    exit 0
fi
echo "Ctrl-C (or scripts/cluster.sh stop from another shell) stops everything."

# Watch: report what dies; end when every node is gone.
declare -A reported=()
while true; do
    sleep 1
    alive=0
    for ((i = 1; i <= N; i++)); do
        if pid_alive "${NODE_PIDS[i]}"; then
            alive=$((alive + 1))
        elif [[ -z "${reported[node$i]:-}" ]]; then
            reported[node$i]=1
            log "node-$i (pid ${NODE_PIDS[i]}) exited; see $rel_run/node-$i.log"
        fi
    done
    if ! pid_alive "$haproxy_pid" && [[ -z "${reported[haproxy]:-}" ]]; then
        reported[haproxy]=1
        log "haproxy (pid $haproxy_pid) exited; see $rel_run/haproxy.log"
    fi
    if ((alive == 0)); then
        die "every node has exited"
    fi
done
