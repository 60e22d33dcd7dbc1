"""The `cluster:` section: where and how the same config runs on Kubernetes (KubeRay).

Local runs ignore it; `rayft k8s render` turns it (with the rest of the config) into RayCluster,
RayJob and RayService manifests.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from rayft.schema.base import Strict

# Kubernetes object names (RFC 1035 label: KubeRay names Services after the cluster).
K8S_NAME = r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$"
# A Kubernetes resource quantity ("4", "500m", "16Gi"), as a string (the CRDs' own pattern).
QUANTITY = re.compile(r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$")


def _quantity(value: str) -> str:
    if not QUANTITY.match(value):
        raise ValueError(f"'{value}' is not a Kubernetes quantity (e.g. 4, 500m, 16Gi)")
    return value


def _number_to_text(value):
    # `cpu: 8` / `cpu: 0.5` in YAML are numbers; manifests need them as strings (the CRDs reject 0.5).
    return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


Quantity = Annotated[str, BeforeValidator(_number_to_text), AfterValidator(_quantity)]


class HeadConfig(Strict):
    cpu: Quantity = Field("4", description="Head pod CPU request and limit (a Kubernetes quantity). "
                     "The head runs no training (`num-cpus: 0`): the job driver, data preparation, dashboard.")
    memory: Quantity = Field("16Gi", description="Head pod memory request and limit; the driver "
                        "tokenises the dataset, so size it for the data.")


class WorkerGroupConfig(Strict):
    name: str = Field("gpu", pattern=K8S_NAME, description="Worker group name (`groupName`).")
    gpus: int = Field(1, ge=0, description="`nvidia.com/gpu` per worker pod (0: a CPU group).")
    gpu_type: str | None = Field(
        None, description="GPU model for the node selector, e.g. `NVIDIA-H100-80GB-HBM3` (the value of "
        "`gpu_node_label` on your GPU nodes); null: any GPU node.")
    gpu_node_label: str = Field("nvidia.com/gpu.product", description="Node label that carries the GPU model "
                                "(NVIDIA GPU feature discovery sets `nvidia.com/gpu.product`).")
    cpu: Quantity = Field("8", description="CPU request and limit per worker pod.")
    memory: Quantity = Field("64Gi", description="Memory request and limit per worker pod.")
    replicas: int = Field(1, ge=0, description="Worker pods at start.")
    min_replicas: int = Field(0, ge=0, description="Autoscaler lower bound.")
    max_replicas: int = Field(4, ge=1, description="Autoscaler upper bound.")
    termination_grace_s: int = Field(
        120, ge=10, description="`terminationGracePeriodSeconds` of a worker pod. Its preStop hook drains the pod's "
        "Ray node with reason preemption and a deadline 5 s short of this, then waits it out: a stage checkpoints "
        "at its next step boundary (scaling.checkpoint_on_preemption) and resumes elsewhere, before the SIGTERM. "
        "Give it a training step plus a checkpoint upload.")

    @model_validator(mode="after")
    def _bounds(self) -> "WorkerGroupConfig":
        if not self.min_replicas <= self.replicas <= self.max_replicas:
            raise ValueError(f"replicas: need min_replicas <= replicas <= max_replicas (got {self.min_replicas} "
                             f"<= {self.replicas} <= {self.max_replicas})")
        return self


class ClusterStorageConfig(Strict):
    pvc: str | None = Field(
        "rayft-checkpoints", description="A ReadWriteMany PersistentVolumeClaim (NFS, CephFS, EFS, Filestore, or "
        "an S3 bucket behind a POSIX layer with renames, e.g. JuiceFS) mounted on every pod; null: no volume.")
    mount_path: str = Field("/mnt/rayft", pattern=r"^/", description="Where the PVC is mounted in every pod; "
                            "run directories go to `<mount_path>/runs` (the job's `storage.path`).")


class JobConfig(Strict):
    config: str | None = Field(
        None, description="The config the RayJob trains, relative to `project_dir` (or to `working_dir`); "
        "default: the rendered config's path relative to the current directory.")
    active_deadline_s: int = Field(86400, ge=1, description="`activeDeadlineSeconds`: fail the RayJob after "
                                   "this long.")
    ttl_s: int = Field(3600, ge=0, description="`ttlSecondsAfterFinished`: keep the finished cluster this long "
                       "(for logs) before deleting it.")
    backoff_limit: int = Field(0, ge=0, description="`backoffLimit`: retries of a failed job (each a fresh "
                               "cluster; named runs skip completed stages).")


class ServeAppConfig(Strict):
    config: str | None = Field(
        None, description="A rayft serve config (YAML) used as the RayService application's `args`; a file that "
        "already has `applications:` is used as the whole serveConfigV2. Null: args name the base model and "
        "the pipeline's adapters on the shared storage.")
    route_prefix: str = Field("/", pattern=r"^/", description="HTTP route of the application.")


class ClusterConfig(Strict):
    name: str = Field("rayft", pattern=K8S_NAME, description="Base name of the RayCluster / RayJob / RayService "
                      "objects (lowercase letters, digits, '-').")
    namespace: str = Field("default", pattern=K8S_NAME, description="Kubernetes namespace.")
    image: str = Field(
        "rayproject/ray:2.60.0-py312-gpu",
        description="Container image of every Ray pod. Best: an image with rayft installed (see "
        "k8s/Dockerfile); otherwise `pip` installs it per job.")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field("IfNotPresent",
                                   description="`imagePullPolicy` of the Ray containers.")
    service_account: str | None = Field(None, description="`serviceAccountName` of the Ray pods (e.g. one bound "
                                        "to an IAM role for S3); null: the namespace default.")
    auth_secret: str = Field(
        "rayft-ray-auth", pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description="Secret with key `auth_token`: the Ray token (KubeRay `authOptions`, Ray's RAY_AUTH_MODE=token).")
    head: HeadConfig = Field(default_factory=HeadConfig, description="The head pod.")
    worker_groups: list[WorkerGroupConfig] = Field(
        default_factory=lambda: [WorkerGroupConfig()], min_length=1, description="Worker groups (GPU type, count, "
        "replicas).")
    storage: ClusterStorageConfig = Field(default_factory=ClusterStorageConfig,
                                          description="Shared storage for run directories and checkpoints.")
    pip: list[str] | None = Field(
        None, description="runtime_env `pip` of the RayJob; null: rayft and the training libraries pinned to the "
        "versions installed where you render; []: nothing (the image has rayft).")
    project_dir: str = Field("/home/ray/rayft", pattern=r"^/", description="Where the project (jobs/configs, "
                             "data) lives in the image (k8s/Dockerfile); the RayJob trains `<project_dir>/<config>`.")
    working_dir: str | None = Field(
        None, description="runtime_env `working_dir` of the RayJob: a remote zip URI of your project "
        "(s3://..., https://.../archive/<sha>.zip), used instead of `project_dir`.")
    job: JobConfig = Field(default_factory=JobConfig, description="The RayJob.")
    serve: ServeAppConfig = Field(default_factory=ServeAppConfig, description="The RayService application.")

    @model_validator(mode="after")
    def _unique_groups(self) -> "ClusterConfig":
        names = [g.name for g in self.worker_groups]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise ValueError(f"worker_groups.{i}.name: '{name}' is used by an earlier group")
        return self
