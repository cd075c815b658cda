#!/usr/bin/env bash
# Deploys one environment (the CI/CD pipelines call this; so can a person):
#   deploy/helm/deploy.sh <namespace> <values file> <image repository> <image digest>
# The namespace is created and labelled for Pod Security "restricted" if needed; the
# release is upgraded without --wait, because on a first install with the in-cluster
# PostgreSQL the migration Job runs post-install and --wait would wait for pods that
# need it. Then every Deployment's rollout and `helm test` must succeed, or the release
# is rolled back to its previous revision.
set -euo pipefail
namespace="$1" values="$2" image="$3" digest="$4"
release="${RELEASE:-adplatform}"
chart="$(cd "$(dirname "$0")" && pwd)/adplatform"

kubectl get namespace "$namespace" >/dev/null 2>&1 || kubectl create namespace "$namespace"
kubectl label namespace "$namespace" --overwrite \
  pod-security.kubernetes.io/enforce=restricted \
  pod-security.kubernetes.io/audit=restricted \
  pod-security.kubernetes.io/warn=restricted

previous="$(helm history "$release" -n "$namespace" --max 1 2>/dev/null | awk 'NR == 2 {print $1}')"
rollback() {
  echo "deploy of $release to $namespace failed" >&2
  if [[ -n "$previous" ]]; then
    helm rollback "$release" "$previous" -n "$namespace" --wait --timeout 15m
  fi
  exit 1
}
trap rollback ERR

helm upgrade --install "$release" "$chart" -n "$namespace" -f "$values" \
  --set image.repository="$image" --set image.digest="$digest" --timeout 20m
kubectl -n "$namespace" rollout status deployment \
  -l "app.kubernetes.io/instance=$release" --timeout 15m
helm test "$release" -n "$namespace" --timeout 10m
echo "$release deployed to $namespace at $image@$digest"
