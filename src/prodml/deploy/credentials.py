"""No secret value in a rendered file: passwords written into the project file are cut out.

A URL like ``redis://:pw@cache:6379/0`` or ``postgresql://user:pw@db/mlflow`` keeps its user and loses
its password wherever it is rendered (the ConfigMap, the image's copy of ``prodml.yaml``), and a key named
like a credential (``sasl.password: ...``) loses its value; pods read those from the Secret instead
(see ``kubernetes.SECRET_KEYS``).
"""

from __future__ import annotations

import re

__all__ = ["has_password", "scrub"]

_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*):[^@/\s]+@")
# a YAML key naming a credential (sasl.password, ssl.key.password, api_token, client_secret, ...)
_SECRET_KEY = re.compile(
    r"^(?P<key>\s*-?\s*['\"]?[\w.-]*(?:password|secret|token)[\w.-]*['\"]?\s*:)[ \t]*\S.*$",
    re.IGNORECASE | re.MULTILINE,
)


def has_password(text: str) -> bool:
    return _PASSWORD.search(text) is not None


def scrub(text: str) -> str:
    """``text`` with the password of every URL in it removed (``scheme://user:pw@host`` →
    ``scheme://user@host``), and the value of every YAML key naming a password, secret or token."""
    text = _PASSWORD.sub(lambda m: m.group("head") + "@", text)
    return _SECRET_KEY.sub(_blank, text)


def _blank(match: re.Match[str]) -> str:
    key = match.group("key")
    if key.rstrip(": \t").strip("'\"").endswith("_env"):  # names the variable holding it: no secret
        return match.group(0)
    return key + ' ""  # removed by prodml deploy render: a Secret gives it'
