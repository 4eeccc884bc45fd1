"""One settings object for the whole platform.

Read once (from ``PIXSERVE_*`` environment variables or explicit arguments) where a
process starts, then passed in; nothing reads the environment inside a request.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Device = Literal["auto", "cpu", "cuda"]
# the setting that lists each model task's models (services/registry.py groups the tasks
# by deployment; the Vision deployment's roles are its tasks caption, tags, nsfw, vqa)
MODEL_SETTINGS = {
    "upscale": "models", "denoise": "denoise_models", "face": "face_models",
    "detect": "face_detectors", "generate": "diffusion_checkpoints", "safety": "safety_checker",
    "caption": "caption_model", "tags": "tag_model", "nsfw": "nsfw_model", "vqa": "vqa_model",
    "mesh": "mesh_model", "depth": "depth_model", "segment": "segment_model",
}  # fmt: skip
Precision = Literal["auto", "fp32", "fp16", "bf16"]


MemoryMode = Literal["low", "balanced", "high"]


class BatchOptions(BaseModel):
    """A model deployment's ``user_config``: how many requests meet, how long a batch
    waits, and its memory mode (None: the ``memory_mode`` setting)."""

    model_config = ConfigDict(extra="forbid")

    max_batch_size: int = Field(default=8, ge=1, le=256)
    batch_wait_timeout_s: float = Field(default=0.01, ge=0, le=1)
    memory_mode: MemoryMode | None = None


class Settings(BaseSettings):
    """Platform settings; every field can be set as ``PIXSERVE_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="PIXSERVE_", extra="forbid")

    # Client (CLI)
    api_url: str = Field(
        default="http://127.0.0.1:8000", description="Where the CLI finds the REST API."
    )
    api_key: SecretStr | None = Field(
        default=None, description="The CLI's API key when the service requires keys."
    )

    public_url: str | None = Field(
        default=None,
        description="The API's external URL (https://pixserve.example.com): output URLs in "
        "webhooks are made absolute with it; REST answers use the request's own host.",
    )

    # API keys (stored hashed in Redis) and per-key rate limits
    api_keys_enabled: bool = Field(
        default=False, description="Require `Authorization: Bearer` keys on /v1 routes."
    )
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0", description="Redis for keys and rate limits."
    )
    redis_password: SecretStr | None = Field(
        default=None, description="Redis password (from a Secret in clusters)."
    )
    rate_limit_per_minute: int = Field(
        default=600, ge=1, description="Requests per minute per key (refill rate)."
    )
    rate_limit_burst: int = Field(default=60, ge=1, description="Requests a key may burst.")

    # Object storage: file:// (embedded default) or s3:// (buckets below; a path after
    # s3:// is a key prefix)
    storage_url: str = Field(
        default="file://var/objects", description="file://DIR or s3://[PREFIX]."
    )
    s3_endpoint_url: str | None = Field(default=None, description="S3 endpoint (None: AWS).")
    s3_region: str = Field(default="us-east-1", description="S3 region.")
    s3_access_key_id: SecretStr | None = Field(default=None, description="S3 access key id.")
    s3_secret_access_key: SecretStr | None = Field(default=None, description="S3 secret key.")
    s3_inputs_bucket: str = Field(default="pixserve-inputs", description="Bucket for inputs.")
    s3_outputs_bucket: str = Field(default="pixserve-outputs", description="Bucket for outputs.")
    s3_models_bucket: str = Field(default="pixserve-models", description="Bucket for models.")
    retention_hours: int = Field(
        default=24, ge=1, description="Inputs and outputs expire after this long."
    )
    presign_ttl_s: int = Field(
        default=3600, ge=1, le=7 * 24 * 3600, description="Lifetime of result URLs (<= 7 d)."
    )

    # Jobs
    max_job_items: int = Field(default=1000, ge=1, description="Most items in one job.")
    visibility_timeout_s: float = Field(
        default=120, gt=0, description="Idle time before another dispatcher takes an item."
    )
    max_deliveries: int = Field(default=3, ge=1, description="Deliveries before dead-letter.")
    dispatcher_concurrency: int = Field(
        default=32,
        ge=1,
        le=1024,
        description="Most items one dispatcher replica runs at once (fewer if the queue is short).",
    )

    # Webhooks
    webhook_secret: SecretStr | None = Field(
        default=None,
        description="whsec_ key that signs webhooks of jobs made without API keys.",
    )
    webhook_allowed_networks: list[str] = Field(
        default=[], description="CIDRs webhooks may reach although not public (in-cluster)."
    )
    webhook_allow_http: bool = Field(
        default=False, description="Accept http:// webhook URLs (else https only)."
    )

    # Model store
    model_store: Path = Field(
        default=Path("var/models"), description="Directory holding model weights."
    )
    extra_manifest: Path | None = Field(
        default=None, description="Extra manifest JSON merged over the packaged one."
    )
    model_store_s3_prefix: str | None = Field(
        default=None,
        description="Sync models from s3://<s3_models_bucket>/<prefix> at replica start.",
    )
    extra_presets: Path | None = Field(
        default=None, description="Extra presets YAML merged over the packaged ones."
    )
    models: list[str] = Field(
        default=["x4plus"], description="Models the Upscaler deployment loads at start."
    )
    default_model: str = Field(default="x4plus", description="Model used when none is named.")
    denoise_models: list[str] = Field(
        default=[], description="Models the Denoiser deployment loads (e.g. scunet-color)."
    )
    default_denoise_model: str = Field(
        default="scunet-color", description="Denoise model used when none is named."
    )
    face_models: list[str] = Field(
        default=[], description="Models the FaceRestorer loads (e.g. gfpgan-v1.4, codeformer)."
    )
    default_face_model: str = Field(
        default="gfpgan-v1.4", description="Face model used when none is named."
    )
    face_detectors: list[str] = Field(
        default=[], description="Detectors the FaceRestorer loads (e.g. retinaface-resnet50)."
    )
    default_face_detector: str = Field(
        default="retinaface-resnet50", description="Detector used when none is named."
    )
    face_confidence: float = Field(
        default=0.8, gt=0, lt=1, description="Detector score a face needs to be restored."
    )
    face_batch_size: int = Field(
        default=8, ge=1, le=64, description="Faces per forward pass of a face model."
    )
    max_faces: int = Field(default=20, ge=1, le=200, description="Most faces one image restores.")
    diffusion_checkpoints: dict[str, str] = Field(
        default={}, description="Checkpoint aliases -> SDXL models, e.g. {realism: sdxl-base}."
    )
    default_checkpoint: str = Field(default="realism", description="Checkpoint when none named.")
    safety_checker: str | None = Field(
        default="sd-safety-checker", description="Screens generated images; null turns it off."
    )
    max_generate_side: int = Field(
        default=1536, ge=256, le=4096, description="Largest generated width/height in px."
    )
    max_generate_steps: int = Field(default=60, ge=1, le=500, description="Most denoising steps.")
    max_prompt_chars: int = Field(default=2000, ge=1, description="Longest prompt in characters.")
    caption_model: str | None = Field(default=None, description="Captioner (e.g. blip-caption).")
    tag_model: str | None = Field(default=None, description="Image tagger (e.g. vit-imagenet).")
    nsfw_model: str | None = Field(default=None, description="NSFW classifier (e.g. nsfw-vit).")
    vqa_model: str | None = Field(
        default=None, description="Answers /v1/chat/completions questions (e.g. blip-vqa)."
    )
    caption_max_tokens: int = Field(default=40, ge=1, le=512, description="Longest caption.")
    tag_threshold: float = Field(default=0.35, gt=0, lt=1, description="Score a tag needs.")
    max_tags: int = Field(default=20, ge=1, le=200, description="Most tags per image.")
    vision_url_hosts: list[str] = Field(
        default=[], description="Hosts image_url may fetch from (https); empty: any public."
    )
    mesh_model: str | None = Field(
        default=None, description="Image-to-3D reconstruction model (engine triposr)."
    )
    depth_model: str | None = Field(
        default=None, description="Depth model (engine relief; e.g. depth-anything-v2-small)."
    )
    segment_model: str | None = Field(
        default=None, description="Cuts the object from its background before meshing."
    )
    mesh_max_resolution: int = Field(
        default=320, ge=16, le=1024, description="Largest mesh grid (marching cubes, relief)."
    )
    mesh_max_faces: int = Field(
        default=200_000, ge=100, le=5_000_000, description="Most faces one mesh may have."
    )

    # Inference
    device: Device = Field(default="auto", description="cuda when available under auto.")
    precision: Precision = Field(default="auto", description="auto: fp16 on CUDA, fp32 on CPU.")
    tile_size: int = Field(default=256, ge=16, le=1024, description="Tile edge in input px.")
    tile_pad: int = Field(default=10, ge=0, le=64, description="Context px around each tile.")
    cpu_fallback: bool = Field(
        default=False,
        description="Run an upscale or denoise the GPU has no memory for (after smaller "
        "batches) once more on the TileFallback deployment, on CPU (X-Pixserve-Fallback).",
    )
    tile_batch_size: int | None = Field(
        default=None, ge=1, le=256,
        description="Tiles per forward pass; None: 8 on CUDA, 1 on CPU (cache-bound there).",
    )  # fmt: skip
    compile: bool = Field(default=False, description="torch.compile on CUDA (warmed at load).")
    memory_mode: MemoryMode = Field(
        default="balanced",
        description="low: little resident (idle models unloaded, one tile a pass, diffusion "
        "offloaded, sliced, tiled); high: everything loaded and, on CUDA, compiled. Per "
        "deployment: its user_config, or PUT /v1/admin/deployments/NAME/memory-mode.",
    )
    idle_unload_s: float = Field(
        default=300.0, ge=1, description="low memory mode: unload a model unused this long."
    )
    torch_threads: int | None = Field(
        default=None, ge=1, description="CPU threads for torch; None: the replica's num_cpus."
    )
    gpu_hour_price_usd: float = Field(
        default=2.5, ge=0, description="Price of one GPU-hour, for the cost-per-image metric."
    )
    gpu_memory_fraction: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="Per-process CUDA memory cap; None: the replica's GPU share.",
    )

    # Encoding (docs/benchmarks.md: encoder speeds)
    png_compress_level: int | None = Field(
        default=None, ge=0, le=9,
        description="zlib level for PNG outputs; None: fpng for RGB/RGBA (fastest).",
    )  # fmt: skip
    webp_method: int = Field(
        default=0, ge=0, le=6, description="WEBP effort: 0 fastest, 6 smallest files."
    )

    # Serve batching
    batch_max_requests: int = Field(
        default=8,
        ge=1,
        le=256,
        description="Requests one @serve.batch call may group (a user_config overrides).",
    )
    batch_wait_timeout_s: float = Field(
        default=0.01, ge=0, le=1, description="How long a batch waits to fill (ditto)."
    )

    # Input limits
    max_upload_bytes: int = Field(
        default=25 * 1024 * 1024, ge=1, description="Largest accepted upload in bytes."
    )
    max_model_bytes: int = Field(
        default=2 * 1024**3, ge=1, description="Largest weight file POST /v1/admin/models takes."
    )
    max_job_bytes: int = Field(
        default=512 * 1024 * 1024,
        ge=1,
        description="Largest job submission body (bigger batches: pass s3:// keys or URLs).",
    )
    max_input_pixels: int = Field(
        default=4096 * 4096, ge=1, description="Largest accepted input in pixels."
    )
    max_output_pixels: int = Field(
        default=8192 * 8192, ge=1, description="Largest model or final output in pixels."
    )
    max_side: int = Field(default=16384, ge=1, description="Largest accepted width/height.")
    max_scale: float = Field(default=8.0, gt=1, description="Largest output scale.")
    max_request_cost: float | None = Field(
        default=64.0, gt=0,
        description="Most compute one request (or job item) may cost, in units of about "
        "one output megapixel of x4plus (services/pipelines/budget.py); null: no limit.",
    )  # fmt: skip
    request_deadline_s: float = Field(
        default=300.0, gt=0,
        description="A sync request still running after this long is cancelled (503).",
    )  # fmt: skip

    def configured(self, task: str) -> list[str]:
        """The models a deployment loads for ``task`` (upscale, denoise, face, detect...),
        from the setting ``MODEL_SETTINGS`` names for it."""
        name = MODEL_SETTINGS.get(task)
        value = getattr(self, name) if name else None
        if isinstance(value, dict):
            return list(value.values())
        if isinstance(value, list):
            return list(value)
        return [value] if value else []

    @field_validator("webhook_allowed_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for network in value:
            ipaddress.ip_network(network)  # ValueError names the bad entry
        return value

    @field_validator("model_store", "extra_manifest", "extra_presets")
    @classmethod
    def _expand_user(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None
