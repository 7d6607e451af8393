#!/usr/bin/env bash
# Benchmarks that print figures: builds the release node and runs the bench binary,
# which starts its own databases, Redis and nodes on loopback.
#
#   scripts/bench.sh [http|throughput|latency|broadcast|drop|all] [--seconds N]
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$CHAT_ROOT"
ensure_rust
ensure_postgres
ensure_redis
export CHAT_TEST_DATABASE_URL="${CHAT_TEST_DATABASE_URL:-$(database_url postgres)}"
cargo build --release -p chat-node -p chat-chaos --bins
exec target/release/bench "$@"
