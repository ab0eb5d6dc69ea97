"""The broker launcher's pure parts and its error paths (no broker needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from databite_stream import devkafka


def test_missing_maven_gives_an_actionable_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # neither mvn nor java on PATH
    with pytest.raises(devkafka.BrokerError, match=r"`mvn` is not on PATH: install Apache Maven"):
        devkafka.fetch_jars("4.0.1", home=tmp_path / "home")


def test_missing_java_gives_an_actionable_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(devkafka.BrokerError, match=r"`java` is not on PATH: install a Java 17"):
        devkafka._java()


def test_unsupported_version_is_refused(tmp_path: Path) -> None:
    with pytest.raises(devkafka.BrokerError, match="not supported here"):
        devkafka.fetch_jars("2.8.0", home=tmp_path)


@pytest.mark.parametrize(
    ("version", "backend"),
    [("4.0.1", "log4j-slf4j-impl"), ("3.9.1", "slf4j-reload4j")],
)
def test_pom_adds_the_logging_backend_the_tarball_ships(version: str, backend: str) -> None:
    pom = devkafka._pom(version)
    assert f"<version>{version}</version>" in pom
    assert backend in pom


def test_free_ports_are_distinct() -> None:
    ports = devkafka._free_ports(6)
    assert len(set(ports)) == 6


def test_docker_compose_matches_the_launcher_settings() -> None:
    compose = yaml.safe_load((Path(__file__).parents[2] / "docker-compose.yml").read_text())
    env = compose["services"]["kafka"]["environment"]
    as_props = {k.removeprefix("KAFKA_").lower().replace("_", "."): v for k, v in env.items()}
    for key, value in devkafka._SERVER_DEFAULTS.items():
        if key in ("controller.listener.names", "inter.broker.listener.name"):
            assert as_props[key] == value
        elif key == "listener.security.protocol.map":
            assert value in as_props[key]
        else:
            assert as_props.get(key) == value, f"docker-compose.yml disagrees on {key}"
    assert compose["services"]["kafka"]["image"] == f"apache/kafka:{devkafka.DEFAULT_KAFKA_VERSION}"
    assert compose["services"]["worker"]["environment"]["DATABITE_BROKER"] == "kafka:19092"
