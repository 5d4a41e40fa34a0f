"""Deployment files rendered from ``prodml.yaml``: image, Kubernetes, KServe, Helm, compose, monitoring,
CI and Terraform.

The life of one ``prodml deploy render --target T --out DIR``:

1. ``settings.deploy_settings`` checks the options against the project and the model (a memory limit
   that cannot hold the model, a bad namespace or quantity) and returns one frozen ``DeploySettings``.
2. ``render.render_files`` picks the target (``render.TARGETS``) and collects ``path → text`` from the
   renderers, each a function of the settings: ``image`` (Dockerfile), ``kubernetes`` (one function per
   component: the server, its canary), ``kserve``, ``helm`` (the same objects as templates), ``compose``,
   ``observability`` (Prometheus rules and scrape config, Grafana dashboard), ``ci``, ``terraform``.
3. ``files.write_files`` writes them; ``files.to_yaml``/``to_json`` make a second rendering byte-identical.

``validate.validate_dir`` checks a rendered directory offline against the vendored schemas in
``schemas/`` (KServe, ServiceMonitor, compose, GitHub workflow), the Kubernetes schemas, hadolint and
promtool. Adding a component (the stream worker, the rollout controller) is one function in
``kubernetes.COMPONENTS``.
"""

from __future__ import annotations

from prodml.deploy.render import TARGETS, render, render_files
from prodml.deploy.settings import DeploySettings, deploy_settings

__all__ = ["TARGETS", "DeploySettings", "deploy_settings", "render", "render_files"]
