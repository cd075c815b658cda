#!/usr/bin/env bash
# Upstream promtool 2.42 (the version of Debian's prometheus package), built from
# its Go module into .cache/bin/promtool-upstream. Debian builds Prometheus without
# Kubernetes service discovery, so its promtool rejects `kubernetes_sd_configs`;
# the monitoring tests check deploy/monitoring/prometheus/prometheus.yml with this
# one. Idempotent: does nothing when the binary is there.
set -euo pipefail
cd "$(dirname "$0")/../.."
VERSION=v0.42.0  # Go module version of Prometheus 2.42.0
TARGET=.cache/bin/promtool-upstream
STAMP="$TARGET.$VERSION"
if [[ -x "$TARGET" && -e "$STAMP" ]]; then
  echo "promtool-upstream ready"
  exit 0
fi
GO=$(command -v go || true)
[[ -z "$GO" && -x /usr/local/go/bin/go ]] && GO=/usr/local/go/bin/go
if [[ -z "$GO" ]]; then
  echo "promtool-upstream: no Go toolchain; the scrape-config check will skip (fail with CI=true)" >&2
  exit 0
fi
export GOTOOLCHAIN=local GOFLAGS=-mod=mod
work=$(mktemp -d)
trap 'chmod -R u+w "$work"; rm -rf "$work"' EXIT
# The module has replace directives, so `go install pkg@version` refuses it:
# build it as the main module from a copy of its source.
src=$("$GO" mod download -json "github.com/prometheus/prometheus@$VERSION" |
  sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
cp -r "$src" "$work/prometheus"
chmod -R u+w "$work/prometheus"
mkdir -p "$(dirname "$TARGET")"
(cd "$work/prometheus" && "$GO" build -trimpath -ldflags="-s -w" -o "$OLDPWD/$TARGET.tmp" ./cmd/promtool)
mv "$TARGET.tmp" "$TARGET"
rm -f "$TARGET".v*
touch "$STAMP"
echo "promtool-upstream built ($VERSION)"
