"""Redactor: secrets masked everywhere, in any encoding, never short values."""

from __future__ import annotations

import gc

from databite_stream.redact import MASK, Redactor, collect_secrets, mask_values

SECRET = "sk_live_Zx9/+q=="


def test_masks_secrets_in_text_and_nested_structures() -> None:
    red = Redactor.for_configs(connection={"token": SECRET, "nested": {"list": ["other-secret"]}})
    text = f"GET /x?token={SECRET} failed; also other-secret"
    assert red.text(text) == f"GET /x?token={MASK} failed; also {MASK}"
    data = {"a": [SECRET, {"b": (f"pre{SECRET}post", 3)}], SECRET: "key kept"}
    assert red.redact(data) == {"a": [MASK, {"b": (f"pre{MASK}post", 3)}], SECRET: "key kept"}
    assert data["a"][0] == SECRET  # input untouched


def test_masks_url_encoded_and_json_escaped_forms() -> None:
    red = Redactor([SECRET, 'quote"me\\now'])
    assert SECRET not in red.text("sk_live_Zx9%2F%2Bq%3D%3D")
    assert MASK in red.text("sk_live_Zx9%2F%2Bq%3D%3D")
    assert red.text('{"t": "quote\\"me\\\\now"}') == '{"t": "***"}'


def test_longest_secret_wins_and_short_values_are_ignored() -> None:
    red = Redactor(["abcd", "abcdefgh", "eu", ""])
    assert red.text("xabcdefghx abcd eu") == f"x{MASK}x {MASK} eu"
    assert red.secrets == frozenset({"abcd", "abcdefgh"})


def test_integration_config_only_secret_keys() -> None:
    red = Redactor.for_configs(
        integration={
            "base_url": "https://api.example.com",
            "client_secret": "s3cr3t-value",
            "oauth": {"private_key": "-----KEY-----"},
        }
    )
    assert red.secrets == {"s3cr3t-value", "-----KEY-----"}
    assert collect_secrets({"n": 12345, "s": "abcd"}) == {"abcd"}


def test_with_secrets_adds_and_empty_redactor_is_identity() -> None:
    red = Redactor().with_secrets(["new-token-123"])
    assert red.text("new-token-123") == MASK
    assert Redactor().redact({"x": "y"}) == {"x": "y"}


def test_mask_values_keeps_keys() -> None:
    assert mask_values({"a": 1, "b": "x"}) == {"a": MASK, "b": MASK}


def test_masks_the_same_whichever_method_is_used_first() -> None:
    # the pattern is built on first use; redact() of a structure, then text(), and the
    # other order give the same masking
    config = {"token": SECRET, "n": 3, "flag": True, "none": None, "f": 1.5}
    first = Redactor.for_configs(connection=config)
    assert first.redact({"x": [SECRET, 3, None]}) == {"x": [MASK, 3, None]}
    assert first.text(f"t={SECRET}") == f"t={MASK}"
    second = Redactor(first.secrets)
    assert second.text(f"t={SECRET}") == f"t={MASK}"
    assert second.redact((SECRET, 1.5)) == (MASK, 1.5)
    assert first.secrets == frozenset({SECRET})  # numbers, booleans and None are not secrets


def test_building_a_redactor_leaves_no_garbage_cycles() -> None:
    # a worker with more connections than the memo builds one per run: cycles would pile
    # up between collections (the worker collects young objects rarely, see stream/heap.py)
    gc.collect()
    gc.disable()
    try:
        for i in range(200):
            config = {"token": f"{SECRET}-{i}", "nested": {"list": [f"other-{i}-secret", 1]}}
            red = Redactor.for_configs(connection=config, integration={"client_secret": "s3cr3t!"})
            assert red.text(f"{SECRET}-{i}") == MASK
        assert gc.collect() == 0
    finally:
        gc.enable()


def test_a_deferred_redactor_masks_like_for_configs_once_it_meets_a_string() -> None:
    connection = {"token": f"{SECRET}-deferred", "region": "eu"}
    integration = {"client_secret": "integration-secret", "base_url": "https://api.example"}
    lazy = Redactor.deferred(connection=connection, integration=integration)
    eager = Redactor.for_configs(connection=connection, integration=integration)
    assert repr(lazy) == "Redactor(deferred)"
    # what a no-op run masks (its checkpoint): no string, so nothing is looked up or built
    assert lazy.redact({"offset": 250, "done": True, "cursor": None}) == {
        "offset": 250,
        "done": True,
        "cursor": None,
    }
    assert repr(lazy) == "Redactor(deferred)"
    text = f"token={SECRET}-deferred secret=integration-secret url=https://api.example"
    assert lazy.text(text) == eager.text(text)
    assert lazy.text(text) == f"token={MASK} secret={MASK} url=https://api.example"
    assert lazy.secrets == eager.secrets == {f"{SECRET}-deferred", "integration-secret"}
    assert Redactor.deferred(connection=connection).redact([{"t": f"{SECRET}-deferred"}]) == [
        {"t": MASK}
    ]
    refreshed = Redactor.deferred(connection=connection).with_secrets(["new-token-1"])
    assert refreshed.text(f"{SECRET}-deferred new-token-1") == f"{MASK} {MASK}"
