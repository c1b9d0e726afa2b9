"""``/api/v1/model``: which model the site runs, and switching it (``framewire.ops.model``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from framewire.errors import ConfigError
from framewire.gateway.app import GatewayState
from framewire.gateway.audit import audit
from framewire.gateway.auth import Admin, Viewer, who


class ModelSwitchRequest(BaseModel):
    """The model to run from now on."""

    model: str = Field(min_length=1, max_length=1000, description="a built-in model "
                       "(centerface) or the path of a model manifest on the services' hosts")


def register(api: APIRouter, state: GatewayState) -> None:
    """Add the model routes to ``api``."""
    settings = state.settings

    @api.get("/model", tags=["model"])
    def get_model(_: Viewer) -> dict[str, Any]:
        """The model the site runs: configured, the latest switch (`requested`), its name
        and version, and each live preprocess and inference process with the model it runs
        and a refused switch (`fault`); `settled` once they all run it."""
        from framewire.ops.model import model_state

        return model_state(settings)

    @api.post("/model", status_code=202, tags=["model"], responses={422: {}, 503: {}})
    def switch_model(request: ModelSwitchRequest, token: Admin) -> dict[str, Any]:
        """Switch the model without a restart: 202 once the switch is on the control topic;
        `GET /model` shows when every process runs it. 422 (nothing changed) unless it is a
        built-in model or an existing manifest whose file exists and licence is accepted."""
        from framewire.ops.model import switch_model as switch

        try:
            switched = switch(settings, request.model, who(token))
        except ConfigError as exc:
            raise HTTPException(422, str(exc)) from None
        m = switched.manifest
        audit(state.home, who(token), "model.switch", model=request.model,
              model_name=m.name, model_version=m.version)
        return switched.as_json()
