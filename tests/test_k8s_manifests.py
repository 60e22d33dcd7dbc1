"""KubeRay manifests (k8s/ and `rayft k8s render`) against the real KubeRay v1.7.0 CRD schemas.

The CRDs are read from ../shared/kuberay-crds (they stay out of the repository); without them these
tests skip. No Kubernetes API server runs here: the CRDs' openAPIV3Schema is applied with jsonschema,
with unknown fields as errors (the API server would silently prune them).
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import yaml

from rayft.cli import main
from rayft.cluster.crd_schema import load_crds, read_manifests, strict_schema, validate_doc, validate_file

REPO = Path(__file__).resolve().parents[1]
CRD_DIR = REPO.parent / "shared" / "kuberay-crds"
CRD_FILES = [CRD_DIR / f"ray.io_{k}.yaml" for k in ("rayclusters", "rayjobs", "rayservices")]
K8S_FILES = sorted((REPO / "k8s").glob("*.yaml"))

pytestmark = pytest.mark.skipif(
    not all(p.is_file() for p in CRD_FILES),
    reason=f"KubeRay v1.7.0 CRDs not found in {CRD_DIR} (ray.io_rayclusters/rayjobs/rayservices.yaml from the "
    "kuberay-operator Helm chart's crds/); they are kept out of the repository")


@pytest.fixture(scope="module")
def crds():
    return load_crds(CRD_FILES)


def crd_args() -> list[str]:
    return [arg for path in CRD_FILES for arg in ("--crd", str(path))]


def ray_docs(paths) -> dict[str, dict]:
    """{kind: manifest} of the ray.io documents in these files."""
    return {d["kind"]: d for p in paths for d in read_manifests(p) if d["apiVersion"].startswith("ray.io/")}


def cluster_specs(doc: dict) -> dict:
    spec = doc["spec"]
    return spec.get("rayClusterSpec") or spec.get("rayClusterConfig") or spec


def pod_templates(cluster_spec: dict) -> list[dict]:
    return [cluster_spec["headGroupSpec"]["template"], *(g["template"] for g in cluster_spec["workerGroupSpecs"])]


# --- k8s/ ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", K8S_FILES, ids=lambda p: p.name)
def test_every_manifest_in_k8s_validates(path, crds):
    results = validate_file(path, crds)
    assert results, f"{path} has no documents"
    for result in results:
        assert not result.errors, "\n".join(result.errors)
        # Anything not checked against a CRD must be a core object of the storage set-up.
        assert result.checked or "PersistentVolumeClaim/" in result.label, result.label


def test_k8s_folder_has_the_three_objects_with_their_requirements():
    docs = ray_docs(K8S_FILES)
    assert set(docs) == {"RayCluster", "RayJob", "RayService"}
    for kind, doc in docs.items():
        spec = cluster_specs(doc)
        assert spec["enableInTreeAutoscaling"] is True, kind
        assert spec["authOptions"] == {"mode": "token", "secretName": "rayft-ray-auth"}, kind
        assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0", f"{kind}: the head must not train"
        for group in spec["workerGroupSpecs"]:
            assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], kind
            limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
            assert int(limits["nvidia.com/gpu"]) >= 1, f"{kind}: the worker group requests GPUs"
        for template in pod_templates(spec):
            pod = template["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
            claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v]
            assert claims == ["rayft-checkpoints"], f"{kind}: every pod mounts the shared storage"
            for container in pod["containers"]:
                assert {"cpu", "memory"} <= set(container["resources"]["requests"]), container["name"]
                assert {"cpu", "memory"} <= set(container["resources"]["limits"]), container["name"]
                assert container["securityContext"]["allowPrivilegeEscalation"] is False

    job = docs["RayJob"]["spec"]
    assert job["entrypoint"].startswith("python -m rayft train ")
    assert job["shutdownAfterJobFinishes"] is True
    assert job["ttlSecondsAfterFinished"] > 0 and job["activeDeadlineSeconds"] > 0 and job["backoffLimit"] >= 0
    pip = yaml.safe_load(job["runtimeEnvYAML"])["pip"]
    assert any(p.startswith("rayft==") for p in pip) and all("==" in p for p in pip), "rayft and deps pinned"
    config = job["entrypoint"].split()[4].removeprefix("/home/ray/rayft/")
    assert (REPO / config).is_file(), f"the RayJob trains {config}, which must ship with the project"

    serve = yaml.safe_load(docs["RayService"]["spec"]["serveConfigV2"])
    assert [a["import_path"] for a in serve["applications"]] == ["rayft.serve.app:build_app"]


# --- rayft k8s render ---------------------------------------------------------------------------

VARIANTS = {
    "sft_tiny-defaults": ("jobs/configs/sft_tiny.yaml", []),
    "sft_k8s": ("jobs/configs/sft_k8s.yaml", []),
    "no-pvc-two-groups": ("jobs/configs/sft_k8s.yaml", [
        "cluster.storage.pvc=null", "cluster.service_account=rayft-sa", "cluster.pip=[]",
        "cluster.working_dir=s3://bucket/rayft.zip", "cluster.namespace=ml-team",
        'cluster.worker_groups=[{name: cpu, gpus: 0, cpu: "500m", memory: 2Gi, replicas: 0, min_replicas: 0, '
        'max_replicas: 2}, {name: h100, gpus: 8, gpu_type: NVIDIA-H100-80GB-HBM3, replicas: 1, max_replicas: 2}]']),
}


@pytest.mark.parametrize("variant", VARIANTS, ids=str)
def test_rendered_manifests_validate(variant, tmp_path, crds, monkeypatch, capsys):
    config, overrides = VARIANTS[variant]
    monkeypatch.chdir(REPO)
    sets = [a for o in overrides for a in ("--set", o)]
    assert main(["k8s", "render", config, "--out", str(tmp_path), *sets]) == 0
    rendered = sorted(tmp_path.glob("*.yaml"))
    assert [p.name for p in rendered] == ["raycluster.yaml", "rayjob.yaml", "rayservice.yaml"]
    for path in rendered:
        for result in validate_file(path, crds):
            assert result.checked and not result.errors, "\n".join(result.errors)
    capsys.readouterr()
    assert main(["k8s", "validate", *map(str, rendered), *crd_args()]) == 0
    assert capsys.readouterr().out.count("ok ") == 3
    _check_serve_args(yaml.safe_load((tmp_path / "rayservice.yaml").read_text()))


def _check_serve_args(rayservice: dict) -> None:
    """The RayService's serveConfigV2 builds rayft's serve app: its args must be a valid rayft
    config for `rayft.serve.app:build_app` (which validates them the same way)."""
    from rayft.config.load import validate

    apps = yaml.safe_load(rayservice["spec"]["serveConfigV2"])["applications"]
    assert [a["import_path"] for a in apps] == ["rayft.serve.app:build_app"]
    pipeline = validate(apps[0]["args"], "serve app args")
    assert pipeline.serve.adapter_store.startswith("/mnt/")


def test_k8s_rayservice_args_build_the_serve_app():
    _check_serve_args(ray_docs([REPO / "k8s" / "rayservice.yaml"])["RayService"])


def test_render_follows_the_config(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    overrides = VARIANTS["no-pvc-two-groups"][1]
    assert main(["k8s", "render", "jobs/configs/sft_k8s.yaml", "--out", str(tmp_path / "a")]) == 0
    assert main(["k8s", "render", "jobs/configs/sft_k8s.yaml", "--out", str(tmp_path / "b"),
                 *[a for o in overrides for a in ("--set", o)]]) == 0
    a, b = ray_docs((tmp_path / "a").glob("*.yaml")), ray_docs((tmp_path / "b").glob("*.yaml"))

    job = a["RayJob"]["spec"]
    assert job["entrypoint"] == ("python -m rayft train /home/ray/rayft/jobs/configs/sft_k8s.yaml "
                                 "--set storage.path=/mnt/rayft/runs")
    assert (job["activeDeadlineSeconds"], job["ttlSecondsAfterFinished"], job["backoffLimit"]) == (7200, 3600, 1)
    group = job["rayClusterSpec"]["workerGroupSpecs"][0]
    assert (group["groupName"], group["replicas"], group["minReplicas"], group["maxReplicas"]) == ("gpu", 2, 0, 4)
    pod = group["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert pod["containers"][0]["resources"]["limits"] == {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": 1}
    assert pod["containers"][0]["image"] == "REGISTRY/rayft:0.1.0"
    from rayft import __version__
    assert f"rayft=={__version__}" in yaml.safe_load(job["runtimeEnvYAML"])["pip"]
    serve = yaml.safe_load(a["RayService"]["spec"]["serveConfigV2"])["applications"][0]
    assert serve["args"]["serve"]["adapter_store"] == "/mnt/rayft/adapters"

    job_b = b["RayJob"]
    assert job_b["metadata"]["namespace"] == "ml-team"
    assert "--set storage.path" not in job_b["spec"]["entrypoint"]
    assert job_b["spec"]["entrypoint"].endswith("train jobs/configs/sft_k8s.yaml"), "relative to working_dir"
    assert yaml.safe_load(job_b["spec"]["runtimeEnvYAML"]) == {
        "working_dir": "s3://bucket/rayft.zip", "env_vars": {"TOKENIZERS_PARALLELISM": "false"}}
    groups = job_b["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert [g["groupName"] for g in groups] == ["cpu", "h100"]
    assert "nvidia.com/gpu" not in groups[0]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert groups[1]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 8
    for template in pod_templates(job_b["spec"]["rayClusterSpec"]):
        assert template["spec"]["serviceAccountName"] == "rayft-sa"
        assert all("persistentVolumeClaim" not in v for v in template["spec"]["volumes"])


def test_render_embeds_a_serve_config(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    args_file = tmp_path / "serve_args.yaml"
    args_file.write_text("model: builtin:smollm2-135m-instruct\nmax_batch_size: 4\n")
    full_file = tmp_path / "serve_full.yaml"
    full_file.write_text(yaml.safe_dump({"applications": [{"name": "x", "import_path": "rayft.serve.app:build_app",
                                                           "route_prefix": "/v1x", "args": {}}]}))
    for source, check in ((args_file, lambda app: app["args"] == {"model": "builtin:smollm2-135m-instruct",
                                                                    "max_batch_size": 4}),
                          (full_file, lambda app: app["name"] == "x" and app["route_prefix"] == "/v1x")):
        out = tmp_path / source.stem
        assert main(["k8s", "render", "jobs/configs/sft_tiny.yaml", "--out", str(out),
                     "--set", f"cluster.serve.config={source}"]) == 0
        app = yaml.safe_load(ray_docs([out / "rayservice.yaml"])["RayService"]["spec"]["serveConfigV2"])
        assert check(app["applications"][0]), app


@pytest.mark.parametrize("override, message", [
    ("cluster.worker_groups.0.replicaz=2", "cluster.worker_groups.0.replicaz: unknown key; did you mean 'replicas'?"),
    ("cluster.worker_groups.0.min_replicas=5", "need min_replicas <= replicas <= max_replicas"),
    ("cluster.head.cpu=lots", "cluster.head.cpu: 'lots' is not a Kubernetes quantity"),
    ("cluster.name=Ray_Cluster", "cluster.name: String should match pattern"),
])
def test_render_rejects_a_bad_cluster_section(override, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    assert main(["k8s", "render", "jobs/configs/sft_k8s.yaml", "--out", str(tmp_path), "--set", override]) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir()), "nothing is written for an invalid config"


# --- validation: negative cases -----------------------------------------------------------------

def _good_cluster() -> dict:
    return json.loads(json.dumps(ray_docs([REPO / "k8s" / "raycluster.yaml"])["RayCluster"]))


@pytest.mark.parametrize("mutate, expected", [
    (lambda d: d["spec"]["workerGroupSpecs"][0].update(replicaz=2),
     "spec.workerGroupSpecs[0].replicaz: unknown field; did you mean 'replicas'?"),
    (lambda d: d["spec"]["headGroupSpec"].update(rayStartParam={}),
     "spec.headGroupSpec.rayStartParam: unknown field; did you mean 'rayStartParams'?"),
    (lambda d: d["spec"].update(enableInTreeAutoscalling=True),
     "spec.enableInTreeAutoscalling: unknown field; did you mean 'enableInTreeAutoscaling'?"),
    (lambda d: d["spec"]["workerGroupSpecs"][0].update(minReplicas="1"),
     "spec.workerGroupSpecs[0].minReplicas: expected integer, got string '1'"),
    (lambda d: d["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resources"]["limits"]
     .update(cpu=0.5),
     "spec.workerGroupSpecs[0].template.spec.containers[0].resources.limits.cpu: expected an integer or a string"),
    (lambda d: d["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["resources"]["requests"]
     .update(memory="16 GB"),
     "spec.headGroupSpec.template.spec.containers[0].resources.requests.memory: '16 GB' is not a Kubernetes quantity"),
    (lambda d: d["spec"]["authOptions"].update(mode="tokens"), "spec.authOptions.mode: 'tokens' is not one of"),
    (lambda d: d["spec"]["headGroupSpec"]["rayStartParams"].update({"num-cpus": 0}),
     "spec.headGroupSpec.rayStartParams.num-cpus: expected string, got integer 0"),
    (lambda d: d["spec"]["workerGroupSpecs"][0].pop("groupName"),
     "spec.workerGroupSpecs[0]: 'groupName' is a required property"),
    (lambda d: d["metadata"].update(name="Rayft_Cluster"), "metadata.name: 'Rayft_Cluster' does not match"),
])
def test_a_misspelled_or_mistyped_field_is_caught_with_its_path(mutate, expected, crds):
    doc = _good_cluster()
    assert validate_doc(doc, crds).errors == []
    mutate(doc)
    errors = validate_doc(doc, crds, "x").errors
    assert any(expected in e for e in errors), errors


def test_validate_cli_picks_the_crd_per_document(tmp_path, capsys):
    bad_job = ray_docs([REPO / "k8s" / "rayjob.yaml"])["RayJob"]
    bad_job["spec"]["shutdownAfterJobFinish"] = True       # misspelled
    bad_job["spec"]["backoffLimit"] = "1"                   # mistyped
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"auth_token": "x"}}
    multi = tmp_path / "all.yaml"
    multi.write_text(yaml.safe_dump_all([_good_cluster(), bad_job, secret]))
    assert main(["k8s", "validate", str(multi), *crd_args()]) == 2
    out, err = capsys.readouterr()
    assert "ok      " in out and "RayCluster/rayft" in out
    assert "skipped " in out and "Secret/s" in out
    assert "INVALID " in err and "RayJob/rayft-sft-train" in err
    assert "spec.shutdownAfterJobFinish: unknown field; did you mean 'shutdownAfterJobFinishes'?" in err
    assert "spec.backoffLimit: expected integer, got string '1'" in err
    assert "1 of 2 manifest(s) do not match" in err
    assert "Traceback" not in err


def test_validate_cli_with_only_one_crd_and_a_kubectl_list(tmp_path, capsys):
    """`kubectl get crd rayjobs.ray.io -o yaml` gives one CRD; several give a `kind: List`."""
    listed = tmp_path / "crds.yaml"
    listed.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": [
        next(yaml.load_all(CRD_FILES[1].read_text(), Loader=yaml.CSafeLoader))]}))
    job, cluster = REPO / "k8s" / "rayjob.yaml", REPO / "k8s" / "raycluster.yaml"
    assert main(["k8s", "validate", str(job), str(cluster), "--crd", str(listed)]) == 0
    out = capsys.readouterr().out
    assert "ok      " in out and "RayJob/" in out and "skipped " in out and "RayCluster/" in out
    assert main(["k8s", "validate", str(cluster), "--crd", str(listed)]) == 2
    assert "no manifest matched a CRD" in capsys.readouterr().err


def test_validate_cli_reports_unreadable_input(tmp_path, capsys):
    broken = tmp_path / "broken.yaml"
    broken.write_text("apiVersion: ray.io/v1\nkind: RayCluster\nspec: [unclosed\n")
    assert main(["k8s", "validate", str(broken), *crd_args()]) == 2
    assert f"{broken}:" in capsys.readouterr().err
    not_a_crd = str(REPO / "k8s" / "storage.yaml")
    assert main(["k8s", "validate", str(REPO / "k8s" / "raycluster.yaml"), "--crd", not_a_crd]) == 2
    assert "no CustomResourceDefinition" in capsys.readouterr().err
    assert main(["k8s", "validate", str(tmp_path / "missing.yaml"), *crd_args()]) == 2
    assert "file not found" in capsys.readouterr().err


def test_strict_schema_follows_kubernetes_structural_rules():
    schema = yaml.safe_load(textwrap.dedent("""
        type: object
        properties:
          known: {type: string}
          quantity: {x-kubernetes-int-or-string: true}
          free: {type: object, x-kubernetes-preserve-unknown-fields: true, properties: {a: {type: integer}}}
          labels: {type: object, additionalProperties: {type: string}}
          maybe: {type: string, nullable: true}
    """))
    import jsonschema

    v = jsonschema.Draft7Validator(strict_schema(schema))
    assert v.is_valid({"known": "x", "quantity": 3, "free": {"a": 1, "anything": [1]}, "labels": {"k": "v"},
                       "maybe": None})
    assert v.is_valid({"quantity": "500m"})
    assert not v.is_valid({"unknown": 1}), "unknown fields are errors where the schema lists properties"
    assert not v.is_valid({"quantity": 0.5}) and not v.is_valid({"labels": {"k": 1}})
    assert "additionalProperties" not in schema, "the CRD schema itself is not modified"


def test_worker_pods_drain_themselves_and_take_bounds_from_an_elastic_range(tmp_path, crds, monkeypatch):
    """A worker pod's preStop hook turns Kubernetes' notice into Ray's preemption notice (a stage then
    checkpoints and moves, docs/resilience.md) within its grace period; an elastic worker range sets
    the first worker group's pod bounds unless the config sets them. Still valid against the CRDs."""
    from rayft.cluster.render import preemption_drain

    monkeypatch.chdir(REPO)
    sets = ["scaling.num_workers=2-4", "training.grad_accum=3", "scaling.resources_per_worker={CPU: 1}",
            'cluster.worker_groups=[{name: cpu, gpus: 0, cpu: "2", memory: 8Gi, termination_grace_s: 90}, '
            '{name: big, gpus: 0, cpu: "4", memory: 8Gi, replicas: 1, max_replicas: 3}]']
    assert main(["k8s", "render", "jobs/configs/sft_tiny.yaml", "--out", str(tmp_path),
                 *[a for s in sets for a in ("--set", s)]]) == 0
    for name in ("raycluster.yaml", "rayjob.yaml"):
        doc = yaml.safe_load((tmp_path / name).read_text())
        spec = doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"]["rayClusterSpec"]
        first, second = spec["workerGroupSpecs"]
        assert (first["replicas"], first["minReplicas"], first["maxReplicas"]) == (1, 1, 2)  # 2 workers per 2-CPU pod
        assert (second["replicas"], second["minReplicas"], second["maxReplicas"]) == (1, 0, 3)  # as configured
        pod = first["template"]["spec"]
        assert pod["terminationGracePeriodSeconds"] == 90
        command = pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"][-1]
        assert "ray drain-node --address auto --reason DRAIN_NODE_REASON_PREEMPTION" in command
        assert "--deadline-remaining-seconds 85 && sleep 85" in command
        for result in validate_file(tmp_path / name, crds):
            assert result.checked and not result.errors, "\n".join(result.errors)
    assert preemption_drain(8)["preStop"]["exec"]["command"][-1].count(" 3") == 2  # never a deadline below 1 s
    # The hand-written manifests carry the same hook.
    for path in K8S_FILES:
        if path.name != "storage.yaml":
            assert "DRAIN_NODE_REASON_PREEMPTION" in path.read_text(), path
