#!/usr/bin/env bash
# Runs the JavaScript client's tests against a real chat node (CHAT_NODE_BIN, default
# target/debug/chat-node of the repository) and the Postgres at 127.0.0.1:5432.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -n "${CHAT_NODE_BIN:-}" && "$CHAT_NODE_BIN" != /* ]]; then
  export CHAT_NODE_BIN="$PWD/$CHAT_NODE_BIN"
fi
cd "$here"
flags=()
# Node 20 has a global WebSocket only behind a flag; Node 22 has it by default.
if ! node -e 'process.exit(typeof WebSocket === "function" ? 0 : 1)'; then
  flags+=(--experimental-websocket)
fi
exec node "${flags[@]}" --test --test-concurrency=1 test/*.test.js
