#!/usr/bin/env bash
# `make test`: prepare what the tests need (packaged weights, PostgreSQL), then run every suite.
# pytest's exit code 5 ("no tests collected") is a failure here, never a silent success.
set -uo pipefail
BIN=.venv/bin
export PYTHONDONTWRITEBYTECODE=1
# a test skipped for a missing dependency fails here (tests/conftest.py)
export CHILDGUARD_TESTS_STRICT=1
# one weights cache for the developer, the tests and CI (tests otherwise use private homes)
export CHILDGUARD_MODELS__CACHE_DIR="${CHILDGUARD_MODELS__CACHE_DIR:-${CHILDGUARD_HOME:-$HOME/.local/share/childguard}/models}"
if "$BIN/childguard" models --help >/dev/null 2>&1; then
  "$BIN/childguard" models pull || { echo "models pull failed"; exit 3; }
fi
# wiring tests run on the packaged all-MiniLM-L6-v2 (tests/conftest.py WIRING_ENCODER); the pull
# above fetched the default EmbeddingGemma, which tests/integration/test_default_encoder.py loads
export CHILDGUARD_MODELS__TEXT_EMBEDDER="$("$BIN/python" -c "from childguard.models.embedders import MINILM_NAME; print(MINILM_NAME)")"
# PostgreSQL runs on dev machines and CI; start it if it was stopped (store tests need both backends)
if command -v pg_isready >/dev/null && ! pg_isready -q -h 127.0.0.1 -p 5432; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
fi
# the workbench's browser tests drive Debian's Chromium through Playwright (never a downloaded
# browser); install it once when it is missing and we may (root, apt)
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends chromium \
         >/dev/null; } || { echo "installing Debian's chromium failed"; exit 3; }
fi
# Label Studio lives in its own venv (.venv-ls); the review integration tests start it
[ -x .venv-ls/bin/label-studio ] || bash scripts/labelstudio.sh install || { echo "Label Studio install failed"; exit 3; }
"$BIN/python" -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: failing (there must be tests)"
  exit 1
fi
exit "$rc"
