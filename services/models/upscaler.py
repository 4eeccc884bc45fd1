"""The tile engine: image-to-image models loaded through spandrel, fed whole images.

It serves the Upscaler (Real-ESRGAN) and the Denoiser (SCUNet, DnCNN: scale 1) alike.

A plain class with no serving code: ``load()`` once, then ``predict()`` on a list of
whole decoded images (uint8, or uint16 for 16-bit inputs) from any number of
requests. Everything between the upload's pixels and the output's happens here, on
the model's device: the pixels go there as integers, are padded and cut into tiles
(gray images run as RGB, alpha as a second gray plane), tiles of the same model and
size are concatenated across requests and run in chunks (``tile_batch_size``: 8 on
CUDA, 1 on CPU, where one tile already uses every core and stays in cache), and
each chunk's outputs are quantised and pasted straight into the integer output
canvas, so no float copy at output size exists. A final resize reaches any requested
size; on CUDA a JPEG output is encoded there too (nvjpeg), so only its bytes leave.

On CUDA: fp16/bf16, channels_last, a per-process memory cap, and optional
torch.compile, warmed at load for every shape a request can produce (tile edges from
``tile_edges``, chunks padded to ``batch_buckets``), so no request waits for a
compilation. On out-of-memory the chunk is halved and retried before the request fails.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import spandrel
import torch

from services.config import Settings
from services.errors import (
    EngineOutOfMemory,
    InvalidImage,
    ModelNotReady,
    NotConfigured,
    PixserveError,
)
from services.imaging.codec import LUMA
from services.imaging.previews import Preview, stitched_preview
from services.imaging.tiling import (
    TileGrid,
    paste_core,
    plan_grid,
    split_tiles,
    tile_core,
    tile_edges,
)
from services.models import ffdnet
from services.models.residency import Residency
from services.models.runtime import (
    EngineStatus,
    TorchRuntime,
    allow_compiled_shapes,
    batch_buckets,
)
from services.models.store import ModelStore
from services.models.tile_io import TileJob, TileOutput

logger = logging.getLogger(__name__)
# Architectures whose squeeze-and-excitation blocks average over their whole input: a
# tile's statistics are not the image's, so a tiled output drifts from the whole one
# (Real-CUGAN: 36-55 dB against ncnn, which syncs those averages across its tiles). An
# image up to WHOLE_IMAGE_TILES tile edges on its longer side runs in one piece instead;
# larger ones are tiled.
GLOBAL_CONTEXT = frozenset({"RealCUGAN"})
WHOLE_IMAGE_TILES = 2

__all__ = ["EngineStatus", "ForwardPass", "TileJob", "TileOutput", "UpscaleEngine"]


@dataclass(frozen=True)
class ForwardPass:
    """A record of one forward pass: how many tiles, from how many requests."""

    model: str
    tiles: int
    request_ids: tuple[str, ...]
    tile_size: int
    seconds: float
    capacity: int = 0  # tiles the pass's chunks could have held (for the fill ratio)


@dataclass
class LoadedModel:
    """A ready model: the module, its scale and how big a chunk it currently takes.

    ``eager`` is the same weights without torch.compile, for the health probe, whose
    odd shape would otherwise make a shape-specialised compiled module recompile.
    ``buckets`` are the batch sizes a compiled module runs at (empty: any size).
    """

    module: torch.nn.Module
    eager: torch.nn.Module
    scale: int
    batch_limit: int
    load_seconds: float
    minimum: int = 0  # spandrel's size requirements: inputs are padded to meet them
    multiple_of: int = 1
    buckets: tuple[int, ...] = ()
    whole_image: bool = False  # global statistics (SE blocks): run an image in one piece
    takes_noise: bool = False  # FFDNet: the noise level is an input


@dataclass
class _Work:
    """One request inside ``predict``: its tiles on the device and its output canvas.
    Plane 0 is the colour (gray runs as RGB), plane 1 the alpha, when there is one."""

    job: TileJob
    loaded: LoadedModel
    grid: TileGrid
    tiles: torch.Tensor  # (planes * grid.count, 3, S, S), the input's integer dtype
    canvas: torch.Tensor  # (H * scale, W * scale, C), the input's integer dtype
    peak: float  # 255 or 65535
    whole: bool = False  # one untiled piece per plane (GLOBAL_CONTEXT)


@dataclass
class _Group:
    """Requests whose tiles share forward passes: same model, tile size and dtype."""

    model: str
    members: list[int] = field(default_factory=list)


class UpscaleEngine(Residency):
    """Loads the configured models and runs whole images through them, tiled."""

    def __init__(
        self,
        settings: Settings,
        store: ModelStore,
        models: list[str] | None = None,
        gpu_share: float = 0.0,
    ) -> None:
        super().__init__(settings.memory_mode)
        self.settings = settings
        self.store = store
        self.model_names = settings.models if models is None else models
        self.runtime = TorchRuntime(settings, gpu_share)
        self.memory_fraction = self.runtime.memory_fraction
        self.device, self.dtype = self.runtime.device, self.runtime.dtype
        self.models: dict[str, LoadedModel] = {}
        self.missing: dict[str, str] = {}
        self.passes: deque[ForwardPass] = deque(maxlen=256)
        self.on_pass: Callable[[ForwardPass], None] | None = None  # metrics hook
        # a job item's tiles done of its total after each chunk, and its preview so far
        # (the replica's reporter renders it only for a live viewer)
        self.on_progress: Callable[[TileJob, int, int, Preview], None] | None = None
        self.canceled: set[str] = set()  # request ids whose callers went away

    def load(self) -> None:
        """Load every model named in settings; a missing one is recorded, not fatal."""
        self.runtime.apply_limits()
        self.load_configured()

    def predict(self, jobs: list[TileJob]) -> list[TileOutput | PixserveError]:
        """Run each request's image; errors are returned per request, not raised, so
        one bad request never fails the others of its batch."""
        results: dict[int, TileOutput | PixserveError] = {}
        works: dict[int, _Work] = {}
        with torch.inference_mode():
            for index, job in enumerate(jobs):
                try:
                    works[index] = self._prepare(job)
                except PixserveError as exc:
                    results[index] = exc
            for group in _group(works).values():
                try:
                    self._run_group(group, works)
                except PixserveError as exc:
                    for index in group.members:
                        results[index] = exc
                        works.pop(index)
            for index, output in zip(works, self._finish(list(works.values())), strict=True):
                results[index] = output
        self.canceled.difference_update(job.request_id for job in jobs)
        return [results[index] for index in range(len(jobs))]  # every request has one

    def status(self) -> EngineStatus:
        return EngineStatus(
            device=str(self.device),
            dtype=str(self.dtype).removeprefix("torch."),
            loaded={name: loaded.scale for name, loaded in self.models.items()},
            missing=dict(self.missing),
            load_seconds={name: loaded.load_seconds for name, loaded in self.models.items()},
            resting=sorted(self.unloaded),
        )

    def gpu_memory(self) -> dict[str, float]:
        """Bytes of GPU memory this process uses, holds and may hold (empty on CPU)."""
        return self.runtime.gpu_memory()

    def check_health(self) -> None:
        """Raise when the device no longer computes, so Serve replaces this replica.

        Repeated CUDA errors fail at once; otherwise every loaded model runs a tiny
        probe (8x8 px), which catches a wedged device or corrupted module cheaply.
        """
        self.runtime.check_errors()
        probe = torch.zeros((1, 3, 8, 8), dtype=self.dtype, device=self.device)
        for name, loaded in self.models.items():
            with torch.inference_mode():
                output = self._forward(loaded, probe, loaded.eager)
            if tuple(output.shape) != (1, 3, 8 * loaded.scale, 8 * loaded.scale):
                raise RuntimeError(f"{name}: health probe returned shape {tuple(output.shape)}")

    # loading

    def configured_models(self) -> list[str]:
        return list(self.model_names)

    def _held(self) -> dict[str, LoadedModel]:
        return self.models

    def _load_into(self, name: str) -> None:
        self.models[name] = self._load_one(name)

    def _drop(self, name: str) -> None:
        del self.models[name]

    def _batch_limit(self) -> int:
        """Tiles per pass: one in the low memory mode, else the device's batch."""
        return 1 if self.memory_mode == "low" else self.runtime.tile_batch

    def _apply_memory_mode(self) -> None:
        """Every loaded model's tile batch follows the mode; high compiles on CUDA."""
        for loaded in self.models.values():
            loaded.batch_limit = self._batch_limit()
            if self.memory_mode == "high" and self.device.type == "cuda" and not loaded.buckets:
                self._compile(loaded)

    def _load_one(self, name: str) -> LoadedModel:
        spec = self.store.manifest.get(name)
        path = self.store.locate(name)
        started = time.perf_counter()
        ffdnet.install()  # the project's own architectures, beside spandrel's
        descriptor = spandrel.ModelLoader(device=self.device).load_from_file(path)
        if descriptor.scale != spec.scale:
            raise ModelNotReady(
                f"{path.name} is a x{descriptor.scale} model; the manifest says x{spec.scale}"
            )
        if (descriptor.input_channels, descriptor.output_channels) != (3, 3):
            raise ModelNotReady(f"{path.name} is not an RGB model ({descriptor.input_channels} "
                                f"channels in, {descriptor.output_channels} out)")  # fmt: skip
        eager = descriptor.model.eval().to(self.device, self.dtype)
        needs = descriptor.size_requirements
        loaded = LoadedModel(eager, eager, spec.scale, self._batch_limit(), 0.0,
                             needs.minimum, needs.multiple_of,
                             whole_image=descriptor.architecture.id in GLOBAL_CONTEXT,
                             takes_noise=descriptor.architecture.id == "FFDNet")  # fmt: skip
        if self.device.type == "cuda":
            loaded.eager = loaded.module = eager.to(memory_format=torch.channels_last)
            if self.settings.compile or self.memory_mode == "high":
                self._compile(loaded)
        loaded.load_seconds = time.perf_counter() - started
        return loaded

    def _compile(self, loaded: LoadedModel) -> None:
        """Compile, then run every serving shape once (each tile edge at each batch
        bucket), so requests never pay for a compilation."""
        loaded.module = torch.compile(loaded.eager, dynamic=False)  # type: ignore[assignment]
        loaded.buckets = batch_buckets(loaded.batch_limit)
        edges = tile_edges(self.settings.tile_size)
        allow_compiled_shapes(len(edges) * len(loaded.buckets))
        pad = self.settings.tile_pad
        with torch.inference_mode():
            for edge in edges:
                for size in loaded.buckets:
                    warm = torch.zeros((size, 3, edge + 2 * pad, edge + 2 * pad),
                                       dtype=self.dtype, device=self.device)  # fmt: skip
                    self._forward(loaded, warm)

    # one request in, one out

    def _prepare(self, job: TileJob) -> _Work:
        """Check the request, move its pixels to the device, cut its tiles, and make
        its output canvas."""
        loaded = self._model(job.model)
        pixels = job.pixels if job.pixels.ndim == 3 else job.pixels[:, :, None]
        height, width, channels = pixels.shape
        if pixels.dtype not in (np.uint8, np.uint16) or channels not in (1, 2, 3, 4):
            raise InvalidImage(f"cannot upscale a {pixels.dtype} image of {channels} channels")
        image = torch.from_numpy(np.ascontiguousarray(pixels)).to(self.device).permute(2, 0, 1)
        color = image[:3] if channels >= 3 else image[:1].expand(3, -1, -1)
        planes = [color] + ([image[-1:].expand(3, -1, -1)] if channels in (2, 4) else [])
        whole = loaded.whole_image and max(height, width) <= WHOLE_IMAGE_TILES * (
            self.settings.tile_size)  # fmt: skip
        if whole:
            grid = TileGrid(height, width, tile=max(height, width), pad=0)
            tiles = torch.stack(planes)  # one (H, W) piece per plane: see GLOBAL_CONTEXT
        else:
            grid = plan_grid(height, width, self.settings.tile_size, self.settings.tile_pad)
            tiles = split_tiles(torch.stack(planes), grid)
        canvas = torch.empty((height * loaded.scale, width * loaded.scale, channels),
                             dtype=image.dtype, device=self.device)  # fmt: skip
        peak = 65535.0 if pixels.dtype == np.uint16 else 255.0
        return _Work(job, loaded, grid, tiles, canvas, peak, whole)

    def _model(self, name: str) -> LoadedModel:
        if name in self.model_names:
            self.touch(name)  # loads it again if it was unloaded
        loaded = self.models.get(name)
        if loaded is not None:
            return loaded
        if name in self.missing:
            raise ModelNotReady(self.missing[name])
        raise NotConfigured(
            f"model '{name}' is not configured on this deployment (it loads "
            f"{', '.join(self.model_names) or 'none'}): add it to PIXSERVE_MODELS (the "
            f"chart's settings.models) and fetch it with `pixserve models pull {name}`"
        )

    def _finish(self, works: list[_Work]) -> list[TileOutput]:
        """Resize each canvas to its requested size; JPEGs on CUDA are encoded there,
        all in one nvjpeg call; everything else goes back to the host."""
        outputs = [resize_canvas(work.canvas, work.job.size) for work in works]
        on_device = [
            i for i, work in enumerate(works)
            if work.job.jpeg_quality is not None and self.device.type == "cuda"
        ]  # fmt: skip
        encoded = encode_jpegs_on_device([outputs[i] for i in on_device],
                                         [works[i] for i in on_device])  # fmt: skip
        jpegs = dict(zip(on_device, encoded, strict=True))
        return [
            TileOutput(None, jpegs[i], len(work.tiles)) if i in jpegs
            else TileOutput(outputs[i].cpu().numpy(), None, len(work.tiles))
            for i, work in enumerate(works)
        ]  # fmt: skip

    # forward passes shared by requests

    def _run_group(self, group: _Group, works: dict[int, _Work]) -> None:
        """Concatenate the group's tiles, run them in chunks, paste each chunk's outputs
        into their owners' canvases."""
        members = [works[index] for index in group.members]
        loaded = members[0].loaded
        stack = torch.cat([work.tiles for work in members])
        owners = [(work, local) for work in members for local in range(len(work.tiles))]
        started = time.perf_counter()
        chunks = 0
        peak = members[0].peak
        # a whole image's shape is its own: the eager module, not a shape-compiled one
        module = loaded.eager if members[0].whole else None
        noise = members[0].job.noise_level
        for start, output in self._run_chunks(loaded, stack, peak, module, noise):
            # quantised a chunk at once (float32: fp16 cannot hold 65535.5; the paste's
            # cast truncates, hence the half)
            scaled = output.float().mul_(peak).add_(0.5)
            for offset, tile in enumerate(scaled):
                work, local = owners[start + offset]
                _paste(work, tile, local)
            chunks += 1
            self._report(owners[start : start + len(scaled)])
            if self.canceled and self._only_canceled_left(owners[start + len(scaled) :]):
                break  # nobody waits for the rest: the device is free for the next batch
        record = ForwardPass(group.model, len(stack), tuple(w.job.request_id for w in members),
                             int(stack.shape[-1]), time.perf_counter() - started,
                             chunks * loaded.batch_limit)  # fmt: skip
        self.passes.append(record)
        if self.on_pass is not None:
            self.on_pass(record)

    def cancel(self, request_id: str) -> None:
        """The request's caller is gone (a canceled job item, a passed deadline): its
        tiles stop at the next chunk, once no other request's tiles remain after it."""
        self.canceled.add(request_id)
        if len(self.canceled) > 10_000:  # ids of requests that had ended anyway
            self.canceled.clear()

    def _only_canceled_left(self, remaining: list[tuple[_Work, int]]) -> bool:
        return bool(remaining) and all(
            work.job.request_id in self.canceled for work, _ in remaining)  # fmt: skip

    def _report(self, pasted: list[tuple[_Work, int]]) -> None:
        """Each job item that had tiles in the chunk: how many of its tiles are done
        (tiles run in order, so the last pasted one counts them)."""
        if self.on_progress is None:
            return
        last: dict[int, tuple[_Work, int]] = {}
        for work, local in pasted:
            if work.job.progress_key is not None:
                last[id(work)] = (work, local)
        for work, local in last.values():
            self.on_progress(work.job, local + 1, len(work.tiles), _preview_of(work, local + 1))

    def _run_chunks(
        self,
        loaded: LoadedModel,
        stack: torch.Tensor,
        peak: float,
        module: torch.nn.Module | None = None,
        noise: float | None = None,
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield (first tile, float outputs) per chunk; on CUDA OOM halve the chunk and
        retry, down to one tile."""
        start = 0
        while start < len(stack):
            chunk = stack[start : start + loaded.batch_limit]
            try:
                output = self._forward(loaded, _to_model(chunk, self.dtype, peak), module, noise)
            except torch.OutOfMemoryError as exc:
                self._shrink_after_oom(loaded, exc)
                continue
            yield start, output
            start += len(chunk)

    def _shrink_after_oom(self, loaded: LoadedModel, exc: Exception) -> None:
        self.runtime.release_after_oom()
        if loaded.batch_limit == 1:
            raise EngineOutOfMemory(
                "out of GPU memory even at one tile per pass; lower tile_size"
            ) from exc
        loaded.batch_limit = max(1, loaded.batch_limit // 2)
        logger.warning("CUDA out of memory; tile batch lowered to %d", loaded.batch_limit)

    def _forward(
        self,
        loaded: LoadedModel,
        batch: torch.Tensor,
        module: torch.nn.Module | None = None,
        noise: float | None = None,
    ) -> torch.Tensor:
        """One forward pass in [0, 1]; the batch is padded (edge pixels repeated) to the
        model's size requirements and to its compiled batch bucket, and the padding
        cropped off the result. A model that takes a noise level gets ``noise`` (0-255
        scale) for every tile, or its own default."""
        count, height, width = len(batch), *batch.shape[-2:]
        tensor = _pad_to(batch, loaded.minimum, loaded.multiple_of)
        if module is None and loaded.buckets:
            size = next((b for b in loaded.buckets if b >= count), loaded.buckets[-1])
            tensor = torch.cat([tensor, tensor[:1].expand(size - count, -1, -1, -1)])
        if self.device.type == "cuda":
            tensor = tensor.contiguous(memory_format=torch.channels_last)
        try:
            inputs = [tensor]
            if loaded.takes_noise and noise is not None:
                inputs.append(torch.full((len(tensor),), noise / 255.0, dtype=tensor.dtype,
                                         device=tensor.device))  # fmt: skip
            output = (module or loaded.module)(*inputs)
        except torch.OutOfMemoryError:
            raise
        except RuntimeError:
            self.runtime.count_error()
            raise
        self.runtime.cuda_errors = 0
        cropped: torch.Tensor = output[:count, :, : height * loaded.scale, : width * loaded.scale]
        return cropped.clamp_(0, 1)


def _to_model(tiles: torch.Tensor, dtype: torch.dtype, peak: float) -> torch.Tensor:
    """Integer tiles as the model's float dtype in [0, 1]: the only float copy of the
    input, one chunk at a time."""
    return tiles.to(dtype).div_(peak)


def _paste(work: _Work, output: torch.Tensor, local: int) -> None:
    """One tile's (3, s, s) output, scaled to the peak plus 0.5, into its owner's integer
    canvas: colour as RGB or luma (gray images), alpha as the mean of its three
    channels. The cast truncates, so it rounds (luma's weights sum to 1, so a weighted
    sum keeps the half)."""
    plane, index = divmod(local, work.grid.count)
    core = tile_core(output, work.grid, work.loaded.scale, index)
    channels = work.canvas.shape[2]
    if plane == 1:
        core, where = core.mean(0, keepdim=True), slice(channels - 1, channels)
    elif channels < 3:
        weights = torch.tensor(LUMA, dtype=core.dtype, device=core.device)
        core, where = torch.einsum("chw,c->hw", core, weights)[None], slice(0, 1)
    else:
        where = slice(0, 3)
    paste_core(work.canvas, core, work.grid, work.loaded.scale, index, where)


def resize_canvas(canvas: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    """Resize an HxWxC integer canvas to ``size`` (width, height): Lanczos up, area
    down with OpenCV on the host; bicubic up, area down with torch on CUDA."""
    height, width = canvas.shape[:2]
    if size is None or size == (width, height):
        return canvas
    shrinking = size[0] * size[1] < width * height
    if canvas.device.type != "cuda":
        interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LANCZOS4
        pixels: np.ndarray = cv2.resize(canvas.numpy(), size, interpolation=interpolation)
        return torch.from_numpy(pixels.reshape(size[1], size[0], canvas.shape[2]))
    peak = 65535.0 if canvas.dtype == torch.uint16 else 255.0
    planar = canvas.permute(2, 0, 1)[None].float()
    mode = "area" if shrinking else "bicubic"
    resized: torch.Tensor = torch.nn.functional.interpolate(planar, size=(size[1], size[0]),
                                                            mode=mode)  # fmt: skip
    return resized[0].round_().clamp_(0, peak).to(canvas.dtype).permute(1, 2, 0)


def encode_jpegs_on_device(images: list[torch.Tensor], works: list[_Work]) -> list[bytes]:
    """HxWxC canvases on CUDA as JPEG bytes in one batched nvjpeg call (16-bit scaled to
    8, alpha composited onto white, as the CPU encoder does)."""
    if not images:
        return []
    from torchvision.io import encode_jpeg

    planar = [_jpeg_ready(image, work.peak) for image, work in zip(images, works, strict=True)]
    quality = works[0].job.jpeg_quality or 90
    if any(work.job.jpeg_quality != quality for work in works):  # one quality per call
        return [encode_jpegs_on_device([i], [w])[0] for i, w in zip(images, works, strict=True)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision 0.29 deprecates its codecs for TorchCodec
        encoded = encode_jpeg(planar, quality=quality)
    return [bytes(data.cpu().numpy().tobytes()) for data in encoded]


def _jpeg_ready(image: torch.Tensor, peak: float) -> torch.Tensor:
    """A CxHxW uint8 tensor of 1 or 3 channels for nvjpeg."""
    values = image.permute(2, 0, 1).float().div_(peak)
    if values.shape[0] in (2, 4):  # alpha over white
        alpha = values[-1:]
        values = values[:-1] * alpha + (1 - alpha)
    return values.mul_(255).round_().clamp_(0, 255).to(torch.uint8).contiguous()


def _pad_to(tensor: torch.Tensor, minimum: int, multiple_of: int) -> torch.Tensor:
    """Pad bottom and right so each side is >= ``minimum`` and a multiple of ``multiple_of``."""
    height, width = tensor.shape[-2:]

    def target(side: int) -> int:
        side = max(side, minimum)
        return -(-side // multiple_of) * multiple_of

    extra_h, extra_w = target(height) - height, target(width) - width
    if not extra_h and not extra_w:
        return tensor
    return torch.nn.functional.pad(tensor, (0, extra_w, 0, extra_h), mode="replicate")


def _group(works: dict[int, _Work]) -> dict[tuple[Any, ...], _Group]:
    """Works that share forward passes: same model, tile shape, dtype, tiling and noise."""
    groups: dict[tuple[Any, ...], _Group] = {}
    for index, work in works.items():
        key = (work.job.model, *work.tiles.shape[-2:], work.tiles.dtype, work.whole,
               work.job.noise_level)  # fmt: skip
        groups.setdefault(key, _Group(work.job.model)).members.append(index)
    return groups


class EngineBackend:
    """Runs requests on an in-process engine: the pipeline's backend without Serve.

    Used by tests; the service uses the Serve handle backend instead.
    """

    def __init__(self, engine: UpscaleEngine) -> None:
        self.engine = engine

    def serves(self) -> set[str]:
        """The deployment it stands in for (presets needing others are off)."""
        return {"Upscaler"}

    async def upscale_image(self, job: TileJob) -> TileOutput:
        (result,) = self.engine.predict([job])
        if isinstance(result, PixserveError):
            raise result
        return result


def _preview_of(work: _Work, done: int) -> Preview:
    """The work's canvas with its first ``done`` tiles pasted, as a JPEG, on demand."""
    return lambda: stitched_preview(work.canvas, work.job.pixels, work.grid, work.loaded.scale,
                                    done)  # fmt: skip
