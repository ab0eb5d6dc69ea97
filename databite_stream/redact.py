"""Secret redaction: connection secrets never leave the process in clear text.

This module owns one job: given the secrets of a connection (every string value of its
config) and the secret-looking values of its integration config (``client_secret``,
``api_key``...), replace each occurrence of them in text or in nested JSON-like structures
with :data:`MASK`.

Invariants:

* A secret is any string value of length >= :data:`MIN_SECRET_LENGTH` found anywhere in a
  connection config (nested dicts and lists included). Shorter values (``"eu"``, ``"v2"``)
  are not treated as secrets: masking them would shred every message and they are not
  credentials.
* Longer secrets are replaced before shorter ones, so a secret that contains another one is
  masked whole. URL-encoded and JSON-escaped forms of each secret are masked too (a token that
  ends up in a query string or a serialized body is still caught).
* :meth:`Redactor.redact` never mutates its input; it returns new containers and keeps dict
  keys (keys are schema, not data).

Pure core: imports only the standard library and orjson.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any, Final
from urllib.parse import quote, quote_plus

import orjson

__all__ = (
    "MASK",
    "MIN_SECRET_LENGTH",
    "SECRET_KEY_PATTERN",
    "Redactor",
    "collect_secrets",
    "mask_values",
)

MASK: Final = "***"
MIN_SECRET_LENGTH: Final = 4
# Keys of an *integration* config whose values are secrets. A connection config is secret as
# a whole; an integration config mixes public settings (base_url) with credentials.
SECRET_KEY_PATTERN: Final = re.compile(
    r"secret|token|passw(or)?d|api[_-]?key|private|credential|auth|signing", re.IGNORECASE
)


def collect_secrets(value: object, *, only_secret_keys: bool = False) -> set[str]:
    """Every string of length >= MIN_SECRET_LENGTH inside ``value``.

    With ``only_secret_keys``, only values under a dict key matching
    :data:`SECRET_KEY_PATTERN` (at any depth) are collected.
    """
    found: set[str] = set()
    _walk(value, not only_secret_keys, found)
    return found


def _walk(node: object, secret_context: bool, found: set[str]) -> None:
    # a module function, not a closure: a recursive closure is a reference cycle (function
    # <-> cell) that only the garbage collector frees, two per run whose redactor is not
    # memoized (~50k objects a second at 10,000 runs/s, collected in ~1 s pauses)
    if isinstance(node, str):
        if secret_context and len(node) >= MIN_SECRET_LENGTH:
            found.add(node)
    elif node is None or isinstance(node, int | float):
        return  # the common leaves, before the (slower) abstract Mapping check
    elif isinstance(node, dict | Mapping):
        for key, child in node.items():
            _walk(child, secret_context or bool(SECRET_KEY_PATTERN.search(str(key))), found)
    elif isinstance(node, list | tuple | set | frozenset):
        for child in node:
            _walk(child, secret_context, found)


def mask_values(config: Mapping[str, Any]) -> dict[str, str]:
    """The config's keys with every value replaced by MASK (for ``repr`` of models)."""
    return dict.fromkeys(config, MASK)


def _variants(secret: str) -> set[str]:
    forms = {secret, quote(secret, safe=""), quote_plus(secret), json.dumps(secret)[1:-1]}
    return {form for form in forms if len(form) >= MIN_SECRET_LENGTH}


_CACHE_SIZE = 16_384
#: an OrderedDict for its O(1) popitem: evicting from the front of a plain dict with
#: ``next(iter(d))`` scans the deleted slots first (~5 µs a miss once full)
_BY_CONFIGS: OrderedDict[bytes, Redactor] = OrderedDict()


