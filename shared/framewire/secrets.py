"""Secrets kept out of what Framewire shows: logs, ``status``, records, spans.

Secret settings are pydantic ``SecretStr`` (their ``repr`` is ``'**********'``); URLs are
shown through ``mask_url``, which replaces a password and credential query parameters with
``***``. Code that needs the real value asks for it (``get_secret_value()``, ``reveal()``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

from pydantic import BaseModel, SecretStr

MASK = "***"
# a query parameter or setting whose lower-cased name contains one of these holds a credential
# (token, access_token, password, passwd, pwd, secret, key, apikey, auth, sig, signature...)
CREDENTIAL_PARAM_PARTS = ("token", "pass", "pwd", "secret", "key", "auth", "sig", "credential")
# librdkafka and schema-registry properties (and settings) holding a secret: sasl.password,
# ssl.key.password, ssl.keystore.password, ssl.key.pem, sasl.oauthbearer.client.secret,
# sasl.oauthbearer.config, basic.auth.user.info, a key file's passphrase...
SECRET_SETTING_PARTS = ("password", "passwd", "secret", "passphrase", "user.info", "key.pem",
                        "private.key", "oauthbearer.config", "ssl_key")
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>`]+")


def is_secret_setting(name: str) -> bool:
    """Whether a setting or librdkafka property of this name holds a secret."""
    lowered = name.lower()
    return any(part in lowered for part in SECRET_SETTING_PARTS)


def _is_credential_param(name: str) -> bool:
    lowered = name.lower()
    return any(part in lowered for part in CREDENTIAL_PARAM_PARTS)


def _userinfo_end(rest: str) -> int:
    """Where the user information of ``rest`` (a URL after ``://``) ends: its @, or -1.

    A password written without percent-encoding may hold @, / or ?: the last @ before the
    query is taken (a URL with an @ in its path may then be masked more than needed, never
    less), else the last @ before the first /, ? or # that follows an @."""
    query = min((i for i in (rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    at = rest.rfind("@", 0, query)
    first = rest.find("@")
    if at >= 0 or first < 0:
        return at
    ends = [i for i in (rest.find(c, first) for c in "/?#") if i >= 0]
    return rest.rfind("@", 0, min(ends, default=len(rest)))


def mask_url(url: str) -> str:
    """``url`` with its password and credential query parameters replaced by ``***``.

    ``rtsp://admin:pw@cam/s?token=t&ch=1`` → ``rtsp://admin:***@cam/s?token=***&ch=1``.
    Anything that is not ``scheme://...`` comes back unchanged.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    at = _userinfo_end(rest)
    if at >= 0:
        user, colon, _ = rest[:at].partition(":")
        if colon:
            rest = f"{user}:{MASK}{rest[at:]}"
    before, question, after = rest.partition("?")
    if question:
        query, hash_, fragment = after.partition("#")
        params = []
        for param in query.split("&"):
            name, equals, _ = param.partition("=")
            params.append(f"{name}={MASK}" if equals and _is_credential_param(name) else param)
        rest = f"{before}?{'&'.join(params)}{hash_}{fragment}"
    return f"{scheme}{sep}{rest}"


def mask_urls_in(text: str) -> str:
    """``text`` with every URL in it masked (``mask_url``): for messages and log lines."""
    if "://" not in text:
        return text
    return _URL_IN_TEXT.sub(lambda match: mask_url(match.group(0)), text)


def reveal(value: Any) -> Any:
    """The real value of a ``SecretStr``; any other value unchanged."""
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def masked_value(name: str, value: Any) -> Any:
    """``value`` of the setting ``name`` as it may be shown: plain data, secrets masked."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
        return mask_url(value) if "://" in value else MASK
    if isinstance(value, str):
        return MASK if is_secret_setting(name) else mask_url(value)
    if isinstance(value, BaseModel):
        value = dict(value)
    if isinstance(value, Mapping):
        return {str(k): masked_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [masked_value(name, v) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return MASK if value is not None and is_secret_setting(name) else value
    if isinstance(value, PurePath):
        return str(value)
    return mask_urls_in(str(value))


def masked_settings(settings: BaseModel) -> dict[str, Any]:
    """Every setting as plain data (for the ``effective config`` log line), secrets masked."""
    return {name: masked_value(name, value) for name, value in settings}
