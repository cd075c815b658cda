#!/usr/bin/env bash
# Everything `make test` needs beyond the Python environment. Each step is idempotent
# and quick when already done, so `make test` can run it every time. The extra
# installers in install-test-deps.d/ are independent of each other and mostly wait on
# downloads and compilers, so they run side by side; each one's output is printed
# when it ends, and any failure fails the whole install.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-system.sh
scripts/install-kafka.sh

logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT
declare -A jobs=()
for extra in scripts/install-test-deps.d/*.sh; do
  [[ -e "$extra" ]] || continue
  name="$(basename "$extra" .sh)"
  bash "$extra" >"$logs/$name.log" 2>&1 &
  jobs[$name]=$!
done
failed=()
for name in "${!jobs[@]}"; do
  if wait "${jobs[$name]}"; then status=ok; else status=FAILED; failed+=("$name"); fi
  echo "--- install-test-deps.d/$name.sh: $status"
  cat "$logs/$name.log"
done
if ((${#failed[@]})); then
  echo "install failed: ${failed[*]}" >&2
  exit 1
fi
echo "test dependencies ready"
