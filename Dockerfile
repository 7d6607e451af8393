# Container image of one chat node.
#
#   docker build -t chat-node .
#   docker run --rm -p 127.0.0.1:8080:8080 \
#     -e CHAT__DATABASE__URL=postgres://postgres:postgres@HOST:5432/chat \
#     -e CHAT__AUTH__JWT_SECRET=at-least-16-bytes-of-secret chat-node
#
# default.toml (from config/) has no JWT secret: set CHAT__AUTH__JWT_SECRET.
#
# docker-compose.yml runs three of them behind HAProxy with Postgres and Redis.
# Needs BuildKit (the default builder of Docker 23 and later) for the cache mounts.

# ---- build -------------------------------------------------------------------------------
FROM rust:1.95-bookworm AS builder
WORKDIR /src
# The whole workspace: every crate is a member, and sql/ is embedded at compile time.
COPY . .
# The registry and target dir live in build caches, so a rebuild after a code change
# recompiles only the project's crates. The binary is copied out of the cache.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p chat-node \
    && install -m 0755 target/release/chat-node /usr/local/bin/chat-node

# ---- run ---------------------------------------------------------------------------------
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system chat \
    && useradd --system --gid chat --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin chat
COPY --from=builder /usr/local/bin/chat-node /usr/local/bin/chat-node
COPY config/ /etc/chat/
ENV CHAT__SERVER__BIND=0.0.0.0:8080
USER chat
EXPOSE 8080
# Liveness only: readiness (/readyz) is the load balancer's business.
HEALTHCHECK --interval=5s --timeout=3s --start-period=20s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
# SIGTERM (Docker's default) makes the node drain; give it time (stop_grace_period).
ENTRYPOINT ["/usr/local/bin/chat-node"]
CMD ["--config", "/etc/chat/default.toml"]
