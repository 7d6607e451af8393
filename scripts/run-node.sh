#!/usr/bin/env bash
# Run one chat node for development: Postgres (installed and started if needed), database
# `chat`, the embedded `local` bus (no Redis), the development build via cargo (the one
# the tests use; CHAT_RELEASE=1 for the optimised one). It stays in the foreground.
#
#   scripts/run-node.sh [NODE ARGS...]
#
# Uses config/local.toml (tracked: a public development secret and service key) as
# --config. Extra arguments go to chat-node. Any CHAT__SECTION__KEY variable you set wins, e.g.
#   CHAT__SERVER__BIND=127.0.0.1:9000 scripts/run-node.sh
#
# Environment:
#   CHAT__DATABASE__URL   default postgres://postgres:postgres@127.0.0.1:5432/chat; when
#                         you set it, the script neither starts Postgres nor creates a db
#   CHAT__BUS__KIND       default local
#   CHAT__AUTH__JWT_SECRET  default: a fixed development secret, unless config/local.toml
#                         sets auth.jwt_secret
#   CHAT_DB_NAME          database created and used by default (chat)
#   CHAT_RELEASE=1        build and run the release profile
#   CHAT_PG_*             see scripts/lib.sh
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$CHAT_ROOT"

ensure_rust
# The README's first example talks to the node with curl.
ensure_curl

if [[ -z "${CHAT__DATABASE__URL:-}" ]]; then
    db="${CHAT_DB_NAME:-chat}"
    ensure_postgres
    ensure_database "$db"
    CHAT__DATABASE__URL="$(database_url "$db")"
fi
export CHAT__DATABASE__URL
export CHAT__BUS__KIND="${CHAT__BUS__KIND:-local}"

config_args=()
if [[ -f config/local.toml ]]; then
    config_args=(--config config/local.toml)
fi
# A development secret unless you set one (CHAT__AUTH__JWT_SECRET or local.toml).
default_jwt_secret dev-only-jwt-secret-change-me-0123456789 config/local.toml

log "database ${CHAT__DATABASE__URL#*@}, bus ${CHAT__BUS__KIND}${config_args[*]:+, ${config_args[*]}}"
# The development build by default: the one scripts/test.sh builds too, so a fresh
# machine compiles the dependencies once for both (CHAT_RELEASE=1: the optimised
# build, as for production and the benchmarks).
profile_args=()
if [[ "${CHAT_RELEASE:-0}" == 1 ]]; then
    profile_args=(--release)
fi
log "building chat-node (${profile_args[*]:-dev profile}); it then serves in the foreground until Ctrl-C"
exec cargo run "${profile_args[@]}" -p chat-node -- "${config_args[@]}" "$@"
