"""The team deployment files: docker-compose.yml against the Compose specification schema,
the service graph, secrets and ports; the Dockerfile's basics. (No Docker engine here: the
files are validated, not run.)"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$\$")


def read_env(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return env


def interpolate(value: object, env: dict[str, str]) -> object:
    """Compose-style ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error} and $$ escapes."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group(1), match.group(2), match.group(3)
        current = env.get(name)
        if op in (":-", "-"):
            return current if current not in (None, "") or (op == "-" and current is not None) else arg
        if op in (":?", "?"):
            if not current:
                raise KeyError(f"required variable {name} is not set: {arg}")
            return current
        if current is None:
            raise KeyError(f"variable {name} is used in docker-compose.yml but not defined in .env.example")
        return current

    return _VAR.sub(sub, value)


@pytest.fixture(scope="module")
def compose() -> dict:
    raw = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return interpolate(raw, read_env(ROOT / ".env.example"))


@pytest.fixture(scope="module")
def schema() -> dict:
    candidates = [
        Path(os.environ[v]) / ".." / "schemas" / "compose-spec.json" for v in ("REFINE_DATA_DIR",) if os.environ.get(v)
    ]
    candidates.append(ROOT.parent / "shared" / "schemas" / "compose-spec.json")
    for path in candidates:
        if path.is_file():
            return json.loads(path.read_text())
    pytest.skip("the Compose specification schema (shared/schemas/compose-spec.json) is not beside the checkout")


def test_compose_file_is_valid_against_the_compose_spec(compose: dict, schema: dict) -> None:
    import jsonschema

    jsonschema.Draft7Validator(schema).validate(compose)


ONE_SHOT = {"minio-init", "work-pool-init"}


