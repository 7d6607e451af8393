#!/usr/bin/env bash
# Benchmarks that print figures: builds the release node, the bench and the ceiling
# server, and runs the bench binary, which starts its own databases, Redis, HAProxy,
# nodes and ceiling on loopback. It prints a human table and one JSON line per step.
# The binaries measured are copied to target/bench/<date>/ first (a build running
# meanwhile cannot swap the node under the run), and the JSON lines are also written
# to target/bench/<date>/bench.jsonl.
#
#   scripts/bench.sh [SCENARIO...] [--seconds N] [--smoke] [--targets T,...] [--variants V,...]
#
#   SCENARIO   http throughput latency broadcast drop      (the first figures)
#              ceiling fanout durable idle partitions      (the write path at the limit)
#              all-new (the second line), all (default)
#   --seconds  length of one step (5)           --smoke  one short low-rate step each
#   --targets  ceiling,node1,node2,node3        --variants group,direct
#   target/release/bench --help lists the rest; docs/BENCHMARKS.md explains the figures.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$CHAT_ROOT"
ensure_rust
ensure_postgres
ensure_redis
ensure_haproxy
export CHAT_TEST_DATABASE_URL="${CHAT_TEST_DATABASE_URL:-$(database_url postgres)}"
cargo build --release -p chat-node -p chat-chaos --bins
# The idle scenario opens as many sockets as this process may: raise the soft limit.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
run_dir="target/bench/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$run_dir"
cp target/release/bench target/release/ceiling target/release/chat-node "$run_dir/"
log "commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')" \
    "($(git status --porcelain 2>/dev/null | wc -l) paths changed), open-files limit $(ulimit -n)," \
    "binaries and JSON lines in $run_dir"
exec "$run_dir/bench" --json "$run_dir/bench.jsonl" "$@"
