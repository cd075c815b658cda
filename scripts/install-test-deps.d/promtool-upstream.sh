#!/usr/bin/env bash
# Upstream promtool 2.42 (the version of Debian's prometheus package), built from
# its Go module into .cache/bin/promtool-upstream. Debian builds Prometheus without
# Kubernetes service discovery, so its promtool rejects `kubernetes_sd_configs`;
# the monitoring tests check deploy/monitoring/prometheus/prometheus.yml with this
# one. Idempotent: the build (a few minutes) is kept in the user's cache, so a fresh
# clone on the same machine only links it.
set -euo pipefail
cd "$(dirname "$0")/../.."
VERSION=v0.42.0  # Go module version of Prometheus 2.42.0
LINK=.cache/bin/promtool-upstream
TARGET="${XDG_CACHE_HOME:-$HOME/.cache}/adplatform/bin/promtool-upstream-$VERSION"
if [[ -x "$TARGET" ]]; then
  mkdir -p "$(dirname "$LINK")"
  ln -sfn "$TARGET" "$LINK"
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
mkdir -p "$(dirname "$TARGET")" "$(dirname "$LINK")"
(cd "$work/prometheus" && "$GO" build -trimpath -ldflags="-s -w" -o "$TARGET.tmp" ./cmd/promtool)
mv "$TARGET.tmp" "$TARGET"
ln -sfn "$TARGET" "$LINK"
echo "promtool-upstream built ($VERSION)"
