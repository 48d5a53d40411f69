#!/usr/bin/env bash
# Deploy to Kubernetes: apply a kustomization, wait for the rollout, roll back if it fails.
#
#   scripts/deploy.sh [--env base|OVERLAY] [--image REF] [--timeout DURATION] [--dry-run]
#   scripts/deploy.sh --rollback [--timeout DURATION]
#
# --env      k8s/base (default "base") or k8s/overlays/OVERLAY, e.g. release
# --image    the image to run instead of the kustomization's, e.g.
#            registry.example.com/sre-microservice@sha256:<digest> (the release pipeline's)
# --timeout  how long the rollout may take (default 300s, the Deployment's progress deadline)
# --dry-run  render and validate only: kubectl apply --dry-run=client, no rollout wait
# --rollback go back to the previous revision and wait for it (a failed smoke test after a
#            completed rollout; a failed rollout is rolled back without asking)
#
# Uses the current kubectl context. Exit status: 0 rolled out; 1 the rollout failed (and was
# rolled back to the revision that ran before); 2 bad usage.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NAMESPACE="sre-microservice"
DEPLOYMENT="deployment/sre-microservice"
IMAGE_NAME="sre-microservice"
ENVIRONMENT="base"
IMAGE=""
TIMEOUT="300s"
DRY_RUN=false
ROLLBACK=false

usage() { sed -n '2,17s/^# \{0,1\}//p' "$0"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --env) ENVIRONMENT="${2:?--env needs a value}"; shift ;;
        --image) IMAGE="${2:?--image needs a value}"; shift ;;
        --timeout) TIMEOUT="${2:?--timeout needs a value}"; shift ;;
        --dry-run) DRY_RUN=true ;;
        --rollback) ROLLBACK=true ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

command -v kubectl >/dev/null || { echo "error: kubectl is not installed" >&2; exit 2; }

if [ "$ROLLBACK" = true ]; then
    kubectl rollout undo "$DEPLOYMENT" -n "$NAMESPACE"
    exec kubectl rollout status "$DEPLOYMENT" -n "$NAMESPACE" --timeout="$TIMEOUT"
fi

if [ "$ENVIRONMENT" = base ]; then
    KUSTOMIZATION="$ROOT/k8s/base"
else
    KUSTOMIZATION="$ROOT/k8s/overlays/$ENVIRONMENT"
fi
if [ ! -f "$KUSTOMIZATION/kustomization.yaml" ]; then
    echo "error: no kustomization for environment '$ENVIRONMENT' ($KUSTOMIZATION)" >&2
    exit 2
fi

# --image: a throw-away kustomization on top of the chosen one, so the repository stays as is.
# (kustomize refuses absolute resource paths; a relative one may leave the directory.)
if [ -n "$IMAGE" ]; then
    WORKDIR="$(mktemp -d)"
    trap 'rm -rf "$WORKDIR"' EXIT
    if [[ "$IMAGE" == *@* ]]; then
        image_fields="  newName: ${IMAGE%@*}
  digest: ${IMAGE#*@}"
    elif [[ "${IMAGE##*/}" == *:* ]]; then
        image_fields="  newName: ${IMAGE%:*}
  newTag: ${IMAGE##*:}"
    else
        image_fields="  newName: $IMAGE"
    fi
    cat > "$WORKDIR/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- $(realpath --relative-to="$WORKDIR" "$KUSTOMIZATION")
images:
- name: $IMAGE_NAME
$image_fields
EOF
    KUSTOMIZATION="$WORKDIR"
fi

if [ "$DRY_RUN" = true ]; then
    exec kubectl apply --dry-run=client -k "$KUSTOMIZATION"
fi

# The revision running now: a failed rollout goes back to exactly this one. Empty on a first
# deploy (nothing to go back to).
revision_now() {
    kubectl get "$DEPLOYMENT" -n "$NAMESPACE" --ignore-not-found \
        -o jsonpath='{.metadata.annotations.deployment\.kubernetes\.io/revision}'
}
previous_revision="$(revision_now)"

echo "applying $KUSTOMIZATION (revision before: ${previous_revision:-none})"
kubectl apply -k "$KUSTOMIZATION"

if kubectl rollout status "$DEPLOYMENT" -n "$NAMESPACE" --timeout="$TIMEOUT"; then
    echo "rolled out: revision $(revision_now)"
    exit 0
fi

echo "error: the rollout did not complete within $TIMEOUT" >&2
if [ -z "$previous_revision" ]; then
    echo "error: first deploy, no earlier revision to roll back to" >&2
elif [ "$(revision_now)" = "$previous_revision" ]; then
    echo "error: the pod template did not change; nothing to roll back" >&2
else
    echo "rolling back to revision $previous_revision" >&2
    kubectl rollout undo "$DEPLOYMENT" -n "$NAMESPACE" --to-revision="$previous_revision"
    kubectl rollout status "$DEPLOYMENT" -n "$NAMESPACE" --timeout="$TIMEOUT" \
        || echo "error: the rollback did not complete either: investigate now" >&2
fi
exit 1
