"""GET /models: what is served, and what was refused."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.openapi import errors
from service.deps import ApiKey, RegistryDep, SettingsDep
from service.schemas import ModelDescription, ModelsResponse

router = APIRouter(tags=["models"])


@router.get("/models", response_model=ModelsResponse, dependencies=[ApiKey], responses=errors(401))
def list_models(registry: RegistryDep, settings: SettingsDep) -> ModelsResponse:
    served = registry.models()
    default = {m.name: max(v.version for v in served if v.name == m.name) for m in served}
    return ModelsResponse(
        models=[
            ModelDescription(
                name=m.name,
                version=m.version,
                ensemble_size=m.contract.ensemble_size,
                labels=list(m.contract.labels),
                input_shape=list(m.contract.input_shape),
                preprocess=m.contract.preprocess,
                temperature=m.contract.temperature,
                thresholds=m.contract.thresholds,
                uncertain_measure=m.contract.uncertain_measure,
                provider=m.provider,
                default=m.name == settings.default_model and m.version == default[m.name],
            )
            for m in sorted(served, key=lambda m: (m.name, m.version))
        ],
        unavailable=registry.failures,
    )
