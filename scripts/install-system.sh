#!/usr/bin/env bash
# Installs the Debian packages the tests and benchmarks need: database, cache,
# monitoring servers, a headless browser, a load generator, and Maven plus a Java 17+
# runtime for the Kafka broker (scripts/install-kafka.sh runs `mvn`; the fixture runs
# the broker with `java`). Idempotent: what is already installed is skipped.
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
# Java runtimes Kafka 4.x runs on, in order of preference: Debian 12 ships 17, Debian 13
# only 21 (and later); default-jre-headless is the release's default, 17 or newer since
# Debian 12.
java_packages=(openjdk-17-jre-headless openjdk-21-jre-headless default-jre-headless)

java_major() {
  # `openjdk version "17.0.15" ...` -> 17; `java version "1.8.0_402"` -> 1 (too old)
  java -version 2>&1 | sed -n 's/.* version "\([0-9]*\).*/\1/p' | head -n 1
}

missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
need_java=true
if command -v java >/dev/null 2>&1 && (( $(java_major || true) + 0 >= 17 )); then
  need_java=false
fi
command -v mvn >/dev/null 2>&1 || missing+=(maven)

if ((${#missing[@]})) || $need_java; then
  export DEBIAN_FRONTEND=noninteractive
  SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  $SUDO apt-get update -qq
  if $need_java; then
    java_pkg=""
    for candidate in "${java_packages[@]}"; do
      policy="$(apt-cache policy "$candidate" 2>/dev/null)"
      if [[ "$policy" == *"Candidate: "[0-9]* ]]; then
        java_pkg="$candidate"; break
      fi
    done
    if [[ -z "$java_pkg" ]]; then
      echo "no Java 17+ runtime package found (tried ${java_packages[*]}); install one" >&2
      exit 1
    fi
    # First, so Maven's dependency on a Java runtime is met by it.
    missing=("$java_pkg" ${missing[@]+"${missing[@]}"})
    # Slim images drop /usr/share/man; the JRE's update-alternatives links need it.
    $SUDO mkdir -p /usr/share/man/man1
  fi
  # Package scripts may try to start services; there is no init system here and we
  # start our own instances on free ports, so forbid that.
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if ! command -v java >/dev/null 2>&1 || (( $(java_major || true) + 0 < 17 )); then
  echo "java on PATH is not Java 17+ ($(command -v java || echo none)); Kafka needs 17+" >&2
  exit 1
fi
echo "system packages ready (java $(java_major), $(mvn -v 2>/dev/null | head -n 1))"
