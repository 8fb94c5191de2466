#!/usr/bin/env bash
# Remove what deploy.sh created from the cluster of the current kubectl context.
#
#   manifests/cleanup.sh                          # everything, the namespace and data too
#   KEEP_DATA=1 manifests/cleanup.sh              # the app only: keep the database
#   OVERLAY=cloudnative-pg manifests/cleanup.sh   # the same for the overlay
#
# Without KEEP_DATA the namespace is deleted, and with it the database volumes:
# the data is gone. KEEP_DATA=1 deletes the app's Deployment, Service, autoscaler,
# disruption budget and settings and leaves the namespace, the Secret and the
# database (StatefulSet and its volume, or the CloudNativePG Cluster) in place, so a
# later deploy.sh finds its data again.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
namespace=mailroom
overlay="${OVERLAY:-}"

die() {
    echo "cleanup.sh: $*" >&2
    exit 1
}

command -v kubectl >/dev/null 2>&1 || die "kubectl is not installed: install it first"

if [[ -n $overlay ]]; then
    source_dir="$here/overlays/$overlay"
    [[ -f $source_dir/kustomization.yaml ]] || die "no overlay named '$overlay' in $here/overlays"
else
    source_dir="$here"
fi

if [[ ${KEEP_DATA:-0} == 1 ]]; then
    echo "== deleting the mailroom app from namespace $namespace (the database stays)"
    kubectl -n "$namespace" delete \
        deployment/mailroom service/mailroom horizontalpodautoscaler/mailroom \
        poddisruptionbudget/mailroom --ignore-not-found
    kubectl -n "$namespace" delete configmap \
        --selector=app.kubernetes.io/name=mailroom,app.kubernetes.io/component=api \
        --ignore-not-found
else
    echo "== deleting everything in ${overlay:-the base manifests}, namespace $namespace included"
    kubectl delete -k "$source_dir" --ignore-not-found --wait=true
fi

echo
if kubectl get namespace "$namespace" >/dev/null 2>&1; then
    kubectl -n "$namespace" get all
else
    echo "namespace $namespace is gone"
fi
