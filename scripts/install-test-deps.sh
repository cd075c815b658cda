#!/usr/bin/env bash
# Everything `make test` needs beyond the Python environment. Each step is idempotent
# and quick when already done, so `make test` can run it every time.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-system.sh
scripts/install-kafka.sh
for extra in scripts/install-test-deps.d/*.sh; do
  [[ -e "$extra" ]] && bash "$extra"
done
echo "test dependencies ready"
