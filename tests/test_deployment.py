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
    candidates = [Path(os.environ[v]) / ".." / "schemas" / "compose-spec.json" for v in ("REFINE_DATA_DIR",) if os.environ.get(v)]
    candidates.append(ROOT.parent / "shared" / "schemas" / "compose-spec.json")
    for path in candidates:
        if path.is_file():
            return json.loads(path.read_text())
    pytest.skip("the Compose specification schema (shared/schemas/compose-spec.json) is not beside the checkout")


def test_compose_file_is_valid_against_the_compose_spec(compose: dict, schema: dict) -> None:
    import jsonschema

    jsonschema.Draft7Validator(schema).validate(compose)


def test_service_graph(compose: dict) -> None:
    services = compose["services"]
    assert {"postgres", "prefect-server", "mlflow", "worker", "minio", "minio-init"} <= services.keys()
    for name, service in services.items():
        assert "healthcheck" in service and service["healthcheck"]["test"], f"{name} has no healthcheck"
        for target, condition in (service.get("depends_on") or {}).items():
            assert target in services, f"{name} depends on unknown service {target}"
            assert condition["condition"] == "service_healthy", f"{name} -> {target} does not wait for health"
    assert services["worker"]["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert services["worker"]["environment"]["REFINE_LEDGER_URL"].split("@")[1].startswith("postgres:5432/")
    assert "build" in services["worker"]
    # the optional Dask cluster shares the worker's environment and state
    for name in ("dask-scheduler", "dask-worker"):
        assert services[name]["profiles"] == ["dask"]
    dask_worker = services["dask-worker"]
    assert "tcp://dask-scheduler:8786" in dask_worker["command"]
    assert dask_worker["environment"]["REFINE_LEDGER_URL"] == services["worker"]["environment"]["REFINE_LEDGER_URL"]
    assert dask_worker["volumes"] == services["worker"]["volumes"]
    for volume in compose["volumes"]:
        assert any(volume in str(s.get("volumes", [])) for s in services.values())


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
                    assert v.startswith("${") and v.endswith("}"), f"{path}.{k} holds a literal value"
                walk(v, f"{path}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]")

    walk(raw, "compose")
    assert "change-me" not in text
    env_example = read_env(ROOT / ".env.example")
    assert env_example["ANTHROPIC_API_KEY"] == ""
    assert ".env" in (ROOT / ".gitignore").read_text().splitlines()


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
