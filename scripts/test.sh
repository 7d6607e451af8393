#!/usr/bin/env bash
# Everything CI checks, in order; exits non-zero on the first failure:
#   services    Postgres, Redis, HAProxy, the redis-server binary (installed if missing)
#   cleanup     drops this checkout's test databases left by an earlier run that died
#   static      container files (scripts/check-compose.sh), config/haproxy.cfg, the alert
#               rules and dashboard (scripts/check-monitoring.sh), shellcheck
#   fmt         cargo fmt --all -- --check
#   clippy      cargo clippy --workspace --all-targets -- -D warnings
#   build       cargo build --workspace --bins
#   test        cargo test --workspace --no-fail-fast -- --test-threads=2, then a summary
#   js          the JavaScript client's tests (clients/js, node --test) against a real node
#   web         the web page's browser test (web/test/run.sh: Chromium via playwright-core,
#               two nodes behind HAProxy); screenshots in .run/web/
#   bench       a seconds-long smoke of every bench scenario (target/debug/bench --smoke all-new)
#   chaos       the quick fault run (target/debug/chaos --quick): about 3 minutes, its own
#               Postgres, Redis, three nodes and HAProxy; fails on any broken invariant
#   fuzz        openapi-spec-validator on the OpenAPI document of one running node, then
#               schemathesis against it
#
#   scripts/test.sh
#
# Environment:
#   TEST_THREADS       --test-threads of cargo test (2)
#   CARGO_TEST_ARGS    extra words after `--` for cargo test, e.g. a test name filter
#   SKIP_FUZZ=1        skip the schemathesis step
#   SKIP_BENCH=1       skip the bench smoke
#   SKIP_CHAOS=1       skip the quick fault run
#   CHAOS_SEED         seed of the quick fault run (1; a run is repeatable by its seed)
#   STEPS              only these steps, e.g. STEPS="static fuzz" (services always run)
#   FUZZ_EXAMPLES      schemathesis --max-examples per operation (25)
#   FUZZ_SEED          schemathesis --seed (1; runs are reproducible)
#   FUZZ_TIMEOUT       seconds for the whole schemathesis run (600)
#   CHAT_NODE_BIN      node binary for the fuzz step (target/debug/chat-node)
#   CHAT_VENV          Python venv for schemathesis and PyYAML (.run/venv)
#   CHAT_PG_*          Postgres address and login, see scripts/lib.sh
# Exported to the tests: CHAT_TEST_DATABASE_URL (admin URL on which they create
# databases) and CHAT_TEST_DB_PREFIX (chat_t_r<pid>: the names of this run's databases).
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$CHAT_ROOT"

RUN_DIR="$CHAT_ROOT/.run"
CHAT_VENV="${CHAT_VENV:-$RUN_DIR/venv}"
export CHAT_VENV
SCHEMATHESIS_SPEC='schemathesis>=4.32,<5'
OAS_VALIDATOR_SPEC='openapi-spec-validator>=0.7,<1'
FUZZ_DB=chat_t_fuzz

