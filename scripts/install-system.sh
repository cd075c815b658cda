#!/usr/bin/env bash
# Installs the Debian packages the tests and benchmarks need: database, cache,
# monitoring servers, a headless browser and a load generator. Idempotent.
set -euo pipefail

packages=(
  postgresql          # integration tests (run as the postgres user)
  redis-server        # single node and cluster fixtures
  prometheus          # promtool rule tests and the live alert test
  prometheus-alertmanager
  chromium            # dashboard test in a real headless browser
  wrk                 # bidding benchmark load generator
  procps psmisc
)

missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  $SUDO apt-get update -qq
  # Package scripts may try to start services; there is no init system here and we
  # start our own instances on free ports, so forbid that.
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
echo "system packages ready"
