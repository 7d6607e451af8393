#!/usr/bin/env bash
# Runs the web page's browser test: two Chromium pages (alice and bob) on a cluster of two
# chat-node processes behind HAProxy, with its own Postgres database and redis-server.
#
#   CHAT_NODE_BIN=target/debug/chat-node web/test/run.sh      (from the repository root)
#
# Installs what is missing: Chromium (apt) and playwright-core (npm, into web/test/node_modules).
# Needs redis-server, haproxy and psql on the PATH, and Postgres at CHAT_TEST_DATABASE_URL
# (default postgres://postgres@127.0.0.1:5432/postgres). Screenshots go to .run/web/.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
here="$root/web/test"
# playwright-core 1.64 drives Chromium 156 (Debian bookworm's package).
PLAYWRIGHT_VERSION="${PLAYWRIGHT_VERSION:-1.64.1}"

bin="${CHAT_NODE_BIN:-target/debug/chat-node}"
if [[ "$bin" != /* ]]; then
  if [[ -x "$PWD/$bin" ]]; then bin="$PWD/$bin"; else bin="$root/$bin"; fi
fi
if [[ ! -x "$bin" ]]; then
  echo "no chat-node binary at $bin: cargo build -p chat-node --bin chat-node" >&2
  exit 1
fi
export CHAT_NODE_BIN="$bin"

if [[ ! -x /usr/bin/chromium ]]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y chromium || { apt-get update && apt-get install -y chromium; }
fi
if [[ ! -d "$here/node_modules/playwright-core" ]]; then
  npm install --no-save --no-audit --no-fund --prefix "$here" "playwright-core@$PLAYWRIGHT_VERSION"
fi
for tool in redis-server haproxy psql node; do
  command -v "$tool" >/dev/null || { echo "$tool is needed" >&2; exit 1; }
done

cd "$root"
exec node --test --test-concurrency=1 --test-reporter=spec web/test/browser.test.mjs
