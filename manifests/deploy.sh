#!/usr/bin/env bash
# Build mailroom's image and deploy it to the cluster of the current kubectl context.
#
#   manifests/deploy.sh                           # single PostgreSQL (manifests/)
#   OVERLAY=cloudnative-pg manifests/deploy.sh    # CloudNativePG cluster + PgBouncer
#
# Settings, from the environment:
#   IMAGE       image to build and run, NAME:TAG (default mailroom:0.1.0); for a real
#               cluster a registry path, e.g. registry.example.com/team/mailroom:0.1.0
#   PUSH=1      push IMAGE after building it (a real cluster pulls from a registry;
#               kind and minikube need `kind load docker-image` / `minikube image load`)
#   SKIP_BUILD=1  deploy an IMAGE that is already built and pushed
#   ENGINE      docker or podman (default: whichever is installed, docker first)
#   OVERLAY     a folder of manifests/overlays/ to deploy instead of the base
#   TIMEOUT     how long to wait for each rollout (default 300s)
# The committed manifests are not edited: the image is set in a throwaway
# kustomization that builds on them.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
namespace=mailroom
image="${IMAGE:-mailroom:0.1.0}"
overlay="${OVERLAY:-}"
timeout="${TIMEOUT:-300s}"

die() {
    echo "deploy.sh: $*" >&2
    exit 1
}

command -v kubectl >/dev/null 2>&1 || die "kubectl is not installed: install it first"

# NAME:TAG, where NAME may hold a registry host with a port (host:5000/mailroom:1).
if [[ ! $image =~ ^([^@]+):([A-Za-z0-9_][A-Za-z0-9_.-]*)$ ]] || [[ ${BASH_REMATCH[2]} == */* ]]; then
    die "IMAGE must be NAME:TAG, got '$image'"
fi
image_name="${BASH_REMATCH[1]}"
image_tag="${BASH_REMATCH[2]}"

if [[ -n $overlay ]]; then
    source_dir="overlays/$overlay"
    [[ -f $here/$source_dir/kustomization.yaml ]] || die "no overlay named '$overlay' in $here/overlays"
else
    source_dir="."
fi

if [[ $overlay == cloudnative-pg ]] && ! kubectl get crd clusters.postgresql.cnpg.io poolers.postgresql.cnpg.io >/dev/null 2>&1; then
    die "the CloudNativePG operator is not installed in this cluster (see docs/deployment.md)"
fi

if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    engine="${ENGINE:-}"
    if [[ -z $engine ]]; then
        if command -v docker >/dev/null 2>&1; then
            engine=docker
        elif command -v podman >/dev/null 2>&1; then
            engine=podman
        else
            die "neither docker nor podman is installed (or set SKIP_BUILD=1)"
        fi
    fi
    echo "== building $image with $engine"
    "$engine" build --file "$root/Containerfile" --tag "$image" "$root"
    if [[ ${PUSH:-0} == 1 ]]; then
        echo "== pushing $image"
        "$engine" push "$image"
    fi
fi

# kustomize takes no absolute paths, hence a copy of manifests/ next to it.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp -R "$here" "$work/manifests"
cat >"$work/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - manifests/$source_dir
images:
  - name: mailroom
    newName: $image_name
    newTag: "$image_tag"
EOF

echo "== applying ${overlay:-the base manifests} with image $image"
kubectl apply -k "$work"

echo "== waiting for the database"
if [[ $overlay == cloudnative-pg ]]; then
    kubectl -n "$namespace" wait --for=condition=Ready cluster/mailroom-db --timeout="$timeout"
    kubectl -n "$namespace" rollout status deployment/mailroom-db-pooler-rw --timeout="$timeout"
else
    kubectl -n "$namespace" rollout status statefulset/mailroom-db --timeout="$timeout"
fi
echo "== waiting for mailroom"
kubectl -n "$namespace" rollout status deployment/mailroom --timeout="$timeout"

echo
kubectl -n "$namespace" get pods
echo
kubectl -n "$namespace" get services
echo

address="$(kubectl -n "$namespace" get service mailroom \
    -o jsonpath='{.status.loadBalancer.ingress[0].ip}{.status.loadBalancer.ingress[0].hostname}' 2>/dev/null || true)"
if [[ -n $address ]]; then
    echo "mailroom: http://$address/health"
else
    echo "The load balancer has no address yet (or the cluster has none). Meanwhile:"
    echo "  kubectl -n $namespace port-forward service/mailroom 8000:80"
    echo "  curl localhost:8000/health"
fi
