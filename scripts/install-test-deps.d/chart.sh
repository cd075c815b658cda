#!/usr/bin/env bash
# What the chart tests (tests/chart) need, all into .cache/ (git-ignored), idempotent:
#   - Helm 3 and Helm 4, built from their Go modules (`go install`), as .cache/bin/helm
#     and .cache/bin/helm4;
#   - the CustomResourceDefinitions the chart's custom resources are validated against,
#     taken from each project's own published artifacts: CloudNativePG, KEDA,
#     prometheus-operator and Gateway API from their Go modules (`go mod download`),
#     Strimzi from its Maven Central test jar (which carries the generated CRDs);
#   - checkov (and shellcheck), in a virtualenv of its own (checkov's pins conflict with
#     the test venv's);
#   - actionlint for the product's GitHub Actions workflow.
# Bump a version here and the stamp files make the next run fetch it again.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cache="$root/.cache"
bin="$cache/bin"
crds="$cache/crds"
mkdir -p "$bin" "$crds"

HELM3_VERSION=v3.22.0
HELM4_VERSION=v4.3.1
ACTIONLINT_VERSION=v1.7.12
CNPG_VERSION=v1.29.0
KEDA_VERSION=v2.21.0
PROMETHEUS_OPERATOR_VERSION=v0.85.0
GATEWAY_API_VERSION=v1.6.3
STRIMZI_VERSION=0.51.0
CHECKOV_VERSION=3.3.30
PYTHON="${PYTHON:-python3.11}"

# --- Helm --------------------------------------------------------------------------
install_helm() {  # major version, release, file name in .cache/bin
  local major="$1" version="$2" name="$3" stamp="$bin/.$3-$2-k8s"
  if [[ -x "$bin/$name" && -f "$stamp" ]]; then return; fi
  local tmp; tmp="$(mktemp -d)"
  echo "building helm $version from its Go module (a few minutes on a new machine)"
  # Like Helm's Makefile: the version, and (Helm 3) the Kubernetes version `helm template`
  # and `helm lint` assume, from the client-go it is built with (v0.37 -> 1.37).
  local ldflags="-s -w -X helm.sh/helm/$major/internal/version.version=$version"
  if [[ "$major" == v3 ]]; then
    local gomod minor
    gomod="$(GOFLAGS=-mod=mod go mod download -json "helm.sh/helm/$major@$version" \
      | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
    minor="$(awk '$1 == "k8s.io/client-go" {split($2, v, "."); print v[2]}' "$gomod")"
    for pkg in pkg/chartutil pkg/lint/rules; do
      ldflags+=" -X helm.sh/helm/v3/$pkg.k8sVersionMajor=1 -X helm.sh/helm/v3/$pkg.k8sVersionMinor=$minor"
    done
  fi
  GOFLAGS=-buildvcs=false GOBIN="$tmp" go install -ldflags "$ldflags" \
    "helm.sh/helm/$major/cmd/helm@$version"
  mv "$tmp/helm" "$bin/$name"
  rm -rf "$tmp" "$bin/.$name-"*
  touch "$stamp"
}
install_helm v3 "$HELM3_VERSION" helm
install_helm v4 "$HELM4_VERSION" helm4

# --- actionlint (checks the product's GitHub workflow) --------------------------------
if [[ ! -x "$bin/actionlint" || ! -f "$bin/.actionlint-$ACTIONLINT_VERSION" ]]; then
  GOFLAGS=-buildvcs=false GOBIN="$bin" go install "github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION"
  rm -f "$bin/.actionlint-"*; touch "$bin/.actionlint-$ACTIONLINT_VERSION"
fi

# --- CRDs from Go modules ------------------------------------------------------------
module_dir() {  # module@version -> its directory in the module cache
  GOFLAGS=-mod=mod go mod download -json "$1" | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["Dir"])'
}
fetch_go_crds() {  # name, module@version, directory inside the module, file names...
  local name="$1" module="$2" sub="$3"; shift 3
  local dest="$crds/$name" stamp="$crds/$name/.complete-${module##*@}"
  if [[ -f "$stamp" ]]; then return; fi
  local dir; dir="$(module_dir "$module")"
  rm -rf "$dest"; mkdir -p "$dest"
  for file in "$@"; do cp "$dir/$sub/$file" "$dest/"; done
  chmod u+w "$dest"/*.yaml
  touch "$stamp"
}
fetch_go_crds cloudnative-pg "github.com/cloudnative-pg/cloudnative-pg@$CNPG_VERSION" \
  config/crd/bases postgresql.cnpg.io_clusters.yaml
fetch_go_crds keda "github.com/kedacore/keda/v2@$KEDA_VERSION" \
  config/crd/bases keda.sh_scaledobjects.yaml keda.sh_triggerauthentications.yaml
fetch_go_crds prometheus-operator \
  "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION" \
  example/prometheus-operator-crd monitoring.coreos.com_prometheusrules.yaml \
  monitoring.coreos.com_servicemonitors.yaml monitoring.coreos.com_podmonitors.yaml \
  monitoring.coreos.com_alertmanagerconfigs.yaml
fetch_go_crds gateway-api "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION" \
  config/crd/standard gateway.networking.k8s.io_httproutes.yaml \
  gateway.networking.k8s.io_gateways.yaml

# --- Strimzi CRDs from Maven Central ---------------------------------------------------
strimzi="$crds/strimzi"
if [[ ! -f "$strimzi/.complete-$STRIMZI_VERSION" ]]; then
  rm -rf "$strimzi"; mkdir -p "$strimzi"
  mvn -q -B dependency:copy -Dmaven.repo.local="$cache/m2" \
    -Dartifact="io.strimzi:api:$STRIMZI_VERSION:jar:tests" -DoutputDirectory="$strimzi"
  (cd "$strimzi" && unzip -q -j -o "api-$STRIMZI_VERSION-tests.jar" \
    crds/v1/040-Crd-kafka.yaml crds/v1/043-Crd-kafkatopic.yaml crds/v1/045-Crd-kafkanodepool.yaml \
    && rm "api-$STRIMZI_VERSION-tests.jar")
  touch "$strimzi/.complete-$STRIMZI_VERSION"
fi

# --- checkov -------------------------------------------------------------------------
venv="$cache/checkov-venv"
lock="$root/tests/chart/checkov-requirements.txt"
stamp="$venv/.installed-$(sha256sum "$lock" | cut -c1-12)"
if [[ ! -f "$stamp" ]]; then
  rm -rf "$venv"
  "$PYTHON" -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$lock"
  touch "$stamp"
fi
"$venv/bin/checkov" --version >/dev/null

echo "chart test tools ready: $("$bin/helm" version --short), $("$bin/helm4" version --short), CRDs in $crds, checkov $CHECKOV_VERSION"
