"""Every knob of the service, read from the environment (prefix `MIMO_`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Providers = Literal["auto", "cpu", "cuda", "tensorrt"]
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MIMO_", env_file=None, extra="ignore")

    repository: Path = Field(Path("models"), description="model repository <name>/<version>/")
    default_model: str = Field("mnist", description="model answering /predict without a name")
    host: str = "127.0.0.1"
    port: int = 8000
    grpc_port: int = Field(
        8001,
        ge=0,
        le=65535,
        description="Open Inference Protocol gRPC port, as Triton's (0: no gRPC server)",
    )
    workers: int = Field(
        0,
        ge=0,
        description="uvicorn worker processes; 0: the rule of service/layout.py (one per core "
        "the process may use, at most 4; one with MIMO_MODEL_CONTROL=explicit)",
    )
    max_batch_size: int = Field(32, ge=1, description="images per forward pass at most")
    max_queue_delay_ms: float = Field(
        0.0, ge=0, description="wait for a fuller batch at most (raise it for heavy models)"
    )
    max_queue_size: int = Field(256, ge=1, description="queued images per model before 429")
    inline_below_ms: float = Field(
        5.0,
        ge=0,
        description="a lone image runs its forward pass on the event loop when the model's "
        "passes take less than this per image (the hop to the inference thread costs more), and "
        "so does every batch when each worker has a core of its own (one thread takes turns "
        "with the loop anyway); 0: always in the inference thread",
    )
    request_timeout_s: float = Field(10.0, gt=0, description="a request waits at most this")
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    max_image_pixels: int = Field(
        16_000_000, ge=1, description="decoded width x height at most (decompression bombs)"
    )
    max_images_per_request: int = Field(64, ge=1)
    threads: int = Field(0, ge=0, description="ONNX Runtime intra-op threads (0: one per core)")
    lone_threads: int = Field(
        0,
        ge=0,
        description="ONNX Runtime threads for a lone image (a batch of one), from a second "
        "session of each CPU model; 0: every core with several workers and their board of "
        "busy workers (`python -m service`), else none; not above MIMO_THREADS: none",
    )
    providers: Providers = Field("auto", description="execution providers to ask for")
    fixed_batch_sizes: Literal["auto", "on", "off"] = Field(
        "auto",
        description="run forward passes at a few batch sizes only (powers of two up to "
        "MIMO_MAX_BATCH_SIZE), one ONNX Runtime session each, batches padded up: ONNX Runtime's "
        "CUDA provider plans its convolutions again at every change of input shape (30-45 ms "
        "a pass on an H200); auto: on for GPUs, off on the CPU (where a padded row costs its "
        "full price and nothing is planned)",
    )
    api_key: SecretStr | None = Field(None, description="require `Authorization: Bearer <key>`")
    model_control: Literal["none", "explicit"] = Field(
        "none",
        description="as Triton's --model-control-mode: `none` serves what was in the repository "
        "at start; `explicit` opens POST /v2/repository/models/<m>/load|unload (needs an API key)",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="origins allowed to call the API from a browser page of theirs, comma "
        "separated (`*` for any); none by default: no CORS headers at all",
    )
    metrics_dir: Path | None = Field(
        None,
        description="prometheus multiprocess directory when workers > 1 (default: "
        "<temp>/mimo-prometheus-<port>, one per server), wiped at start",
    )
    cores_board: Path | None = Field(
        None, description="which workers compute now (set by `python -m service`; cores.py)"
    )
    shutdown_delay_s: float = Field(
        2.0,
        ge=0,
        description="on SIGTERM, readiness fails this long before the server stops accepting "
        "connections, so that load balancers stop sending first (0: at once)",
    )
    shutdown_grace_s: float = Field(
        20.0,
        gt=0,
        description="then requests in flight have this long to be answered before they are cut",
    )
    log_level: str = "info"
    access_log: bool = Field(
        False,
        description="a log line per HTTP request (uvicorn's access log); off by default: the "
        "metrics count every request, and the line costs ~3 % of the server's CPU under load",
    )

    @field_validator("api_key", mode="before")
    @classmethod
    def _empty_key_is_none(cls, value: object) -> object:
        # MIMO_API_KEY= (set but empty) means no key, not "refuse every request".
        return None if value == "" else value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [o.strip() for o in value.split(",") if o.strip()]
        return value

    def fixed_sizes(self) -> bool | None:
        """ModelRegistry's `fixed_sizes`: None leaves it to each model's provider."""
        return {"auto": None, "on": True, "off": False}[self.fixed_batch_sizes]

    @model_validator(mode="after")
    def _control_needs_a_key(self) -> Settings:
        if self.model_control == "explicit" and self.api_key is None:
            raise ValueError(
                "MIMO_MODEL_CONTROL=explicit lets any client load and unload models: set "
                "MIMO_API_KEY too (clients then send `Authorization: Bearer <key>`)"
            )
        return self

    @model_validator(mode="after")
    def _grpc_apart_from_http(self) -> Settings:
        if self.grpc_port and self.grpc_port == self.port:
            raise ValueError(
                f"MIMO_GRPC_PORT and MIMO_PORT are both {self.port}: give gRPC another port "
                "(Triton's is 8001) or turn it off with MIMO_GRPC_PORT=0"
            )
        return self
