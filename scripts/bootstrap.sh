#!/usr/bin/env bash
# Installs what Pantau needs on a Debian/Ubuntu machine: system packages (as root, with apt-get;
# otherwise it prints the command), then a virtualenv in .venv with the project and its tools.
# With --test, also what only the test suite needs: Chromium for the browser tests, Prometheus
# Alertmanager for the notification tests, and the `grafana` extra for the Grafana push tests.
set -euo pipefail
cd "$(dirname "$0")/.."
testing=false
[ "${1:-}" = "--test" ] && testing=true

missing=()
compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null || command -v pg_ctl >/dev/null \
  || missing+=(postgresql)
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
command -v mosquitto_passwd >/dev/null || missing+=(mosquitto-clients)
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
if $testing; then
  command -v chromium >/dev/null || missing+=(chromium)
  # The notification tests run the real Alertmanager (Debian 12 ships 0.25) and amtool.
  command -v prometheus-alertmanager >/dev/null || command -v alertmanager >/dev/null \
    || missing+=(prometheus-alertmanager)
fi

if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
  else
    echo "Pantau needs: ${missing[*]}. Install them with:" >&2
    echo "  sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# setuptools warns on every editable install, whatever the mode, about how editable installs
# work. (`pip wheel . -w /tmp/w` still shows the build's warnings about the project itself.)
PYTHONWARNINGS=ignore .venv/bin/python -m pip install -q -e '.[dev]'
if $testing; then
  # grafana-client brings urllib3-future, which would otherwise replace urllib3 for everything.
  URLLIB3_NO_OVERRIDE=true PYTHONWARNINGS=ignore .venv/bin/python -m pip install -q \
    --no-binary urllib3-future -e '.[dev,grafana]'
fi
