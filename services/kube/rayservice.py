"""The platform's RayService on Kubernetes, through the ``kubernetes`` client: what
KubeRay reports of its applications and deployments, and a deployment's replica bounds
changed in the spec (``serveConfigV2``), which KubeRay then applies in place.

The Serve config is YAML inside the custom object; only the bounds asked for change,
so the operator's other settings (and the chart's comments aside) survive a scale.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from services.errors import InvalidParameter, PixserveError

GROUP, VERSION, PLURAL = "ray.io", "v1", "rayservices"


class ClusterError(PixserveError):
    """The cluster could not be read or changed (unreachable, no such RayService, no
    permission): the message says which."""

    code = "cluster_error"
    status = 502  # the CLI's error; the API never raises it


@dataclass(frozen=True)
class DeploymentRow:
    """One Serve deployment as the spec declares it and KubeRay last saw it."""

    app: str
    name: str
    status: str
    min_replicas: int | None
    max_replicas: int | None
    num_gpus: float
    message: str = ""


@dataclass(frozen=True)
class ServiceView:
    """The RayService at a glance: readiness, cluster, applications and deployments."""

    name: str
    namespace: str
    ready: str  # the Ready condition's status and reason
    cluster: str
    applications: dict[str, str]  # name -> status
    deployments: list[DeploymentRow]


class RayServiceClient:
    """Reads and patches one RayService (``namespace``/``name``) with the given
    ``CustomObjectsApi``."""

    def __init__(self, api: Any, namespace: str, name: str) -> None:
        self.api, self.namespace, self.name = api, namespace, name

    def read(self) -> dict[str, Any]:
        return self._call("read", self.api.get_namespaced_custom_object,
                          GROUP, VERSION, self.namespace, PLURAL, self.name)  # fmt: skip

    def view(self) -> ServiceView:
        return service_view(self.read())

    def scale(
        self, app: str | None, deployment: str, min_replicas: int | None,
        max_replicas: int | None,
    ) -> ServiceView:  # fmt: skip
        """Set the deployment's autoscaling bounds in the spec; answers the new view."""
        current = self.read()
        config = rescale(current["spec"]["serveConfigV2"], app, deployment, min_replicas,
                         max_replicas)  # fmt: skip
        patch = {"spec": {"serveConfigV2": config}}
        patched = self._call("patch", self.api.patch_namespaced_custom_object,
                             GROUP, VERSION, self.namespace, PLURAL, self.name, patch)  # fmt: skip
        return service_view(patched)

    def _call(self, verb: str, method: Any, *args: Any) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        where = f"RayService {self.namespace}/{self.name}"
        try:
            answer: dict[str, Any] = method(*args)
        except ApiException as exc:
            reason = {404: "not found", 403: "forbidden (RBAC)", 401: "not authenticated"}
            said = reason.get(exc.status or 0, f"{exc.status} {exc.reason}")
            raise ClusterError(f"could not {verb} {where}: {said}") from None
        except HTTPError as exc:
            raise ClusterError(f"could not {verb} {where}: the API server is unreachable "
                               f"({type(exc).__name__})") from None  # fmt: skip
        return answer


def service_view(service: dict[str, Any]) -> ServiceView:
    """What the spec declares joined with the status KubeRay wrote."""
    status = service.get("status") or {}
    active = status.get("activeServiceStatus") or {}
    apps_status = active.get("applicationStatuses") or {}
    rows = []
    for app in _applications(service["spec"]["serveConfigV2"]):
        app_name = str(app.get("name", "default"))
        seen = (apps_status.get(app_name) or {}).get("serveDeploymentStatuses") or {}
        for entry in app.get("deployments") or []:
            bounds = entry.get("autoscaling_config") or {}
            fixed = entry.get("num_replicas")
            said = seen.get(entry["name"]) or {}
            rows.append(DeploymentRow(
                app_name, entry["name"], str(said.get("status", "UNKNOWN")),
                bounds.get("min_replicas", fixed), bounds.get("max_replicas", fixed),
                float((entry.get("ray_actor_options") or {}).get("num_gpus") or 0),
                str(said.get("message", "")),
            ))  # fmt: skip
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    readiness = f"{ready['status']} ({ready.get('reason', '')})" if ready else "unknown"
    meta = service["metadata"]
    return ServiceView(
        meta["name"], meta.get("namespace", ""), readiness,
        str(active.get("rayClusterName") or "none yet"),
        {name: str(app.get("status", "UNKNOWN")) for name, app in apps_status.items()},
        rows,
    )  # fmt: skip


def rescale(
    config_text: str, app: str | None, deployment: str, min_replicas: int | None,
    max_replicas: int | None,
) -> str:  # fmt: skip
    """``serveConfigV2`` with one deployment's autoscaling bounds changed (checked:
    0 <= min <= max, and max at least 1)."""
    config = yaml.safe_load(config_text)
    apps = config.get("applications") or []
    chosen = [a for a in apps if app is None or a.get("name", "default") == app]
    if not chosen:
        names = ", ".join(str(a.get("name", "default")) for a in apps)
        raise InvalidParameter(f"no application {app!r}; the RayService has: {names}")
    matches = [d for a in chosen for d in a.get("deployments") or [] if d["name"] == deployment]
    if len(matches) != 1:
        known = sorted({d["name"] for a in chosen for d in a.get("deployments") or []})
        what = "is in several applications: name one with --app" if matches else "is unknown"
        raise InvalidParameter(f"deployment {deployment!r} {what}; deployments: "
                               f"{', '.join(known)}")  # fmt: skip
    bounds = matches[0].setdefault("autoscaling_config", {})
    low = bounds.get("min_replicas", 1) if min_replicas is None else min_replicas
    high = bounds.get("max_replicas", low) if max_replicas is None else max_replicas
    if not 0 <= low <= high or high < 1:
        raise InvalidParameter(f"replicas: need 0 <= min <= max and max >= 1; got {low}..{high}")
    bounds.update(min_replicas=low, max_replicas=high)
    matches[0].pop("num_replicas", None)  # a fixed count would fight the bounds
    return str(yaml.safe_dump(config, sort_keys=False))


def _applications(config_text: str) -> list[dict[str, Any]]:
    config = yaml.safe_load(config_text) or {}
    return list(config.get("applications") or [])


def connect(namespace: str | None, name: str, kubeconfig: str | None = None,
            context: str | None = None) -> RayServiceClient:  # fmt: skip
    """A client from the kubeconfig (or the pod's service account inside a cluster);
    the namespace defaults to the context's own."""
    from kubernetes import client, config

    try:
        config.load_kube_config(config_file=kubeconfig, context=context)
        _, active = config.list_kube_config_contexts(config_file=kubeconfig)
        namespace = namespace or (active or {}).get("context", {}).get("namespace")
    except config.ConfigException:
        try:
            config.load_incluster_config()
        except config.ConfigException:
            raise ClusterError("no cluster configured: no kubeconfig (KUBECONFIG, "
                               "~/.kube/config) and not inside a pod") from None  # fmt: skip
    return RayServiceClient(client.CustomObjectsApi(), namespace or "default", name)
