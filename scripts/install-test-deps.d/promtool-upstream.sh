#!/usr/bin/env bash
# Upstream promtool 2.42 (the version of Debian's prometheus package) with Kubernetes
# service discovery, as .cache/bin/promtool-upstream. Debian builds Prometheus without
# Kubernetes SD, so its promtool rejects `kubernetes_sd_configs`; the monitoring tests
# run `promtool check config` on deploy/monitoring/prometheus/prometheus.yml with this
# one (everything else, rule checks and rule unit tests included, uses Debian's).
#
# No registry ships a promtool binary, so it is built from the Prometheus Go module, but
# with only the service discoveries promtool itself imports (Kubernetes, file): the
# module's plugins.yml / plugins/plugins.go list the optional SD plugins (the cloud SDKs
# are most of the build) and an empty list is Prometheus' own way to leave them out
# (`make plugins` regenerates plugins.go from plugins.yml; newer releases use the
# `remove_all_sd` build tag for the same). About 1.5 minutes on a fresh Go cache instead
# of about 4. Idempotent: the binary is kept in the user's cache, so a fresh clone on
# the same machine only links it.
set -euo pipefail
cd "$(dirname "$0")/../.."
VERSION=v0.42.0  # Go module version of Prometheus 2.42.0
RELEASE=2.42.0
LINK=.cache/bin/promtool-upstream
TARGET="${XDG_CACHE_HOME:-$HOME/.cache}/adplatform/bin/promtool-upstream-$VERSION-k8s-sd"
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
: >"$work/prometheus/plugins.yml"
cat >"$work/prometheus/plugins/plugins.go" <<'GO'
// No optional service discovery: cmd/promtool imports the Kubernetes and file SDs itself.
package plugins
GO
mkdir -p "$(dirname "$TARGET")" "$(dirname "$LINK")"
(cd "$work/prometheus" && "$GO" build -trimpath -o "$TARGET.tmp" \
  -ldflags="-s -w -X github.com/prometheus/common/version.Version=$RELEASE" ./cmd/promtool)
mv "$TARGET.tmp" "$TARGET"
ln -sfn "$TARGET" "$LINK"
echo "promtool-upstream built ($("$LINK" --version 2>&1 | head -1))"