class Redactor:
    """Replaces known secrets with MASK in strings and JSON-like structures.

    Args:
        secrets: the secret strings; values shorter than MIN_SECRET_LENGTH are ignored.
    """

    __slots__ = ("_base", "_compiled", "_configs", "_pattern", "_secrets")

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        #: None until a deferred redactor (:meth:`deferred`) is first asked to mask something
        self._secrets: frozenset[str] | None = frozenset(
            s for s in secrets if isinstance(s, str) and len(s) >= MIN_SECRET_LENGTH
        )
        self._configs: tuple[Mapping[str, Any] | None, Mapping[str, Any] | None] | None = None
        self._base: Redactor | None = None  # the memoized redactor a deferred one resolved to
        # compiled on first use: most runs never mask a string (a no-op sync, a run without
        # records or errors), and compiling was ~40 µs, paid by every run of a connection
        # whose redactor is not memoized (more connections than the memo holds)
        self._pattern: re.Pattern[str] | None = None
        self._compiled = False

    @classmethod
    def deferred(
        cls,
        *,
        connection: Mapping[str, Any] | None = None,
        integration: Mapping[str, Any] | None = None,
    ) -> Redactor:
        """:meth:`for_configs`, looked up (or built) only once something is to be masked.

        A run that masks nothing (a sync without records or errors) then never pays for it:
        with more connections running than the memo holds, the lookup and build were ~3-4 %
        of a busy executor's CPU. The configs must not change meanwhile (runs hold their own).
        """
        red = cls()
        red._secrets = None
        red._configs = (connection, integration)
        return red

    def _known(self) -> frozenset[str]:
        secrets = self._secrets
        if secrets is None:
            assert self._configs is not None
            connection, integration = self._configs
            base = self._base = Redactor.for_configs(connection=connection, integration=integration)
            secrets = self._secrets = base._known()
            self._configs = None
        return secrets

    def _masker(self) -> re.Pattern[str] | None:
        if not self._compiled:
            secrets = self._known()
            if self._base is not None:
                self._pattern = self._base._masker()  # compiled once for the memo's entry
            else:
                forms = {form for s in secrets for form in _variants(s)}
                # Longest first: the regex alternation takes the first branch that matches.
                ordered = sorted(forms, key=lambda f: (-len(f), f))
                if ordered:
                    self._pattern = re.compile("|".join(re.escape(f) for f in ordered))
            self._compiled = True
        return self._pattern

    @classmethod
    def for_configs(
        cls,
        *,
        connection: Mapping[str, Any] | None = None,
        integration: Mapping[str, Any] | None = None,
    ) -> Redactor:
        """All strings of the connection config, secret-keyed strings of the integration's.

        Memoized on the configs' JSON (every run of a connection builds the same redactor;
        walking the configs and compiling the pattern was ~8 % of a busy executor's CPU).
        """
        try:
            fingerprint = orjson.dumps(
                [connection or {}, integration or {}], option=orjson.OPT_SORT_KEYS
            )
        except TypeError:  # not JSON-like: build it every time
            return cls._build(connection, integration)
        cached = _BY_CONFIGS.get(fingerprint)
        if cached is None:
            if len(_BY_CONFIGS) >= _CACHE_SIZE:
                _BY_CONFIGS.popitem(last=False)  # oldest first (insertion order)
            cached = _BY_CONFIGS[fingerprint] = cls._build(connection, integration)
        return cached

    @classmethod
    def _build(
        cls, connection: Mapping[str, Any] | None, integration: Mapping[str, Any] | None
    ) -> Redactor:
        secrets = collect_secrets(connection or {})
        secrets |= collect_secrets(integration or {}, only_secret_keys=True)
        return cls(secrets)

    @property
    def secrets(self) -> frozenset[str]:
        return self._known()

    def with_secrets(self, extra: Iterable[str]) -> Redactor:
        """A redactor that also masks ``extra`` (e.g. a token obtained by a refresh)."""
        return Redactor(self._known() | set(extra))

    def text(self, value: str) -> str:
        """``value`` with every secret (and its encoded forms) replaced by MASK."""
        pattern = self._masker()
        if pattern is None:
            return value
        return pattern.sub(MASK, value)

    def redact(self, value: Any) -> Any:
        """A copy of a JSON-like structure with secrets masked in every string (keys kept)."""
        if self._secrets is not None and not self._secrets:
            return value  # nothing to mask (a deferred redactor resolves at its first string)
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {key: self.redact(child) for key, child in value.items()}
        if isinstance(value, list):
            return [self.redact(child) for child in value]
        if isinstance(value, tuple):
            return tuple(self.redact(child) for child in value)
        return value

    def __repr__(self) -> str:
        if self._secrets is None:
            return "Redactor(deferred)"
        return f"Redactor({len(self._secrets)} secrets)"
