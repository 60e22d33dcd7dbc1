"""Render KubeRay `ray.io/v1` manifests (RayCluster, RayJob, RayService) from a rayft config.

One config drives both runs: the training sections are what the RayJob's entrypoint
(`python -m rayft train CONFIG`) runs, and the `cluster:` section says where (image, namespace,
head and worker-group sizes, GPUs, shared storage, auth). Every manifest is a plain dict; the
tests validate them against the KubeRay CRDs (rayft.cluster.crd_schema).
"""

from __future__ import annotations

import importlib.metadata
import shlex
from pathlib import Path
from typing import Any

import yaml

from rayft.schema.cluster import ClusterConfig, WorkerGroupConfig
from rayft.config.load import LoadedConfig
from rayft.core.errors import ConfigError

RAY_VERSION = "2.60.0"
# Training libraries pinned in the RayJob's runtime_env when `cluster.pip` is null; ray and
# torch come with the image (and torch with rayft's own pinned range).
PINNED = ("transformers", "peft", "trl", "accelerate", "datasets")
SHM_SIZE = "8Gi"  # /dev/shm for torch DataLoader workers and NCCL


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (runtimeEnvYAML, serveConfigV2, entrypoints) as readable `|` blocks."""


_BlockDumper.add_representer(
    str, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s, style="|" if "\n" in s else None))


def render_all(loaded: LoadedConfig) -> dict[str, dict]:
    """{file name: manifest} for the RayCluster, RayJob and RayService of this config."""
    cluster = loaded.pipeline.cluster
    return {
        "raycluster.yaml": ray_cluster(cluster, scaling=loaded.pipeline.scaling),
        "rayjob.yaml": ray_job(loaded),
        "rayservice.yaml": ray_service(loaded),
    }


def write_all(manifests: dict[str, dict], out_dir: str | Path, source: str) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, manifest in manifests.items():
        path = out / name
        header = (f"# Rendered by `rayft k8s render {source}` (KubeRay ray.io/v1). Re-render instead of editing.\n"
                  f"# Needs the Secret `{_secret(manifest)}` (key auth_token) and the PVC of cluster.storage.pvc.\n")
        path.write_text(header + yaml.dump(manifest, Dumper=_BlockDumper, sort_keys=False, width=120), encoding="utf-8")
        written.append(path)
    return written


def ray_cluster(cluster: ClusterConfig, name: str | None = None, scaling: Any = None) -> dict:
    return {"apiVersion": "ray.io/v1", "kind": "RayCluster",
            "metadata": _metadata(cluster, name or cluster.name), "spec": ray_cluster_spec(cluster, scaling)}


def ray_cluster_spec(cluster: ClusterConfig, scaling: Any = None) -> dict:
    """`scaling`: the run's, whose elastic worker range sets the first worker group's pod bounds
    where the config leaves them unset."""
    return {
        "rayVersion": RAY_VERSION,
        "enableInTreeAutoscaling": True,
        "autoscalerOptions": {
            "upscalingMode": "Default",
            "idleTimeoutSeconds": 300,
            "resources": _resources("500m", "512Mi"),
            "securityContext": _container_security(),
        },
        # KubeRay sets RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (from this Secret's `auth_token`)
        # on every Ray container, and on the RayJob's submitter.
        "authOptions": {"mode": "token", "secretName": cluster.auth_secret},
        "headGroupSpec": {
            # num-cpus 0: no training worker is scheduled on the head.
            "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
            "template": _pod(cluster, "ray-head", _resources(cluster.head.cpu, cluster.head.memory),
                             ports=[("gcs-server", 6379), ("dashboard", 8265), ("client", 10001), ("serve", 8000)]),
        },
        "workerGroupSpecs": [_worker_group(cluster, g, scaling if i == 0 else None)
                             for i, g in enumerate(cluster.worker_groups)],
    }


def ray_job(loaded: LoadedConfig) -> dict:
    cluster = loaded.pipeline.cluster
    spec = {
        "entrypoint": shlex.join(train_command(loaded)),
        "runtimeEnvYAML": yaml.safe_dump(_runtime_env(cluster), sort_keys=False),
        "shutdownAfterJobFinishes": True,
        "ttlSecondsAfterFinished": cluster.job.ttl_s,
        "backoffLimit": cluster.job.backoff_limit,
        "activeDeadlineSeconds": cluster.job.active_deadline_s,
        "rayClusterSpec": ray_cluster_spec(cluster, loaded.pipeline.scaling),
    }
    return {"apiVersion": "ray.io/v1", "kind": "RayJob",
            "metadata": _metadata(cluster, f"{cluster.name}-train"), "spec": spec}


def train_command(loaded: LoadedConfig) -> list[str]:
    """`python -m rayft train CONFIG [--set storage.path=<shared>/runs]`."""
    cluster = loaded.pipeline.cluster
    config = cluster.job.config or _relative_config(loaded)
    if not cluster.working_dir and not config.startswith("/"):
        config = f"{cluster.project_dir.rstrip('/')}/{config}"  # the job's cwd is not the image's WORKDIR
    command = ["python", "-m", "rayft", "train", config]
    if cluster.storage.pvc:
        command += ["--set", f"storage.path={cluster.storage.mount_path}/runs"]
    return command


def ray_service(loaded: LoadedConfig) -> dict:
    cluster = loaded.pipeline.cluster
    spec = {
        "serveConfigV2": yaml.safe_dump(serve_config(loaded), sort_keys=False),
        "rayClusterConfig": ray_cluster_spec(cluster),
    }
    return {"apiVersion": "ray.io/v1", "kind": "RayService",
            "metadata": _metadata(cluster, f"{cluster.name}-serve"), "spec": spec}


def serve_config(loaded: LoadedConfig) -> dict:
    """The Serve config (serveConfigV2): one application built by `rayft.serve.app:build_app`
    with the rayft serve config as its args."""
    cluster = loaded.pipeline.cluster
    if cluster.serve.config:
        path = (loaded.base_dir / cluster.serve.config).resolve()
        try:
            given = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cluster.serve.config: cannot read {path}: {exc}") from None
        if not isinstance(given, dict):
            raise ConfigError(f"cluster.serve.config: {path} must be a YAML mapping")
        if "applications" in given:  # already a whole Serve config
            return given
        args = given
    else:
        args = default_serve_args(loaded)
    return {"applications": [{
        "name": "rayft",
        "route_prefix": cluster.serve.route_prefix,
        "import_path": "rayft.serve.app:build_app",  # rayft serve's application builder
        "args": args,
    }]}


def default_serve_args(loaded: LoadedConfig) -> dict:
    """`build_app` args (rayft config sections): the config's model and `serve` section, with the
    adapter store on the shared volume, where `rayft serve register` puts finished adapters."""
    pipeline = loaded.pipeline
    serve = pipeline.serve.model_dump(mode="json", exclude_defaults=True)
    serve["adapter_store"] = f"{pipeline.cluster.storage.mount_path}/adapters"
    return {"model": pipeline.model.model_dump(mode="json", exclude_defaults=True) or {"name": pipeline.model.name},
            "serve": serve}


def _relative_config(loaded: LoadedConfig) -> str:
    if loaded.source is None:
        raise ConfigError("cluster.job.config: set the config path the RayJob should train")
    try:
        return loaded.source.relative_to(Path.cwd()).as_posix()
    except ValueError:
        raise ConfigError(f"{loaded.source}: the config is outside the current directory, so its path in the "
                          "image is unknown; run from the project root or set cluster.job.config") from None


def _runtime_env(cluster: ClusterConfig) -> dict:
    env: dict = {}
    pip = cluster.pip if cluster.pip is not None else default_pip()
    if pip:
        env["pip"] = list(pip)
    if cluster.working_dir:
        env["working_dir"] = cluster.working_dir
    env["env_vars"] = {"TOKENIZERS_PARALLELISM": "false"}
    return env


def default_pip() -> list[str]:
    """rayft and its training libraries at the versions installed here (tested together)."""
    from rayft.core.version import __version__

    return [f"rayft=={__version__}", *(f"{name}=={importlib.metadata.version(name)}" for name in PINNED)]


def preemption_drain(grace_s: int) -> dict:
    """A worker pod's preStop hook: Kubernetes' notice (eviction, drain, scale-down, spot reclaim)
    becomes Ray's preemption notice for the pod's node, with a deadline inside the grace period,
    then the hook waits it out, so a training stage checkpoints and moves before the SIGTERM."""
    deadline = max(1, grace_s - 5)
    return {"preStop": {"exec": {"command": [
        "/bin/sh", "-c",
        f"ray drain-node --address auto --reason DRAIN_NODE_REASON_PREEMPTION --reason-message "
        f"'pod terminating (preStop)' --deadline-remaining-seconds {deadline} && sleep {deadline} || true"]}}}


def elastic_pod_bounds(group: WorkerGroupConfig, scaling: Any) -> tuple[int, int, int] | None:
    """(replicas, minReplicas, maxReplicas) of worker pods for an elastic worker range (scaling.min_workers):
    enough pods for min_workers at start, room for num_workers at most. None: not elastic, or the
    config sets the group's bounds itself."""
    if scaling is None or not scaling.elastic or {"min_replicas", "max_replicas"} & group.model_fields_set:
        return None
    if scaling.use_gpu and group.gpus:
        per_pod = max(1, group.gpus // max(1, int(scaling.resources_per_worker.get("GPU", 1))))
    else:
        cpus = float(group.cpu[:-1]) / 1000 if group.cpu.endswith("m") else float(group.cpu)
        per_pod = max(1, int(cpus // max(scaling.resources_per_worker.get("CPU", 1), 1e-9)))
    low, high = -(-scaling.min_workers // per_pod), -(-scaling.num_workers // per_pod)
    return low, low, high


def _worker_group(cluster: ClusterConfig, group: WorkerGroupConfig, scaling: Any = None) -> dict:
    limits_extra = {"nvidia.com/gpu": group.gpus} if group.gpus else {}
    template = _pod(cluster, "ray-worker", _resources(group.cpu, group.memory, limits_extra))
    template["spec"]["terminationGracePeriodSeconds"] = group.termination_grace_s
    template["spec"]["containers"][0]["lifecycle"] = preemption_drain(group.termination_grace_s)
    bounds = elastic_pod_bounds(group, scaling)
    if group.gpus:
        template["spec"]["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        if group.gpu_type:
            template["spec"]["nodeSelector"] = {group.gpu_node_label: group.gpu_type}
    return {
        "groupName": group.name,
        "replicas": bounds[0] if bounds else group.replicas,
        "minReplicas": bounds[1] if bounds else group.min_replicas,
        "maxReplicas": bounds[2] if bounds else group.max_replicas,
        "rayStartParams": {},  # KubeRay passes --num-gpus from the nvidia.com/gpu limit
        "template": template,
    }


def _pod(cluster: ClusterConfig, container: str, resources: dict, ports: list[tuple[str, int]] = ()) -> dict:
    mounts = [{"name": "dshm", "mountPath": "/dev/shm"}]
    volumes = [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": SHM_SIZE}}]
    env = []
    if cluster.storage.pvc:
        mounts.append({"name": "shared", "mountPath": cluster.storage.mount_path})
        volumes.append({"name": "shared", "persistentVolumeClaim": {"claimName": cluster.storage.pvc}})
        # The builtin-model cache on the shared volume: built once, read by every node.
        env.append({"name": "RAYFT_HOME", "value": f"{cluster.storage.mount_path}/cache"})
    main = {
        "name": container,
        "image": cluster.image,
        "imagePullPolicy": cluster.image_pull_policy,
        "resources": resources,
        "securityContext": _container_security(),
        "volumeMounts": mounts,
    }
    if env:
        main["env"] = env
    if ports:
        main["ports"] = [{"name": n, "containerPort": p} for n, p in ports]
    spec: dict = {
        # rayproject/ray images run as user `ray` (uid 1000, gid 100).
        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 100, "fsGroup": 100,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [main],
        "volumes": volumes,
    }
    if cluster.service_account:
        spec["serviceAccountName"] = cluster.service_account
    return {"spec": spec}


def _resources(cpu: str, memory: str, limits_extra: dict | None = None) -> dict:
    return {"requests": {"cpu": cpu, "memory": memory},
            "limits": {"cpu": cpu, "memory": memory, **(limits_extra or {})}}


def _container_security() -> dict:
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def _metadata(cluster: ClusterConfig, name: str) -> dict:
    if len(name) > 63:
        raise ConfigError(f"cluster.name: '{name}' is longer than 63 characters; use a shorter cluster.name")
    return {"name": name, "namespace": cluster.namespace, "labels": {"app.kubernetes.io/part-of": "rayft"}}


def _secret(manifest: dict) -> str:
    spec = manifest["spec"]
    cluster_spec = spec.get("rayClusterSpec") or spec.get("rayClusterConfig") or spec
    return cluster_spec["authOptions"]["secretName"]
