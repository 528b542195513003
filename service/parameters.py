"""The query parameters of POST /predict, declared once.

The route reads them through FastAPI (`Annotated[PredictParameters, Query()]`, which also
writes them into the OpenAPI schema) and the fast path (service/fastpath.py) validates the
same model, so the two accept exactly the same values with the same defaults and bounds.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

# How a forward pass fills the model's M input slots; the OIP `mode` parameter says the same.
Mode = Literal["ensemble", "packed"]
MODES: tuple[Mode, ...] = get_args(Mode)
MODE_DESCRIPTION = (
    "ensemble: one image per forward-pass row, tiled into the M slots, answered by the mean of "
    "the M heads with their disagreement. packed: M images per row, each answered by its own "
    "slot's head: up to M times the images/s when requests queue, no ensemble and no uncertainty"
)


class PredictParameters(BaseModel):
    model_config = ConfigDict(frozen=True)  # DEFAULTS is shared by every request

    model: str | None = Field(None, description="model name (default: the default model)")
    version: int | None = Field(None, ge=1, description="version (default: highest)")
    top_k: int = Field(3, ge=1, le=1000, description="classes to list")
    members: bool = Field(True, description="include each head's prediction")
    member_probabilities: bool = Field(
        False, description="include each head's probabilities over all classes"
    )
    mode: Mode = Field("ensemble", description=MODE_DESCRIPTION)

    @property
    def packed(self) -> bool:
        return self.mode == "packed"


DEFAULTS = PredictParameters()
