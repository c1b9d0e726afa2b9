"""Switching the model inference runs at run time, and showing which model each process runs.

A switch is one record on the compacted ``control`` topic (``framewire.models.control``),
written only for a model that loads here: a built-in name or an existing manifest whose
model file exists and whose licence the site accepts. Preprocess and inference follow the
record: preprocess letterboxes for the new input size, inference loads the model beside the
running one and swaps it in between micro-batches; a model inference cannot load is refused
there (the old one keeps running, its heartbeat reports a ``model_switch`` fault). The
``framewire model`` command and the gateway's ``/api/v1/model`` call these functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from framewire.config import Settings
from framewire.contracts.codec import make_codec
from framewire.errors import ConfigError, TransientError
from framewire.models.control import (
    CONTROL_TOPIC,
    MODEL_KEY,
    ModelRequest,
    latest_request,
    model_value,
)
from framewire.models.manifest import (
    ModelManifest,
    builtin_models,
    check_licence,
    load_manifest,
)
from framewire.ops.settings_topic import read_whole, write_record
from framewire.ops.status import heartbeats

TIMEOUT_S = 10.0
# the services that run a model: inference, and preprocess for its input size
MODEL_SERVICES = ("preprocess", "inference")
FAULT_KEY = "model_switch"


@dataclass(frozen=True)
class ModelSwitched:
    """A switch written to the control topic, and the manifest it names."""

    request: ModelRequest
    manifest: ModelManifest

    def as_json(self) -> dict[str, Any]:
        """As ``framewire model switch --json`` and ``POST /api/v1/model`` answer it."""
        m = self.manifest
        return {**self.request.model_dump(mode="json"), "model_name": m.name,
                "model_version": m.version, "input_width": m.input_width,
                "input_height": m.input_height}


def validated_model(settings: Settings, model: str) -> ModelManifest:
    """The manifest of ``model`` (a built-in name or a manifest's path); ConfigError saying
    what to fix when it does not load or its licence is not accepted on this site."""
    if not model.strip():
        raise ConfigError("give a model: a built-in name (centerface) or a manifest's path")
    if model not in builtin_models() and not model.endswith((".yaml", ".yml")):
        # a switch names a manifest, never another file: its errors would quote that file
        raise ConfigError(f"model {model[:200]!r} is neither a built-in model "
                          f"({', '.join(builtin_models())}) nor a manifest's path (a .yaml or "
                          ".yml file); pass a built-in name or the path to a YAML manifest")
    try:
        manifest = load_manifest(model)
    except OSError as exc:  # a path the system cannot even look up (too long, no access)
        raise ConfigError(f"cannot read model {model[:200]!r} ({exc.strerror}); pass a "
                          "built-in name or the path to a YAML manifest") from None
    check_licence(manifest, settings.accept_agpl_models)
    return manifest


def switch_model(settings: Settings, model: str, by: str,
                 timeout_s: float = TIMEOUT_S) -> ModelSwitched:
    """Ask every preprocess and inference process to run ``model`` from now on.

    ConfigError (nothing written) for a model that does not pass ``validated_model``;
    TransientError when the broker does not acknowledge the record within ``timeout_s``.
    """
    manifest = validated_model(settings, model)
    request = ModelRequest(model=model, requested_at=datetime.now(UTC), by=by)
    failed = write_record(settings, CONTROL_TOPIC, MODEL_KEY, model_value(request), timeout_s)
    if failed:
        raise TransientError(f"the model switch was not acknowledged by the broker within "
                             f"{timeout_s:.0f} s ({'; '.join(failed)}); is it reachable at "
                             f"{settings.bootstrap_servers}? `framewire model show` shows "
                             "whether it took")
    return ModelSwitched(request, manifest)


def model_state(settings: Settings, timeout_s: float = TIMEOUT_S) -> dict[str, Any]:
    """What ``framewire model show --json`` and ``GET /api/v1/model`` show: the configured
    model, the latest request, the model the site should run (``model``, with the name and
    version its manifest gives here), and each live preprocess and inference process with
    the model it runs and its ``model_switch`` fault; ``settled`` once they all run it."""
    found = latest_request(read_whole(settings, CONTROL_TOPIC, timeout_s))
    request = found if isinstance(found, ModelRequest) else None
    model = request.model if request else settings.inference.model
    try:
        manifest: ModelManifest | None = load_manifest(model)
        error = None
    except (ConfigError, OSError) as exc:
        manifest, error = None, str(exc)
    fresh_s = max(3 * settings.heartbeat_interval_s, 5.0)
    codec = make_codec(settings.schema_registry_url, settings.schema_registry_auth)
    processes = [
        {"service": b.service, "instance": b.instance, "model_name": b.model_name,
         "model_version": b.model_version,
         "fault": next((f.removeprefix(f"{FAULT_KEY}: ") for f in b.faults
                        if f.startswith(f"{FAULT_KEY}: ")), None)}
        for b in sorted(heartbeats(settings, codec, max_age_s=fresh_s),
                        key=lambda b: (MODEL_SERVICES.index(b.service)
                                       if b.service in MODEL_SERVICES else 9, b.instance))
        if b.service in MODEL_SERVICES and b.state not in ("stopping", "stopped")]
    running = {(p["model_name"], p["model_version"]) for p in processes}
    return {
        "configured": settings.inference.model,
        "requested": request.model_dump(mode="json") if request else None,
        "model": model,
        "model_name": manifest.name if manifest else None,
        "model_version": manifest.version if manifest else None,
        "error": error,
        "settled": manifest is not None and bool(processes)
        and running == {(manifest.name, manifest.version)},
        "processes": processes,
    }
