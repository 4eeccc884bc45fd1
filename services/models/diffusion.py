"""The diffusion engine: SDXL text-to-image and image-to-image through diffusers.

Checkpoints are diffusers repositories in the model store, named by alias in settings
(``diffusion_checkpoints``: realism, anime, artistic...); the deployment keeps a few
loaded at once (``@serve.multiplexed``). Every request gets its own scheduler (so
concurrent requests never share one), a seeded generator, and the safety checker's
verdict; unsafe images are blacked out and flagged. On CUDA: fp16, PyTorch SDPA
attention, VAE tiling for large images, and one retry with attention slicing and VAE
tiling after an out-of-memory before the request fails.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from services.config import MemoryMode, Settings
from services.errors import EngineOutOfMemory, InvalidParameter, ModelNotReady
from services.imaging.codec import from_float
from services.imaging.previews import Preview, latent_preview
from services.models.runtime import EngineStatus, TorchRuntime
from services.models.store import ModelStore

logger = logging.getLogger(__name__)
SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {}),
    "dpmpp_2m_karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    "ddim": ("DDIMScheduler", {}),
    # few-step checkpoints (SDXL-Lightning, -Turbo) want trailing timesteps, no guidance
    "lightning": ("EulerDiscreteScheduler", {"timestep_spacing": "trailing"}),
    "turbo": ("EulerAncestralDiscreteScheduler", {"timestep_spacing": "trailing"}),
}
_LARGE = 1024 * 1024  # above this many pixels the VAE decodes in tiles


class GenerationStopped(Exception):
    """The caller went away (canceled, past its deadline): the denoising loop stopped at
    the end of a step instead of running to its last one."""


@dataclass(frozen=True)
class GenerateOptions:
    """One generation: prompt, size, steps, guidance, scheduler, seed; ``strength``
    applies to image-to-image (how far from the input image to go)."""

    prompt: str
    checkpoint: str
    negative_prompt: str = ""
    width: int = 1024
    height: int = 1024
    steps: int = 30
    guidance: float = 5.0
    scheduler: str = "euler"
    seed: int | None = None
    strength: float = 0.6
    progress_key: str | None = None  # a job item's: its steps done are reported

    def check(self, settings: Settings, image_to_image: bool = False) -> None:
        """Refuse what SDXL or the settings cannot do, naming the field."""
        if not self.prompt.strip():
            raise InvalidParameter("prompt is empty")
        if len(self.prompt) > settings.max_prompt_chars:
            raise InvalidParameter(f"prompt is {len(self.prompt)} characters; the limit is "
                                   f"{settings.max_prompt_chars}")  # fmt: skip
        if not image_to_image:
            for name, side in (("width", self.width), ("height", self.height)):
                if side % 8 or not 256 <= side <= settings.max_generate_side:
                    raise InvalidParameter(f"{name} {side} must be a multiple of 8 from 256 to "
                                           f"{settings.max_generate_side}")  # fmt: skip
        if not 1 <= self.steps <= settings.max_generate_steps:
            raise InvalidParameter(f"steps {self.steps} is over the cap: 1 to "
                                   f"{settings.max_generate_steps}")  # fmt: skip
        if not 0.0 <= self.guidance <= 30.0:
            raise InvalidParameter(f"guidance {self.guidance:g} must be within 0 and 30")
        if self.scheduler not in SCHEDULERS:
            raise InvalidParameter(f"unknown scheduler '{self.scheduler}'; schedulers: "
                                   f"{', '.join(SCHEDULERS)}")  # fmt: skip
        if not 0.0 < self.strength <= 1.0:
            raise InvalidParameter(f"strength {self.strength:g} must be within (0, 1]")
        if image_to_image and int(self.steps * self.strength) < 1:  # diffusers runs that many
            raise InvalidParameter(
                f"steps x strength is {self.steps} x {self.strength:g}: image-to-image runs "
                f"int(steps x strength) steps, here none; raise steps or strength"
            )
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise InvalidParameter("seed must be a non-negative 63-bit integer")


@dataclass(frozen=True)
class Generated:
    """The image (uint8 HxWx3) and what made it."""

    pixels: np.ndarray
    seed: int
    nsfw: bool
    checkpoint: str
    seconds: float


@dataclass
class Checkpoint:
    """A loaded SDXL checkpoint: the text-to-image pipeline (img2img is made from it)."""

    alias: str
    model: str
    pipeline: Any
    load_seconds: float


@dataclass
class DiffusionEngine:
    """Loads checkpoints on demand and the safety checker once; generates images."""

    settings: Settings
    store: ModelStore
    gpu_share: float = 0.0
    safety: Any = None  # (checker, feature extractor) once loaded
    missing: dict[str, str] = field(default_factory=dict)
    load_seconds: dict[str, float] = field(default_factory=dict)
    generations: list[float] = field(default_factory=list)
    # a job item's steps done of the loop's, after each step (the replica's reporter)
    on_step: Callable[[GenerateOptions, int, int, Preview], None] | None = None

    def __post_init__(self) -> None:
        self.runtime = TorchRuntime(self.settings, self.gpu_share)
        # fp16 on CUDA; bf16 would also do, and fp32 on CPU
        self.dtype = torch.float32 if not self.runtime.on_cuda else torch.float16
        self.memory_mode: MemoryMode = self.settings.memory_mode

    def set_memory_mode(self, mode: MemoryMode) -> None:
        """low: attention slicing and VAE tiles on every generation, and checkpoints
        loaded from now on offloaded to the CPU between their modules' turns (CUDA);
        high: checkpoints loaded from now on compiled (CUDA)."""
        self.memory_mode = mode

    def load(self) -> None:
        """The safety checker (when checkpoints are configured); checkpoints load on
        first use."""
        self.runtime.apply_limits()
        name = self.settings.safety_checker
        if name is None or not self.settings.diffusion_checkpoints:
            return
        try:
            self.safety = self._load_safety(name)
        except ModelNotReady as exc:
            logger.warning("safety checker %s not loaded: %s", name, exc.message)
            self.missing[name] = exc.message

    def model_of(self, alias: str) -> str:
        """The manifest model behind a checkpoint alias, or a clear 422."""
        checkpoints = self.settings.diffusion_checkpoints
        if alias not in checkpoints:
            known = ", ".join(checkpoints) or "none configured (diffusion_checkpoints)"
            raise InvalidParameter(f"unknown checkpoint '{alias}'; checkpoints: {known}")
        return checkpoints[alias]

    def load_checkpoint(self, alias: str) -> Checkpoint:
        """Load a checkpoint's pipeline (the multiplexed loader calls this)."""
        import diffusers

        model = self.model_of(alias)
        path = self.store.locate(self.store.manifest.for_task(model, "generate").name)
        started = time.perf_counter()
        sdxl: Any = diffusers.StableDiffusionXLPipeline  # diffusers' typing is partial
        pipeline = sdxl.from_pretrained(path, dtype=self.dtype)
        offload = self.memory_mode == "low" and self.runtime.on_cuda
        if offload:  # each module moves to the GPU for its turn only
            pipeline.enable_model_cpu_offload(device=self.runtime.device)
        else:
            pipeline = pipeline.to(self.runtime.device)
        _use_sdpa(pipeline.unet)
        pipeline.set_progress_bar_config(disable=True)
        if (self.settings.compile or self.memory_mode == "high") and self.runtime.on_cuda and (
            not offload
        ):  # fmt: skip
            pipeline.unet = torch.compile(pipeline.unet, mode="max-autotune-no-cudagraphs")
            # warm up at the default size, so the first request does not pay for compiling
            with torch.inference_mode():
                pipeline(prompt="", num_inference_steps=2, output_type="latent")
        seconds = time.perf_counter() - started
        self.load_seconds[model] = seconds
        return Checkpoint(alias, model, pipeline, seconds)

    def generate(
        self, checkpoint: Checkpoint, options: GenerateOptions, image: np.ndarray | None = None,
        stop: threading.Event | None = None,
    ) -> Generated:  # fmt: skip
        """One image; ``image`` (float HxWx3 in [0, 1]) makes it image-to-image. Once
        ``stop`` is set the loop ends after the step it is in (``GenerationStopped``)."""
        self._check_safety_ready()
        self._check_tokens(checkpoint, options)
        seed = options.seed if options.seed is not None else secrets.randbits(63)
        started = time.perf_counter()
        try:
            pixels = self._run(checkpoint, options, image, seed, stop,
                               low_memory=self.memory_mode == "low")  # fmt: skip
        except torch.OutOfMemoryError:
            self.runtime.release_after_oom()
            logger.warning("CUDA out of memory; retrying with attention slicing and VAE tiles")
            try:
                pixels = self._run(checkpoint, options, image, seed, stop, low_memory=True)
            except torch.OutOfMemoryError as exc:
                self.runtime.release_after_oom()
                raise EngineOutOfMemory(
                    f"out of GPU memory generating {options.width}x{options.height}; ask for "
                    "a smaller size"
                ) from exc
        except RuntimeError:
            self.runtime.count_error()
            raise
        self.runtime.cuda_errors = 0
        pixels, nsfw = self._screen(pixels)
        seconds = time.perf_counter() - started
        self.generations.append(seconds)
        return Generated(from_float(pixels), seed, nsfw, checkpoint.alias, seconds)

    def status(self) -> EngineStatus:
        """Loaded: the safety checker and every checkpoint loaded so far (Serve's
        multiplexing may have evicted one since); missing: the safety checker if absent."""
        loaded = dict.fromkeys(self.load_seconds, 1)
        return EngineStatus(str(self.runtime.device), str(self.dtype).removeprefix("torch."),
                            loaded, dict(self.missing), dict(self.load_seconds))  # fmt: skip

    def gpu_memory(self) -> dict[str, float]:
        return self.runtime.gpu_memory()

    def check_health(self) -> None:
        self.runtime.check_errors()

    def _run(
        self, checkpoint: Checkpoint, options: GenerateOptions, image: np.ndarray | None,
        seed: int, stop: threading.Event | None, low_memory: bool,
    ) -> np.ndarray:  # fmt: skip
        from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

        base = checkpoint.pipeline
        kind = StableDiffusionXLPipeline if image is None else StableDiffusionXLImg2ImgPipeline
        # from_pipe casts the shared modules to its dtype, float32 unless told: without
        # it every generation turned the fp16 checkpoint back to fp32 (seen on an H200)
        pipeline = kind.from_pipe(base, scheduler=_scheduler(base, options.scheduler),
                                  dtype=self.dtype)  # fmt: skip
        pipeline.set_progress_bar_config(disable=True)
        width, height = (options.width, options.height) if image is None else (
            image.shape[1] // 8 * 8, image.shape[0] // 8 * 8)  # fmt: skip
        # the VAE's own switch (diffusers 0.42 dropped the pipeline's enable_vae_tiling);
        # set both ways, since from_pipe shares the VAE with the base pipeline
        tiles = low_memory or width * height > _LARGE
        pipeline.vae.enable_tiling() if tiles else pipeline.vae.disable_tiling()
        if low_memory:  # the shared UNet's processors: SDPA again after this run
            pipeline.enable_attention_slicing()
        try:
            return self._denoise(pipeline, options, image, seed, stop, (width, height))
        finally:
            if low_memory:
                _use_sdpa(pipeline.unet)

    def _denoise(
        self, pipeline: Any, options: GenerateOptions, image: np.ndarray | None, seed: int,
        stop: threading.Event | None, size: tuple[int, int],
    ) -> np.ndarray:  # fmt: skip
        """The denoising loop and the decode: pixels as float HxWx3 in [0, 1]."""
        width, height = size
        generator = torch.Generator(device="cpu").manual_seed(seed)
        arguments: dict[str, Any] = {
            "prompt": options.prompt, "negative_prompt": options.negative_prompt or None,
            "num_inference_steps": options.steps, "guidance_scale": options.guidance,
            "generator": generator, "output_type": "np",
        }  # fmt: skip
        if image is None:
            arguments.update(width=width, height=height)
        else:
            arguments.update(image=image[:height, :width][None], strength=options.strength)
        report = None
        if self.on_step is not None and options.progress_key is not None:
            on_step = self.on_step
            report = lambda done, steps, preview: on_step(options, done, steps, preview)  # noqa: E731
        if stop is not None or report is not None:
            arguments["callback_on_step_end"] = _on_step_end(stop, options.steps, report)
        with torch.inference_mode():
            result = pipeline(**arguments)
        return np.clip(np.asarray(result.images[0], np.float32), 0.0, 1.0)

    def _check_tokens(self, checkpoint: Checkpoint, options: GenerateOptions) -> None:
        """CLIP reads 77 tokens; a longer prompt would be cut silently, so refuse it."""
        tokenizer = checkpoint.pipeline.tokenizer
        limit = int(tokenizer.model_max_length)
        texts = (("prompt", options.prompt), ("negative_prompt", options.negative_prompt))
        for name, text in texts:
            count = len(tokenizer(text).input_ids)
            if count > limit:
                raise InvalidParameter(f"{name} is {count} tokens; the text encoder reads "
                                       f"{limit}: shorten it")  # fmt: skip

    def _check_safety_ready(self) -> None:
        name = self.settings.safety_checker
        if name is not None and self.safety is None:
            raise ModelNotReady(self.missing.get(name) or f"safety checker '{name}' not loaded")

    def _load_safety(self, name: str) -> tuple[Any, Any]:
        from diffusers.pipelines.stable_diffusion.safety_checker import (
            StableDiffusionSafetyChecker,
        )
        from transformers import CLIPImageProcessor

        path = self.store.locate(self.store.manifest.for_task(name, "safety").name)
        started = time.perf_counter()
        checker_class: Any = StableDiffusionSafetyChecker  # transformers' typing is partial
        checker = checker_class.from_pretrained(path, torch_dtype=self.dtype)
        extractor = CLIPImageProcessor.from_pretrained(path)
        self.load_seconds[name] = time.perf_counter() - started
        return checker.to(self.runtime.device).eval(), extractor

    def _screen(self, pixels: np.ndarray) -> tuple[np.ndarray, bool]:
        """The safety checker's verdict; a flagged image comes back black."""
        if self.safety is None:
            return pixels, False
        checker, extractor = self.safety
        features = extractor(images=[pixels], return_tensors="pt", do_rescale=False)
        clip_input = features.pixel_values.to(self.runtime.device, self.dtype)
        with torch.inference_mode():
            _, flags = checker(images=pixels[None].copy(), clip_input=clip_input)
        flagged = bool(flags[0])
        return (np.zeros_like(pixels) if flagged else pixels), flagged


def _on_step_end(
    stop: threading.Event | None, steps: int,
    report: Callable[[int, int, Preview], None] | None,
) -> Any:  # fmt: skip
    """A diffusers step-end callback: ends the loop once ``stop`` is set (raising also
    skips the VAE decode of an image nobody will read), else reports the step done of
    those the loop runs (fewer than ``steps`` for image-to-image), with the latents'
    linear preview on demand."""

    def callback(pipeline: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> Any:
        if stop is not None and stop.is_set():
            raise GenerationStopped(f"stopped after step {step + 1} of {steps}")
        if report is not None:
            latents = tensors["latents"]
            report(step + 1, int(getattr(pipeline, "num_timesteps", 0) or steps),
                   lambda: latent_preview(latents))  # fmt: skip
        return tensors

    return callback


def _scheduler(pipeline: Any, name: str) -> Any:
    import diffusers

    class_name, overrides = SCHEDULERS[name]
    return getattr(diffusers, class_name).from_config(pipeline.scheduler.config, **overrides)


def _use_sdpa(unet: Any) -> None:
    """PyTorch's scaled-dot-product attention kernels in every attention layer."""
    from diffusers.models import attention_processor

    sdpa: Any = attention_processor.AttnProcessor2_0
    unet.set_attn_processor(sdpa())