def test_service_graph(compose: dict) -> None:
    services = compose["services"]
    assert {
        "postgres",
        "prefect-server",
        "mlflow",
        "worker",
        "minio",
        "minio-init",
        "work-pool-init",
    } <= services.keys()
    for name, service in services.items():
        if name in ONE_SHOT:  # init jobs run once and exit; their dependents wait for success
            assert service["restart"] == "no" and "healthcheck" not in service, name
        else:
            assert "healthcheck" in service and service["healthcheck"]["test"], f"{name} has no healthcheck"
        for target, condition in (service.get("depends_on") or {}).items():
            assert target in services, f"{name} depends on unknown service {target}"
            wanted = "service_completed_successfully" if target in ONE_SHOT else "service_healthy"
            assert condition["condition"] == wanted, f"{name} -> {target} waits for {condition['condition']}"
    assert services["mlflow"]["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"
    assert services["worker"]["depends_on"]["work-pool-init"]["condition"] == "service_completed_successfully"
    worker = services["worker"]["environment"]
    assert worker["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert worker["REFINE_LEDGER_URL"].split("@")[1].startswith("postgres:5432/")
    assert "build" in services["worker"]
    # the optional Dask cluster shares the worker's environment and state
    for name in ("dask-scheduler", "dask-worker"):
        assert services[name]["profiles"] == ["dask"]
    dask_worker = services["dask-worker"]
    assert "tcp://dask-scheduler:8786" in dask_worker["command"]
    assert dask_worker["environment"]["REFINE_LEDGER_URL"] == worker["REFINE_LEDGER_URL"]
    assert dask_worker["volumes"] == services["worker"]["volumes"]
    for volume in compose["volumes"]:
        assert any(volume in str(s.get("volumes", [])) for s in services.values())


def test_secrets_come_from_files_and_reach_no_command_line(compose: dict) -> None:
    """Passwords only through Compose secrets (*_FILE variables): none is interpolated anywhere,
    every /run/secrets/X a service reads is a secret it mounts, the ledger URL holds no password."""
    text = (ROOT / "docker-compose.yml").read_text()
    raw = yaml.safe_load(text)
    assert not re.search(r"\$\{[A-Z_]*(PASSWORD|SECRET|API_KEY)[A-Z_]*(?<!_FILE)(:[-?][^}]*)?\}", text), (
        "a password is interpolated into the compose file"
    )
    for name, secret in raw["secrets"].items():
        assert re.fullmatch(r"\$\{[A-Z0-9_]+_FILE:\?.+\}", secret["file"]), f"secret {name} is not a required *_FILE"
    for name, service in raw["services"].items():
        body = yaml.safe_dump(service)
        for secret in re.findall(r"/run/secrets/([a-z0-9_]+)", body):
            assert secret in service.get("secrets", []), f"{name} reads /run/secrets/{secret} without mounting it"
        for part in (service.get("command") or []) + (service.get("entrypoint") or []):
            assert "PASSWORD=" not in str(part) or "$(cat /run/secrets/" in str(part), f"{name}: {part}"
    from sqlalchemy.engine import make_url

    x_env = compose["x-refine-env"]
    assert (
        make_url(x_env["REFINE_LEDGER_URL"]).username == "refine"
        and make_url(x_env["REFINE_LEDGER_URL"]).password is None
    )
    assert x_env["REFINE_LEDGER_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    assert x_env["ANTHROPIC_API_KEY_FILE"] == "/run/secrets/anthropic_api_key"
    # required settings fail with a message, not an empty string
    for name in ("POSTGRES_USER", "S3_ACCESS_KEY"):
        assert re.search(r"\$\{" + name + r":\?[^}]+\}", text), name


def test_a_ledger_password_comes_from_its_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.storage import ledger_url

    secret = tmp_path / "pw"
    secret.write_text("s3cr3t\n")
    monkeypatch.setenv("REFINE_LEDGER_URL", "postgresql+psycopg2://refine@db:5432/refine_ledger")
    monkeypatch.setenv("REFINE_LEDGER_PASSWORD_FILE", str(secret))
    assert ledger_url() == "postgresql+psycopg2://refine:s3cr3t@db:5432/refine_ledger"
    monkeypatch.setenv("REFINE_LEDGER_PASSWORD_FILE", str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="REFINE_LEDGER_PASSWORD_FILE=.*cannot be read"):
        ledger_url()


def test_the_prefect_image_is_the_version_the_packages_resolve_to(compose: dict) -> None:
    from importlib.metadata import version

    for name in ("prefect-server", "work-pool-init"):
        image = compose["services"][name]["image"]
        assert image.startswith(f"prefecthq/prefect:{version('prefect')}-python3.11"), (name, image)


def test_one_constraints_file_for_the_makefile_ci_and_the_image() -> None:
    pins = {
        name.lower().replace("_", "-"): pin
        for name, pin in (
            line.split("==", 1)
            for line in (ROOT / "constraints.txt").read_text().splitlines()
            if line and not line.startswith("#")
        )
    }
    from importlib.metadata import version

    for package in ("prefect", "mlflow", "sentence-transformers", "sqlalchemy", "anthropic"):
        assert pins[package] == version(package), package  # the environment the tests run in
    assert pins["mlflow"] == "3.17.2" and pins["torch"].startswith("2.13.0")
    makefile = (ROOT / "Makefile").read_text()
    assert (
        makefile.count("-c constraints.txt") >= 3 and "constraints.txt" in makefile.split("$(STAMP):")[1].split("\n")[0]
    )
    assert "make test" in (ROOT / ".ci" / "run").read_text()  # CI installs through the Makefile
    docker = (ROOT / "Dockerfile").read_text()
    assert "COPY constraints.txt" in docker and docker.count("-c constraints.txt") >= 2
    # dependencies are installed before the code is copied (a code change keeps the dependency layers)
    assert docker.index('".[team]"') < docker.index("COPY refine_core")
    # every package the project installs is in the image
    import tomllib

    included = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    for package in (p.rstrip("*") for p in included):
        assert f"COPY {package} ./{package}" in docker, package


def test_compose_and_the_rehearsal_describe_the_same_stack(compose: dict) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("rehearse", ROOT / "deploy" / "rehearse.py")
    rehearse = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rehearse)
    services = compose["services"]
    assert set(rehearse.SERVICES) == set(services)
    assert set(rehearse.WORKER_SETTINGS) <= set(services["worker"]["environment"])
    assert set(rehearse.WORKER_SETTINGS) <= set(services["dask-worker"]["environment"])
    assert services["prefect-server"]["environment"]["PREFECT_SERVER_DATABASE_DRIVER"] == rehearse.PREFECT_DB_DRIVER
    mlflow_command = " ".join(services["mlflow"]["command"])
    assert all(flag in mlflow_command for flag in rehearse.MLFLOW_FLAGS)
    assert "MLFLOW_BACKEND_STORE_URI" in mlflow_command and "--backend-store-uri" not in mlflow_command
    assert services["mlflow"]["environment"]["ARTIFACT_BUCKET"] == rehearse.BUCKET
    assert rehearse.POOL in services["worker"]["command"] and rehearse.POOL in services["work-pool-init"]["command"]
    assert set(rehearse.DATABASES) == {
        services["postgres"]["environment"][k] for k in ("PREFECT_DB", "MLFLOW_DB", "LEDGER_DB")
    }


def test_ports_are_bound_to_localhost(compose: dict) -> None:
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond 127.0.0.1"


def test_no_literal_secrets() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    raw = yaml.safe_load(text)
    secretish = re.compile(r"(PASSWORD|SECRET|API_KEY|TOKEN|ACCESS_KEY)", re.I)

    def walk(node: object, path: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if secretish.search(str(k)) and isinstance(v, str):
                    mounted = str(k).endswith("_FILE") and v.startswith("/run/secrets/")  # a Compose secret's path
                    assert mounted or (v.startswith("${") and v.endswith("}")), f"{path}.{k} holds a literal value"
                walk(v, f"{path}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]")

    walk(raw, "compose")
    assert "change-me" not in text
    env_example = read_env(ROOT / ".env.example")
    assert not any("PASSWORD" in k and not k.endswith("_FILE") for k in env_example)
    assert env_example["ANTHROPIC_API_KEY_FILE"] == "./secrets/anthropic_api_key"
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert ".env" in ignored and "secrets/" in ignored


def test_dockerfile_basics() -> None:
    text = (ROOT / "Dockerfile").read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert froms, "no FROM"
    for image in froms:
        name, _, tag = image.partition(":")
        assert tag and tag != "latest" and re.search(r"\d", tag), f"base image {image} is not pinned"
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0"), "the image must run as a non-root user"
    for line in re.findall(r"^(?:ENV|ARG)\s+(.*)$", text, re.M):
        assert not re.search(r"(PASSWORD|SECRET|API_KEY|TOKEN)\s*=\s*\S", line, re.I), f"secret in Dockerfile: {line}"
    assert "torch==2.13.0" in text


def test_interpolation_helper() -> None:
    env = {"A": "1", "E": ""}
    assert interpolate("${A}-${B:-x}-${E:-y}-${E-z}-$$HOME", env) == "1-x-y--$HOME"
    with pytest.raises(KeyError, match="B is used"):
        interpolate("${B}", env)


def test_deployments_are_named_by_their_config_never_replaced_silently_and_triggered_by_name(
    platform: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 32: `refine serve` and `refine deploy` both defaulted to the name `refine-sweep`, so
    deploying one config took over another's deployment; no `refine` command started a deployment
    (the printed `prefect deployment run` needed PREFECT_API_URL exported)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL
    from typer.testing import CliRunner

    from evaluations.config import BenchmarkSpec, SweepConfig
    from flows.cli import app
    from flows.schedule import ScheduleError, check_deployment_free, deploy_to_pool, trigger

    def parameters(name: str) -> dict:
        return {"config": SweepConfig(name=name, benchmarks=[BenchmarkSpec(name="clinc150")]).model_dump(mode="json")}

    deploy_to_pool(parameters("alpha"), name="alpha", pool="named-pool", cron=None, env={})
    check_deployment_free("alpha", "alpha", replace=False)  # the same config again: an update
    check_deployment_free("beta", "beta", replace=False)  # a new name
    with pytest.raises(ScheduleError, match=r"refine-sweep/alpha already runs sweep 'alpha', not 'beta'"):
        check_deployment_free("alpha", "beta", replace=False)
    check_deployment_free("alpha", "beta", replace=True)

    run_id, _ = trigger("alpha")
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
    assert run.state is not None and run.state.type.value == "SCHEDULED"
    with pytest.raises(ScheduleError, match=r"no deployment refine-sweep/gamma .* alpha"):
        trigger("gamma")

    # the commands: deploy takes the config's name, refuses another config's, triggers by name
    monkeypatch.setenv("PREFECT_API_URL", str(PREFECT_API_URL.value()))
    config = tmp_path / "beta.yaml"
    config.write_text("name: alpha-other\nbenchmarks: [{name: clinc150, queries: 5}]\n")
    taken = CliRunner().invoke(app, ["deploy", str(config), "--pool", "named-pool", "--name", "alpha"])
    assert taken.exit_code == 2 and "already runs sweep 'alpha'" in taken.stderr, taken.output
    named = CliRunner().invoke(app, ["deploy", str(config), "--pool", "named-pool"])
    assert named.exit_code == 0, named.output
    assert "refine-sweep/alpha-other" in named.stdout and "refine trigger alpha-other" in named.stdout
    now = CliRunner().invoke(app, ["trigger", "alpha-other"])
    assert now.exit_code == 0 and "scheduled now" in now.stdout, now.output
