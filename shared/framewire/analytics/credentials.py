"""faust's Kafka client (aiokafka) connected as the process's other clients are: TLS and SASL
from the same librdkafka properties (``client_config``: the managed cluster's principal and
CA, then the user's ``kafka`` settings), mapped to faust's ``broker_credentials``.

aiokafka takes no librdkafka properties, so each one that bears on the connection is mapped
here; one that cannot be mapped (Kerberos, OAuth, a PKCS#12 key store...) is refused at start,
naming it, rather than dropped: a dropped CRL or client certificate would connect differently
from what the user configured.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from framewire.broker.client import client_config
from framewire.config import Settings
from framewire.errors import ConfigError

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
# the librdkafka properties of a connection that have an aiokafka equivalent
MAPPED = frozenset({
    "security.protocol", "sasl.mechanism", "sasl.mechanisms", "sasl.username", "sasl.password",
    "ssl.ca.location", "ssl.certificate.location", "ssl.key.location", "ssl.key.password",
    "ssl.endpoint.identification.algorithm", "enable.ssl.certificate.verification"})


def broker_credentials(settings: Settings) -> CredentialsT | None:
    """faust's ``broker_credentials`` for this process's clients; None for plaintext.

    ConfigError, naming the property, for settings aiokafka cannot follow."""
    return credentials_from(client_config(settings))


def credentials_from(conf: Mapping[str, Any]) -> CredentialsT | None:
    """faust credentials from librdkafka properties (``security.protocol``, ``sasl.*``,
    ``ssl.*``); None when the protocol is plaintext."""
    import faust

    protocol = str(conf.get("security.protocol", "plaintext")).upper()
    if protocol not in PROTOCOLS:
        raise ConfigError(f"kafka.security.protocol = {conf['security.protocol']!r}: use one "
                          f"of {', '.join(p.lower() for p in PROTOCOLS)}")
    if protocol == "PLAINTEXT":  # librdkafka ignores the TLS and SASL properties then too
        return None
    unmapped = sorted(key for key in conf
                      if key.startswith(("ssl.", "sasl.")) and key not in MAPPED)
    if unmapped:
        raise ConfigError(
            f"kafka.{unmapped[0]}: the analytics service's Kafka client (aiokafka, under "
            "faust-streaming) has no such setting, and would connect without it "
            f"(unmapped: {', '.join(unmapped)}); it follows security.protocol, "
            "sasl.mechanism, sasl.username, sasl.password, ssl.ca.location, "
            "ssl.certificate.location, ssl.key.location, ssl.key.password, "
            "ssl.endpoint.identification.algorithm and enable.ssl.certificate.verification: "
            "use those, or leave analytics out (framewire run --services ...)")
    context = tls_context(conf) if protocol.endswith("SSL") else None
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    # sasl.mechanisms and sasl.mechanism are one property to librdkafka: the later one wins
    named = [key for key in conf if key in ("sasl.mechanism", "sasl.mechanisms")]
    mechanism = str(conf[named[-1]]).upper() if named else "GSSAPI"  # librdkafka's default
    if mechanism not in MECHANISMS:
        raise ConfigError(f"kafka.sasl.mechanism = {mechanism}: the analytics service's "
                          f"client (aiokafka) supports {', '.join(MECHANISMS)} here; set "
                          "kafka.sasl.mechanism to one of them")
    for key in ("sasl.username", "sasl.password"):
        if not conf.get(key):
            raise ConfigError(f"kafka.{key} is not set: SASL {mechanism} needs "
                              "sasl.username and sasl.password")
    return faust.SASLCredentials(username=str(conf["sasl.username"]),
                                 password=str(conf["sasl.password"]),
                                 mechanism=mechanism, ssl_context=context)


def tls_context(conf: Mapping[str, Any]) -> ssl.SSLContext:
    """An SSL context verifying the brokers as librdkafka would with ``conf``: the CA of
    ``ssl.ca.location`` (else the system's), the host name, a client certificate if given."""
    location = str(conf.get("ssl.ca.location") or "probe")
    try:
        if location == "probe":
            context = ssl.create_default_context()
        elif Path(location).is_dir():
            context = ssl.create_default_context(capath=location)
        else:
            context = ssl.create_default_context(cafile=location)
        if conf.get("ssl.certificate.location") or conf.get("ssl.key.location"):
            context.load_cert_chain(str(conf.get("ssl.certificate.location") or ""),
                                    conf.get("ssl.key.location"),
                                    conf.get("ssl.key.password"))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"the TLS files in the kafka settings (ssl.ca.location = {location!r}"
                          f", ssl.certificate.location, ssl.key.location) could not be loaded: "
                          f"{exc}; check the paths and the key's password") from exc
    if not _true(conf.get("enable.ssl.certificate.verification", True)):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif str(conf.get("ssl.endpoint.identification.algorithm", "https")).lower() == "none":
        context.check_hostname = False
    return context


def _true(value: Any) -> bool:
    return str(value).lower() not in ("false", "0", "no", "off")
