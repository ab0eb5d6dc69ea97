"""Settings come from DATABITE_* variables and fail early with the variable's name."""

from __future__ import annotations

from pathlib import Path

import pytest

from databite_stream.settings import Settings, SettingsError


def test_defaults_work_without_any_variable() -> None:
    s = Settings.from_env({})
    assert s.broker == "127.0.0.1:9092"
    assert s.partitions == 8
    assert s.topic("results") == "databite.results"


def test_variables_are_read_and_coerced() -> None:
    s = Settings.from_env(
        {"DATABITE_PARTITIONS": "3", "DATABITE_STORE": "rocksdb://", "DATABITE_BROKER": "a:1,b:2"}
    )
    assert (s.partitions, s.store, s.broker) == (3, "rocksdb://", "a:1,b:2")


def test_outbox_linger_reaches_the_outbox(tmp_path: Path) -> None:
    from databite_stream.stream.app import StreamApp

    assert Settings.from_env({}).outbox_linger_ms == 10
    env = {"DATABITE_OUTBOX_LINGER_MS": "25", "DATABITE_DATA_DIR": str(tmp_path)}
    sa = StreamApp(Settings.from_env(env))
    assert sa.outbox.linger_s == 0.025


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DATABITE_PARTITONS": "3"}, "unknown setting DATABITE_PARTITONS"),
        ({"DATABITE_STORE": "redis://"}, "DATABITE_STORE: Value error, must be memory:// or"),
        ({"DATABITE_PARTITIONS": "zero"}, "DATABITE_PARTITIONS"),
        ({"DATABITE_BROKER": "localhost"}, "DATABITE_BROKER: Value error, 'localhost' is not"),
        ({"DATABITE_OVERLAP": "sometimes"}, "DATABITE_OVERLAP"),
        ({"DATABITE_OUTBOX_LINGER_MS": "5000"}, "DATABITE_OUTBOX_LINGER_MS: Input should be less"),
        ({"DATABITE_FETCH_MAX_WAIT_MS": "0"}, "DATABITE_FETCH_MAX_WAIT_MS: Input should be"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_devkafka_variables_are_not_worker_settings() -> None:
    assert Settings.from_env({"DATABITE_KAFKA_VERSION": "3.9.1"}).partitions == 8
