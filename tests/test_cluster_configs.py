"""cluster/: every YAML loads and has what the Ray cluster launcher and KubeRay need; entrypoints are real.

Launcher configs are also checked against Ray's own schema (``ray.autoscaler`` fills the provider defaults
and validates, as ``ray up`` does, without contacting a cloud).
"""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = ROOT / "cluster"
YAMLS = sorted(CLUSTER.rglob("*.yaml"))
DOCUMENTS = [(path, doc) for path in YAMLS for doc in yaml.safe_load_all(path.read_text()) if doc]
LAUNCHER = [(p, d) for p, d in DOCUMENTS if "provider" in d]
KUBERAY = [(p, d) for p, d in DOCUMENTS if str(d.get("apiVersion", "")).startswith("ray.io/")]

# GPUs per instance of the types the configs name, from the providers' instance documentation.
AWS_GPUS = {"g5.xlarge": 1, "g5.12xlarge": 4, "g6.xlarge": 1, "p4d.24xlarge": 8, "p5.48xlarge": 8}
GCP_GPUS = {"a2-highgpu-1g": 1, "a2-highgpu-8g": 8, "a3-highgpu-8g": 8, "g2-standard-8": 1}


def ids(items):
    return [f"{p.relative_to(ROOT)}:{d.get('kind') or d.get('cluster_name')}" for p, d in items]


def test_every_yaml_is_a_launcher_config_or_a_kuberay_resource():
    assert YAMLS, "cluster/ holds no YAML"
    assert {p for p, _ in DOCUMENTS} == set(YAMLS)
    assert len(LAUNCHER) + len(KUBERAY) == len(DOCUMENTS)
    assert {d["provider"]["type"] for _, d in LAUNCHER} == {"aws", "gcp"}
    assert {d["kind"] for _, d in KUBERAY} == {"RayCluster", "RayJob"}


@pytest.mark.parametrize("path,config", LAUNCHER, ids=ids(LAUNCHER))
def test_launcher_config(path, config):
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(yaml.safe_load(path.read_text())))  # Ray's schema, as `ray up` checks it
    assert config["cluster_name"] and isinstance(config["max_workers"], int)
    provider = config["provider"]
    assert provider["region"]
    if provider["type"] == "gcp":
        assert provider["project_id"]
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    assert config["setup_commands"] and any("enformer-batch" in c for c in config["setup_commands"])
    gpu_types = {}
    for name, node in types.items():
        assert {"resources", "min_workers", "max_workers", "node_config"} <= set(node), name
        assert 0 <= node["min_workers"] <= node["max_workers"] <= config["max_workers"], name
        if node["resources"].get("GPU"):
            gpu_types[name] = node
    assert gpu_types, "no GPU worker type"
    assert "GPU" not in types[config["head_node_type"]]["resources"]
    for name, node in gpu_types.items():
        declared, node_config = node["resources"]["GPU"], node["node_config"]
        if provider["type"] == "aws":
            assert AWS_GPUS[node_config["InstanceType"]] == declared, name
        else:
            assert GCP_GPUS[node_config["machineType"]] == declared, name
            accelerators = node_config["guestAccelerators"]
            assert sum(a["acceleratorCount"] for a in accelerators) == declared, name
            scheduling = node_config["scheduling"]
            # GCE's Scheduling is an object; GPU VMs must terminate on host maintenance.
            assert isinstance(scheduling, dict) and scheduling["onHostMaintenance"] == "TERMINATE", name
            if scheduling.get("preemptible"):
                assert scheduling.get("automaticRestart") is False, name
    if provider["type"] == "aws":
        spot = [n for n in gpu_types.values() if "InstanceMarketOptions" in n["node_config"]]
        assert spot and all(n["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot" for n in spot)
        assert {"g5.xlarge", "p4d.24xlarge", "p5.48xlarge"} <= {n["node_config"]["InstanceType"]
                                                               for n in gpu_types.values()}
    else:
        kinds = {a["acceleratorType"] for n in gpu_types.values()
                 for a in n["node_config"]["guestAccelerators"]}
        assert {"nvidia-tesla-a100", "nvidia-h100-80gb"} <= kinds


def check_pod_groups(spec: dict) -> None:
    """A RayCluster spec: head and worker groups as KubeRay requires, GPUs requested and tolerated."""
    head = spec["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict)
    # KubeRay passes rayStartParams through as strings; a YAML number here is rejected by the CRD.
    assert all(isinstance(v, str) for v in head["rayStartParams"].values())
    assert head["template"]["spec"]["containers"][0]["image"].startswith("rayproject/ray:")
    assert spec["workerGroupSpecs"]
    for group in spec["workerGroupSpecs"]:
        assert group["groupName"] and isinstance(group["rayStartParams"], dict)
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        pod = group["template"]["spec"]
        limits = pod["containers"][0]["resources"]["limits"]
        assert int(limits["nvidia.com/gpu"]) >= 1
        assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])


@pytest.mark.parametrize("path,resource", KUBERAY, ids=ids(KUBERAY))
def test_kuberay_resource(path, resource):
    assert resource["apiVersion"] == "ray.io/v1"
    assert resource["metadata"]["name"]
    spec = resource["spec"]
    if resource["kind"] == "RayCluster":
        check_pod_groups(spec)
        return
    assert resource["kind"] == "RayJob"
    assert spec["entrypoint"].strip()
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert any(p.startswith("enformer-batch") for p in runtime_env["pip"])
    assert spec["shutdownAfterJobFinishes"] is True
    check_pod_groups(spec["rayClusterSpec"])


def job_commands() -> list[tuple[str, list[str]]]:
    """Every `python jobs/<name>.py ARGS` named in cluster/ (RayJob entrypoints and documented commands)."""
    found = []
    for path, resource in KUBERAY:
        if resource["kind"] == "RayJob":
            argv = shlex.split(resource["spec"]["entrypoint"])
            assert argv[0] in ("python", "python3"), argv
            found.append((str(path.name), argv[1:]))
    for path in [*YAMLS, CLUSTER / "README.md"]:
        text = path.read_text().replace("\\\n", " ")
        for line in text.splitlines():
            line = line.lstrip("# ").strip()
            match = re.search(r"python3? (\S*jobs/\w+\.py.*)$", line)
            if match:
                found.append((path.name, shlex.split(match.group(1).split("`")[0])))
    return found


def test_job_entrypoints_name_real_jobs_and_parse():
    commands = job_commands()
    assert {Path(c[1][0]).name for c in commands} >= {"genome_atlas.py", "regions.py"}
    for where, argv in commands:
        script = ROOT / "jobs" / Path(argv[0]).name  # /app/jobs/x.py in a pod is jobs/x.py here
        assert script.is_file(), f"{where}: {argv[0]} does not exist"
        spec = importlib.util.spec_from_file_location(f"job_{script.stem}", script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        args = module.parse_args(argv[1:])  # the documented flags are ones the job accepts
        assert args.out


def test_readme_costs_are_the_planners(capsys):
    """cluster/README.md quotes `enformer-batch plan` on cluster/hg38.chrom.sizes; the numbers must match."""
    from enformer_batch.estimate import plan_run

    readme = (CLUSTER / "README.md").read_text()
    plan = plan_run(str(CLUSTER / "hg38.chrom.sizes"), model="enformer", gpu="A10G")
    assert f"{plan.windows:,}" in readme and f"{plan.bins:,}" in readme
    for gpu in ("A10G", "L4", "A100", "H100"):
        p = plan_run(str(CLUSTER / "hg38.chrom.sizes"), model="enformer", gpu=gpu)
        assert f"${p.cost:,.2f}" in readme, gpu
