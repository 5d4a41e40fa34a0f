"""A GitHub Actions workflow for a team's prodml project.

On every push and pull request: lint and test the project's code, validate the data against its
contract. On the main branch, after that: train (register a candidate), gate it (``prodml models
promote --alias challenger`` refuses a candidate below the promotion gate), build and push the image,
render the manifests for the chosen target and start a canary of the challenger. Credentials come from
the repository's secrets and variables; none is written here.
"""

from __future__ import annotations

from typing import Any

from prodml.deploy.files import Files, to_yaml
from prodml.deploy.settings import DeploySettings

__all__ = ["workflow", "workflow_files"]

_CHECKOUT = {"uses": "actions/checkout@v4"}
_PYTHON = {"uses": "actions/setup-python@v5", "with": {"python-version": "3.11", "cache": "pip"}}
_INSTALL = {"name": "Install prodml", "run": "pip install 'prodml[train,serve,dev]'"}

_CANARY = {
    "k8s": (
        "kubectl apply -f deploy/kubernetes/\n"
        'kubectl -n "$NAMESPACE" scale deployment/"$APP"-canary --replicas=1\n'
        'kubectl -n "$NAMESPACE" rollout status deployment/"$APP"-canary --timeout=5m'
    ),
    "helm": (
        'helm upgrade --install "$APP" deploy/helm/"$APP" --namespace "$NAMESPACE" --create-namespace '
        '--set image="$IMAGE" --wait\n'
        'kubectl -n "$NAMESPACE" scale deployment/"$APP"-canary --replicas=1'
    ),
    "kserve": "kubectl apply -f deploy/kserve/",
    "compose": "docker compose -f deploy/docker-compose.yaml up -d --build",
}


def workflow(settings: DeploySettings, target: str) -> dict[str, Any]:
    model = settings.registered_model
    render = (
        f'prodml deploy render --target {target} --out deploy --image "$IMAGE" '
        f"--namespace {settings.namespace}"
    )
    if target == "kserve":  # a new predictor revision on the challenger version takes the canary share
        render += f' --model "{model}/$VERSION"'
    latest_version = (
        "python - <<'EOF' >> \"$GITHUB_OUTPUT\"\n"
        "from mlflow import MlflowClient\n"
        f"versions = MlflowClient().search_model_versions(\"name='{model}'\")\n"
        'print("version=" + str(max(int(v.version) for v in versions)))\n'
        "EOF"
    )
    env = {
        "PRODML_TRACKING_URI": "${{ secrets.PRODML_TRACKING_URI }}",
        "MLFLOW_TRACKING_URI": "${{ secrets.PRODML_TRACKING_URI }}",
        "AWS_ACCESS_KEY_ID": "${{ secrets.AWS_ACCESS_KEY_ID }}",
        "AWS_SECRET_ACCESS_KEY": "${{ secrets.AWS_SECRET_ACCESS_KEY }}",
        "MLFLOW_S3_ENDPOINT_URL": "${{ vars.MLFLOW_S3_ENDPOINT_URL }}",
    }
    return {
        "name": f"prodml {settings.project.name}",
        "on": {"push": {"branches": ["main"]}, "pull_request": {}, "workflow_dispatch": {}},
        "permissions": {"contents": "read", "packages": "write"},
        "concurrency": {"group": "prodml-${{ github.ref }}", "cancel-in-progress": False},
        "env": {
            "APP": settings.name,
            "NAMESPACE": settings.namespace,
            "IMAGE_REPO": settings.image.rsplit(":", 1)[0],
        },
        "jobs": {
            "check": {
                "runs-on": "ubuntu-latest",
                "steps": [
                    _CHECKOUT,
                    _PYTHON,
                    _INSTALL,
                    {"name": "Lint", "run": "ruff check . && ruff format --check ."},
                    {"name": "Test", "run": "pytest -q"},
                    {"name": "Validate data", "run": "prodml data validate"},
                ],
            },
            "train": {
                "needs": "check",
                "if": "github.ref == 'refs/heads/main'",
                "runs-on": "ubuntu-latest",
                "env": env,
                "outputs": {"version": "${{ steps.candidate.outputs.version }}"},
                "steps": [
                    _CHECKOUT,
                    _PYTHON,
                    _INSTALL,
                    {"name": "Train and register a candidate", "run": "prodml train"},
                    {"id": "candidate", "name": "Find the candidate's version", "run": latest_version},
                    {
                        "name": "Gate: make it the challenger only if it passes the promotion gate",
                        "run": f'prodml models promote {model} "${{{{ steps.candidate.outputs.version }}}}" '
                        "--alias challenger",
                    },
                ],
            },
            "deploy": {
                "needs": "train",
                "runs-on": "ubuntu-latest",
                "environment": "production",
                "env": {
                    **env,
                    "VERSION": "${{ needs.train.outputs.version }}",
                    "IMAGE": "${{ env.IMAGE_REPO }}:${{ github.sha }}",
                },
                "steps": [
                    _CHECKOUT,
                    _PYTHON,
                    _INSTALL,
                    {
                        "uses": "docker/login-action@v3",
                        "with": {
                            "registry": "${{ vars.IMAGE_REGISTRY }}",
                            "username": "${{ secrets.REGISTRY_USERNAME }}",
                            "password": "${{ secrets.REGISTRY_PASSWORD }}",
                        },
                    },
                    {"name": "Render manifests", "run": render},
                    {
                        "name": "Build the wheel",
                        "run": "pip wheel --no-deps -w deploy/wheels 'prodml[serve]'",
                    },
                    {
                        "name": "Build and push the image",
                        "uses": "docker/build-push-action@v6",
                        "with": {"context": "deploy", "push": True, "tags": "${{ env.IMAGE }}"},
                    },
                    {"uses": "azure/setup-kubectl@v4"},
                    {
                        "name": "Set the cluster credentials",
                        "run": 'mkdir -p ~/.kube && echo "$KUBECONFIG_DATA" | base64 -d > ~/.kube/config',
                        "env": {"KUBECONFIG_DATA": "${{ secrets.KUBECONFIG }}"},
                    },
                    {"name": "Start the canary", "run": _CANARY[target]},
                ],
            },
        },
    }


def workflow_files(settings: DeploySettings, target: str) -> Files:
    return {".github/workflows/prodml.yml": to_yaml(workflow(settings, target))}