cleanup() {
    local rc=$?
    trap - EXIT
    stop_started
    if [[ -n "${CHAT_TEST_DB_PREFIX:-}" ]] && command -v psql >/dev/null 2>&1; then
        drop_databases_like "$(like_prefix "$CHAT_TEST_DB_PREFIX")" >/dev/null 2>&1 || true
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step_started=$SECONDS
step() {
    section "$* ($(date +%H:%M:%S), +$((SECONDS - step_started))s)"
}

# summarize_tests OUTPUT LOGS: one closing summary of a cargo test output.
summarize_tests() {
    local out=$1 logs=$2 passed failed ignored
    read -r passed failed ignored < <(awk '/^test result:/ {
        for (i = 1; i <= NF; i++) {
            if ($(i + 1) ~ /^passed/) p += $i
            if ($(i + 1) ~ /^failed/) f += $i
            if ($(i + 1) ~ /^ignored/) g += $i
        }
    } END { print p + 0, f + 0, g + 0 }' "$out")
    section "tests: $((passed + failed)) run, $passed passed, $failed failed, $ignored ignored"
    if ((failed > 0)); then
        echo "failed:"
        grep -E '^test .* \.\.\. FAILED$' "$out" | sed -E 's/^test (.*) \.\.\. FAILED$/  \1/' || true
        echo "their messages are in $out (search for '---- <name> stdout ----');"
        echo "the logs of the node processes they started are in $logs/"
    fi
}

# want STEP: true when STEP is to run (all of them unless STEPS names some).
want() {
    [[ -z "${STEPS:-}" || " ${STEPS//,/ } " == *" $1 "* ]]
}

# ---------------------------------------------------------------------------------------
step "services: Postgres, Redis, HAProxy"
ensure_rust
ensure_curl
ensure_kill
ensure_postgres
ensure_redis
ensure_haproxy
export CHAT_TEST_DATABASE_URL="${CHAT_TEST_DATABASE_URL:-$CHAT_PG_ADMIN_URL}"
# A failing test prints its message and place, not a 40-frame trace (RUST_BACKTRACE=1
# brings them back).
export RUST_BACKTRACE="${RUST_BACKTRACE:-0}"
echo "postgres $CHAT_PG_HOST:$CHAT_PG_PORT, redis 127.0.0.1:$CHAT_REDIS_PORT," \
    "$(redis-server --version | cut -d' ' -f3), $(haproxy -v | head -n 1 | cut -d' ' -f1-3), $(cargo --version)"

# Test databases of this run are named $CHAT_TEST_DB_PREFIX_*; the run drops its own
# at the end, and a run that died is cleaned up by the next run of this checkout (its
# prefix is kept in .run/test-db-prefix). Other people's databases on the same server
# are never touched.
mkdir -p "$RUN_DIR"
like_prefix() { printf '%s\\_%%' "${1//_/\\_}"; }
if want cleanup; then
    step "cleanup: this checkout's leftover test databases"
    if [[ -s "$RUN_DIR/test-db-prefix" ]]; then
        previous="$(cat "$RUN_DIR/test-db-prefix")"
        echo "dropped $(drop_databases_like "$(like_prefix "$previous")") database(s) named ${previous}_* of an earlier run"
    else
        echo "no earlier run recorded"
    fi
fi
export CHAT_TEST_DB_PREFIX="${CHAT_TEST_DB_PREFIX:-chat_t_r$$}"
echo "$CHAT_TEST_DB_PREFIX" >"$RUN_DIR/test-db-prefix"

# ---------------------------------------------------------------------------------------
if want static; then
    step "static: container files, HAProxy config, shell scripts"
    bash scripts/check-compose.sh
    haproxy -c -q -f config/haproxy.cfg || die "config/haproxy.cfg is invalid"
    echo "config/haproxy.cfg: OK"
    bash scripts/check-monitoring.sh
    ensure_command shellcheck shellcheck
    shellcheck -x scripts/*.sh .ci/run clients/js/test/run.sh
    echo "shellcheck: OK"
fi

# ---------------------------------------------------------------------------------------
if want fmt; then
    step "fmt: cargo fmt --all -- --check"
    cargo fmt --all -- --check
fi

if want clippy; then
    step "clippy: cargo clippy --workspace --all-targets -- -D warnings"
    cargo clippy --workspace --all-targets -- -D warnings
fi

if want build; then
    step "build: cargo build --workspace --bins"
    cargo build --workspace --bins
fi

if want test; then
    step "test: cargo test --workspace --no-fail-fast -- --test-threads=${TEST_THREADS:-2}"
    # Node processes of the tests log to target/test-logs/, one file per node: cleared
    # here, so what is there after a run is this run's.
    test_logs="${CARGO_TARGET_DIR:-$CHAT_ROOT/target}/test-logs"
    rm -rf "$test_logs"
    test_out="$RUN_DIR/cargo-test.log"
    test_rc=0
    # shellcheck disable=SC2086 # CARGO_TEST_ARGS is a list of words on purpose
    cargo test --workspace --no-fail-fast -- --test-threads="${TEST_THREADS:-2}" ${CARGO_TEST_ARGS:-} 2>&1 |
        tee "$test_out" || test_rc=$?
    summarize_tests "$test_out" "$test_logs"
    ((test_rc == 0)) || die "tests failed (exit $test_rc); output in $test_out, node logs in $test_logs"
fi

if want js; then
    step "js: clients/js/test/run.sh (node --test against a real node)"
    ensure_node
    CHAT_NODE_BIN="${CHAT_NODE_BIN:-${CARGO_TARGET_DIR:-$CHAT_ROOT/target}/debug/chat-node}" \
        timeout 300 clients/js/test/run.sh || die "JavaScript client tests failed (exit $?)"
fi

if want web; then
    step "web: web/test/run.sh (the page in Chromium, two nodes behind HAProxy)"
    ensure_node
    ensure_command chromium chromium
    CHAT_NODE_BIN="${CHAT_NODE_BIN:-${CARGO_TARGET_DIR:-$CHAT_ROOT/target}/debug/chat-node}" \
        timeout 600 web/test/run.sh || die "browser test failed (exit $?); logs in $RUN_DIR/web/logs/"
    echo "screenshots: $RUN_DIR/web/alice.png, $RUN_DIR/web/bob.png, $RUN_DIR/web/bob-phone.png"
fi

if want bench; then
    if [[ "${SKIP_BENCH:-0}" == 1 ]]; then
        step "bench: skipped (SKIP_BENCH=1)"
    else
        step "bench: target/debug/bench --smoke all-new"
        # One short low-rate step of each scenario against the debug build (the node and
        # the ceiling server next to the bench binary); fails on a lost, duplicated or
        # reordered message or an error, asserts nothing about speed.
        bench_bin="${CARGO_TARGET_DIR:-$CHAT_ROOT/target}/debug/bench"
        [[ -x "$bench_bin" ]] || die "bench binary $bench_bin not found (cargo build --workspace --bins makes it)"
        timeout 300 "$bench_bin" --smoke all-new || die "bench smoke failed (exit $?)"
    fi
fi

if want chaos; then
    if [[ "${SKIP_CHAOS:-0}" == 1 ]]; then
        step "chaos: skipped (SKIP_CHAOS=1)"
    else
        step "chaos: target/debug/chaos --quick --seed ${CHAOS_SEED:-1}"
        # Kills, pauses and restarts nodes, Redis and Postgres under a load of 200
        # clients, then checks the whole history; the report and history go to
        # .run/chaos/.
        chaos_bin="${CARGO_TARGET_DIR:-$CHAT_ROOT/target}/debug/chaos"
        [[ -x "$chaos_bin" ]] || die "chaos binary $chaos_bin not found (cargo build --workspace --bins makes it)"
        timeout 600 "$chaos_bin" --quick --seed "${CHAOS_SEED:-1}" --out "$RUN_DIR/chaos" ||
            die "chaos run failed (exit $?); see $RUN_DIR/chaos/report-${CHAOS_SEED:-1}.json"
    fi
fi

# ---------------------------------------------------------------------------------------
if ! want fuzz || [[ "${SKIP_FUZZ:-0}" == 1 ]]; then
    step "fuzz: skipped"
    section "checks passed ($((SECONDS - step_started))s)"
    exit 0
fi

step "fuzz: schemathesis against /api/v1/openapi.json"
mkdir -p "$RUN_DIR/fuzz"
ensure_venv "$CHAT_VENV"
if ! "$CHAT_VENV/bin/python" -c 'import schemathesis' >/dev/null 2>&1; then
    log "installing $SCHEMATHESIS_SPEC into $CHAT_VENV"
    "$CHAT_VENV/bin/pip" install -q --disable-pip-version-check "$SCHEMATHESIS_SPEC" ||
        die "pip install schemathesis failed"
fi
"$CHAT_VENV/bin/schemathesis" --version

node_bin="${CHAT_NODE_BIN:-${CARGO_TARGET_DIR:-$CHAT_ROOT/target}/debug/chat-node}"
[[ -x "$node_bin" ]] || die "node binary $node_bin not found (cargo build --workspace --bins makes it)"
drop_database "$FUZZ_DB"
ensure_database "$FUZZ_DB"
port="$(free_port)"
base="http://127.0.0.1:$port"
node_log="$RUN_DIR/fuzz/node.log"
: >"$node_log"
log "starting $node_bin on 127.0.0.1:$port (log $node_log)"
start_bg "$node_log" env \
    CHAT__SERVER__BIND="127.0.0.1:$port" \
    CHAT__NODE__ID=fuzz-node \
    CHAT__DATABASE__URL="$(database_url "$FUZZ_DB")" \
    CHAT__BUS__KIND=local \
    CHAT__API__SERVICE_KEYS=fuzz-service-key \
    CHAT__AUTH__JWT_SECRET=fuzz-jwt-secret-0123456789abcdef \
    CHAT__LOG__FORMAT=text \
    CHAT__LIMITS__HTTP_WRITES_PER_SEC=100000 \
    "$node_bin"
node_pid=$BG_PID
wait_http_ok "$base/readyz" "$CHAT_WAIT_S" "$node_pid" "$node_log" || die "the fuzz node did not become ready"

# Real things for the fuzzer to act on, and the config that pins their ids.
"$CHAT_VENV/bin/python" "$CHAT_ROOT/scripts/fuzz_seed.py" "$base" \
    "$RUN_DIR/fuzz/schemathesis.toml" "$RUN_DIR/fuzz/token" || die "seeding the fuzz node failed"
token="$(cat "$RUN_DIR/fuzz/token")"

# The document itself, by a standard validator (OpenAPI 3.1 schema and rules).
if ! "$CHAT_VENV/bin/python" -c 'import openapi_spec_validator' >/dev/null 2>&1; then
    log "installing $OAS_VALIDATOR_SPEC into $CHAT_VENV"
    "$CHAT_VENV/bin/pip" install -q --disable-pip-version-check "$OAS_VALIDATOR_SPEC" ||
        die "pip install openapi-spec-validator failed"
fi
curl -sS -m 10 -o "$RUN_DIR/fuzz/openapi.json" "$base/api/v1/openapi.json" ||
    die "GET /api/v1/openapi.json failed"
"$CHAT_VENV/bin/openapi-spec-validator" "$RUN_DIR/fuzz/openapi.json" ||
    die "the OpenAPI document is not valid ($RUN_DIR/fuzz/openapi.json)"

# Run from .run/fuzz: schemathesis and hypothesis leave .schemathesis/ and .hypothesis/
# in the working directory.
# One worker: with two, hypothesis' threads have crashed CPython's parser ("AST
# constructor recursion depth mismatch") while describing a strategy.
# Two passes: the user calls with a user token (the node's write limit raised, so 429s
# do not hide the calls), then the service calls (tag "service") with the service key,
# so provisioning, attributes and broadcasts are fuzzed past auth.
fuzz() {
    local bearer=$1
    shift
    (
        cd "$RUN_DIR/fuzz"
        exec timeout "${FUZZ_TIMEOUT:-600}" "$CHAT_VENV/bin/schemathesis" \
            --config-file "$RUN_DIR/fuzz/schemathesis.toml" run "$base/api/v1/openapi.json" \
            --header "Authorization: Bearer $bearer" \
            --checks not_a_server_error,response_schema_conformance \
            --max-examples "${FUZZ_EXAMPLES:-25}" \
            --seed "${FUZZ_SEED:-1}" \
            --workers 1 \
            --request-timeout 10 \
            --generation-database none \
            --no-color \
            --report junit --report-dir "$RUN_DIR/fuzz/report" \
            "$@"
    )
}
fuzz_rc=0
fuzz "$token" --exclude-tag service || fuzz_rc=$?
if [[ "$fuzz_rc" == 0 ]]; then
    fuzz fuzz-service-key --include-tag service || fuzz_rc=$?
fi

log "stopping the fuzz node"
stop_pid "$node_pid" 20
if pid_alive "$node_pid"; then die "the fuzz node did not stop"; fi
if grep -qiE 'panicked at' "$node_log"; then
    grep -iE -A3 'panicked at' "$node_log" | head -n 40 >&2
    die "the fuzz node panicked (log $node_log)"
fi
drop_database "$FUZZ_DB"

case "$fuzz_rc" in
0) echo "fuzz: OK" ;;
124) die "schemathesis did not finish within ${FUZZ_TIMEOUT:-600}s" ;;
*) die "schemathesis found failures (exit $fuzz_rc); node log: $node_log" ;;
esac

section "all checks passed ($((SECONDS - step_started))s)"
