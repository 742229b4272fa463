#!/usr/bin/env bash
# Label Studio lifecycle: install | start | stop | status [--json]
# Thin wrapper around childguard.review_bridge.lifecycle (Label Studio 1.23.2 in its own venv,
# .venv-ls at the repo root; data, credentials and log under <home>/labelstudio).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${CHILDGUARD_PYTHON:-$ROOT/.venv/bin/python}"
if [ "$#" -lt 1 ]; then
  echo "usage: $0 install|start|stop|status [--json]" >&2
  exit 2
fi
exec "$PY" -m childguard.review_bridge.lifecycle "$@"
