#!/usr/bin/env bash
# Static checks of the container files, for machines without a Docker engine:
# docker-compose.yml parses as YAML, every depends_on names an existing service (and a
# service_healthy dependency has a healthcheck, its own or the Dockerfile's), build
# contexts have a Dockerfile, bind-mounted files exist; the Dockerfile has the parts we
# rely on; the compose HAProxy config passes `haproxy -c` when haproxy is installed.
# Uses `docker compose config` as well when that is available.
#
# Environment:
#   CHAT_VENV   Python venv used when the system python3 lacks PyYAML (.run/venv)
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$CHAT_ROOT"

python=python3
if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import yaml' >/dev/null 2>&1; then
    venv="${CHAT_VENV:-$CHAT_ROOT/.run/venv}"
    ensure_venv "$venv"
    if ! "$venv/bin/python" -c 'import yaml' >/dev/null 2>&1; then
        log "installing PyYAML into $venv"
        "$venv/bin/pip" install -q --disable-pip-version-check pyyaml || die "pip install pyyaml failed"
    fi
    python="$venv/bin/python"
fi

"$python" - docker-compose.yml <<'PY'
import os, re, sys
import yaml

path = sys.argv[1]
errors = []
with open(path) as f:
    doc = yaml.safe_load(f)
if not isinstance(doc, dict) or not isinstance(doc.get("services"), dict) or not doc["services"]:
    sys.exit(f"{path}: no services")
services = doc["services"]

def dockerfile_healthcheck(build):
    context = build if isinstance(build, str) else build.get("context", ".")
    dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
    full = os.path.join(context, dockerfile)
    if not os.path.isfile(full):
        errors.append(f"build context {context!r} has no {dockerfile}")
        return False
    with open(full) as f:
        return re.search(r"^\s*HEALTHCHECK\s+(?!NONE)", f.read(), re.M) is not None

for name, svc in services.items():
    if not isinstance(svc, dict):
        errors.append(f"service {name}: not a mapping")
        continue
    if "image" not in svc and "build" not in svc:
        errors.append(f"service {name}: neither image nor build")
    if "build" in svc:
        dockerfile_healthcheck(svc["build"])
    deps = svc.get("depends_on", {})
    items = {d: {} for d in deps} if isinstance(deps, list) else dict(deps)
    for dep, opts in items.items():
        if dep not in services:
            errors.append(f"service {name}: depends_on unknown service {dep!r}")
            continue
        cond = (opts or {}).get("condition", "service_started")
        if cond not in ("service_started", "service_healthy", "service_completed_successfully"):
            errors.append(f"service {name}: depends_on {dep}: unknown condition {cond!r}")
        if cond == "service_healthy":
            target = services[dep]
            has = "healthcheck" in target and not target["healthcheck"].get("disable", False)
            if not has and "build" in target:
                has = dockerfile_healthcheck(target["build"])
            if not has:
                errors.append(f"service {name}: waits for {dep} to be healthy, but {dep} has no healthcheck")
    for vol in svc.get("volumes", []) or []:
        source = vol.split(":")[0] if isinstance(vol, str) else vol.get("source", "")
        if source.startswith((".", "/")) and not os.path.exists(source):
            errors.append(f"service {name}: mounted path {source} does not exist")
        elif isinstance(vol, str) and not source.startswith((".", "/")) and ":" in vol:
            if source not in (doc.get("volumes") or {}):
                errors.append(f"service {name}: named volume {source!r} not declared")
    for port in svc.get("ports", []) or []:
        if not re.fullmatch(r"(\d+\.\d+\.\d+\.\d+:)?\d+(:\d+)?(/(tcp|udp))?", str(port)):
            errors.append(f"service {name}: odd port mapping {port!r}")

if errors:
    for e in errors:
        print(f"{path}: {e}", file=sys.stderr)
    sys.exit(1)
print(f"{path}: {len(services)} services OK ({', '.join(services)})")
PY

for needle in '^FROM rust:[^ ]+ AS builder' '^FROM debian:bookworm-slim' '^USER chat' \
    '^HEALTHCHECK ' '^ENTRYPOINT \["/usr/local/bin/chat-node"\]' 'cargo build --release'; do
    grep -Eq "$needle" Dockerfile || die "Dockerfile: nothing matches /$needle/"
done
grep -qx 'target' .dockerignore || die ".dockerignore must exclude target"
echo "Dockerfile, .dockerignore: OK"

if command -v haproxy >/dev/null 2>&1; then
    # The node names resolve only inside the compose network: warnings expected, errors not.
    out="$(haproxy -c -f config/haproxy.compose.cfg 2>&1)" || {
        echo "$out" >&2
        die "config/haproxy.compose.cfg is invalid"
    }
    echo "config/haproxy.compose.cfg: OK"
fi

if command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
    docker compose -f docker-compose.yml config -q || die "docker compose config failed"
    echo "docker compose config: OK"
fi
