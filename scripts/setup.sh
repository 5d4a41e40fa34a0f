#!/usr/bin/env bash
# Idempotent set-up for the demo and the tests: Debian packages (when root and missing), .venv with the
# locked requirements, prodml installed editable. Quick when nothing changed (a stamp file).
#   scripts/setup.sh            dev + test requirements (requirements/dev.txt)
#   scripts/setup.sh bench      the above plus the benchmark baselines (requirements/bench.txt)
set -euo pipefail
cd "$(dirname "$0")/.."

profile=${1:-dev}
lock=requirements/${profile}.txt
python=${PYTHON:-python3}

# Debian packages the integration tests start or call: PostgreSQL, Redis, Prometheus (+ promtool, for the
# rendered scrape config and alert rules) and Chromium (headless, renders the HTML reports).
missing=()
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v promtool >/dev/null || missing+=(prometheus)
command -v chromium >/dev/null || missing+=(chromium)
if [ "$profile" = bench ]; then command -v wrk >/dev/null || missing+=(wrk); fi
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing ${missing[*]} with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # Debian starts a cluster on install; the tests run their own, so leave the port free.
    if command -v pg_ctlcluster >/dev/null; then
      for c in /etc/postgresql/*/main; do [ -d "$c" ] && pg_ctlcluster "$(basename "$(dirname "$c")")" main stop 2>/dev/null || true; done
    fi
    service redis-server stop >/dev/null 2>&1 || true
    service prometheus stop >/dev/null 2>&1 || true
  else
    echo "setup: warning: install ${missing[*]} (sudo apt-get install ${missing[*]}) for the integration tests" >&2
  fi
fi

stamp=.venv/.setup-${profile}
if [ -f "$stamp" ] && [ "$stamp" -nt "$lock" ] && [ "$stamp" -nt pyproject.toml ] && [ -x .venv/bin/prodml ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r "$lock"
.venv/bin/python -m pip install -q --no-deps -e .
touch "$stamp"
echo "setup: .venv ready ($lock)"
