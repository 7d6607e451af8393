#!/usr/bin/env bash
# Checks the monitoring files in config/:
#   config/prometheus/alerts.yml   promtool check rules (promtool from Debian's prometheus package)
#   config/grafana/chat-node.json  valid JSON, every panel has a query
# and that every chat_* metric they name is one the node defines (the names in
# actors/src/metrics.rs and bus/src/lib.rs; histograms with _bucket, _sum, _count).
#
#   scripts/check-monitoring.sh
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$CHAT_ROOT"

ensure_promtool
promtool check rules config/prometheus/alerts.yml
ensure_command python3 python3
python3 - actors/src/metrics.rs bus/src/lib.rs config/prometheus/alerts.yml config/grafana/chat-node.json <<'PY'
import json, re, sys
sources, alerts, dashboard = sys.argv[1:3], sys.argv[3], sys.argv[4]
defined = set()
for path in sources:
    defined |= set(re.findall(r'"(chat_[a-z0-9_]+)"', open(path).read()))
dash = json.load(open(dashboard))
panels = [p for p in dash["panels"] if p.get("type") != "row"]
empty = [p["title"] for p in panels if not p.get("targets")]
if empty:
    sys.exit(f"dashboard panels without a query: {empty}")
queries = [t["expr"] for p in panels for t in p["targets"]]
missing = {}
for what, text in {"alerts": open(alerts).read(), "dashboard": "\n".join(queries)}.items():
    for name in sorted(set(re.findall(r"\bchat_[a-z0-9_]+", text))):
        if re.sub(r"_(bucket|sum|count)$", "", name) not in defined:
            missing.setdefault(what, []).append(name)
if missing:
    sys.exit(f"metrics the node does not define: {missing}")
print(f"monitoring: {len(panels)} panels, {len(queries)} queries and the alert rules name only the node's metrics")
PY
