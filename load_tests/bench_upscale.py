"""Upscale throughput, three ways in one run, for N concurrent requests of one size.

(a) reference: one image at a time through the bare model, whole image in one
    forward pass with 10 px reflect pre-padding, as RealESRGANer does;
(b) engine: the pixserve tile engine in-process (tiling, cross-request batching and
    stitching on the model's device) behind a micro-batcher shaped like ``@serve.batch``;
(c) service: the same requests over HTTP to the real Ray Serve application.

Every mode decodes the uploaded bytes and encodes the result with the same encoders,
so the ratios compare the same work. For (c) it also reports the CPU-seconds per image
of the Ingress and of the Upscaler replica, and each one's peak RSS during the run.
``--model null`` is a near-zero-cost x4 model (the data volume of x4plus): what the
pipeline itself costs. Prints a table and writes JSON. Not a test: nothing here
asserts time.

    python load_tests/bench_upscale.py --model null --requests 16 --size 512
    python load_tests/bench_upscale.py --model tiny --requests 16 --size 512
    python load_tests/bench_upscale.py --model x4plus --store var/models --compile
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from load_tests.procstats import ProcessStats, replica_pids
from services.config import Settings
from services.errors import PixserveError
from services.imaging.codec import decode_image, encode_image, encoder_options, image_limits
from services.models.manifest import load_manifest
from services.models.store import ModelStore
from services.models.tile_io import TileJob, TileOutput
from services.models.upscaler import UpscaleEngine
from services.pipelines.upscale import UpscaleOptions, upscale_upload
from tests.utils.tiny_models import NULL_X4, TINY_RRDB, build_tiny_store

BUILT_IN = {"tiny": TINY_RRDB, "null": NULL_X4}  # models built here, random weights


@dataclass
class ModeResult:
    """Throughput of one mode (best of the measured rounds) and what it cost."""

    mode: str
    images_per_s: float
    seconds: list[float]
    cpu_s_per_image: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: dict[str, float] = field(default_factory=dict)


class MicroBatcher:
    """Collects concurrent requests like ``@serve.batch``; runs each group at once."""

    def __init__(self, engine: UpscaleEngine, max_requests: int, wait_s: float) -> None:
        self.engine, self.max_requests, self.wait_s = engine, max_requests, wait_s
        self.queue: asyncio.Queue[tuple[TileJob, asyncio.Future[TileOutput]]] = asyncio.Queue()

    async def upscale_image(self, job: TileJob) -> TileOutput:
        future: asyncio.Future[TileOutput] = asyncio.get_running_loop().create_future()
        await self.queue.put((job, future))
        return await future

    async def run(self) -> None:
        while True:
            batch = [await self.queue.get()]
            deadline = time.monotonic() + self.wait_s
            while len(batch) < self.max_requests and (left := deadline - time.monotonic()) > 0:
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), left))
                except TimeoutError:
                    break
            results = await asyncio.to_thread(self.engine.predict, [job for job, _ in batch])
            for (_, future), result in zip(batch, results, strict=True):
                if isinstance(result, PixserveError):
                    future.set_exception(result)
                else:
                    future.set_result(result)


def sample_images(count: int, size: int) -> list[bytes]:
    """``count`` distinct PNGs of ``size`` px: flips and rotations of the astronaut."""
    from skimage import data

    base = Image.fromarray(np.asarray(data.astronaut())).resize((size, size))
    images = []
    for index in range(count):
        variant = base.rotate(90 * (index % 4))
        if index // 4 % 2:
            variant = variant.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        buffer = io.BytesIO()
        variant.save(buffer, "PNG")
        images.append(buffer.getvalue())
    return images


def reference_mode(engine: UpscaleEngine, model: str, images: list[bytes], fmt: str) -> None:
    """(a) One image at a time, whole image, bare model (RealESRGANer's default path)."""
    loaded, settings = engine.models[model], engine.settings
    pad = 10
    for data in images:
        pixels = decode_image(data, image_limits(settings)).pixels
        tensor = torch.from_numpy(pixels).to(engine.device).permute(2, 0, 1)[None]
        with torch.inference_mode():
            batch = tensor.to(engine.dtype).div_(255)
            padded = torch.nn.functional.pad(batch, (pad, pad, pad, pad), mode="reflect")
            output = loaded.module(padded.contiguous())[0]
            border = pad * loaded.scale
            output = output[:, border:-border, border:-border].clamp_(0, 1)
            quantised = output.mul_(255).round_().to(torch.uint8).permute(1, 2, 0).cpu()
        encode_image(quantised.numpy(), fmt, 90, encoder_options(settings))  # type: ignore[arg-type]


async def engine_mode(
    engine: UpscaleEngine, model: str, images: list[bytes], fmt: str, settings: Settings
) -> None:
    """(b) All requests at once through the pipeline and a micro-batcher."""
    batcher = MicroBatcher(engine, settings.batch_max_requests, settings.batch_wait_timeout_s)
    runner = asyncio.create_task(batcher.run())
    spec = engine.store.manifest.get(model)
    options = UpscaleOptions(model, output_format=fmt)  # type: ignore[arg-type]
    await asyncio.gather(
        *(upscale_upload(data, options, spec.scale, batcher, settings) for data in images)
    )
    runner.cancel()


def http_mode(url: str, model: str, images: list[bytes], fmt: str) -> None:
    """(c) All requests at once over HTTP to the running service."""

    def send(data: bytes) -> None:
        files = {"image": ("in.png", data, "image/png")}
        form = {"model": model, "format": fmt}
        response = httpx.post(f"{url}/v1/upscale", files=files, data=form, timeout=3600)
        response.raise_for_status()

    with ThreadPoolExecutor(max_workers=len(images)) as pool:
        list(pool.map(send, images))


def measure(
    name: str, run: Callable[[], Any], count: int, rounds: int, processes: dict[str, int]
) -> ModeResult:
    """One warm-up run, then ``rounds`` timed ones; CPU time and peak RSS of each named
    process over the timed rounds."""
    run()  # warm-up: allocator, cudnn autotune, compile caches
    stats = ProcessStats(processes)
    seconds = []
    for _ in range(rounds):
        started = time.perf_counter()
        run()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - started)
    cpu = {name: spent / (count * rounds) for name, spent in stats.cpu_seconds().items()}
    return ModeResult(name, count / min(seconds), seconds, cpu, stats.peak_rss_mb())


def start_service(settings: Settings, num_gpus: float) -> tuple[str, Callable[[], None]]:
    """Deploy the packaged Serve config with these settings; return its URL and a stop."""
    import ray

    from deployments import local

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    single = {"autoscaling_config": {"min_replicas": 1, "max_replicas": 1}}
    config = local.localize(
        local.load_config(),
        args=settings.model_dump(mode="json", exclude_defaults=True),
        deployments={
            "Ingress": {**single, "ray_actor_options": {"num_cpus": 0.1}},
            "Upscaler": {
                **single,
                "ray_actor_options": {"num_cpus": 0.1, "num_gpus": num_gpus},
                "user_config": {
                    "max_batch_size": settings.batch_max_requests,
                    "batch_wait_timeout_s": settings.batch_wait_timeout_s,
                },
            },
        },
        port=port,
    )
    ray.init(namespace="serve", include_dashboard=False, num_cpus=8, log_to_driver=False)
    local.deploy(config, timeout_s=600)
    return f"http://127.0.0.1:{port}", local.shutdown


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny", help="'null', 'tiny' or a model in the store")
    parser.add_argument("--store", type=Path, default=Path("var/models"))
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--format", default="jpeg", choices=["png", "jpeg", "webp"])
    parser.add_argument("--tile-size", type=int, default=256)
    parser.add_argument("--tile-batch", type=int, default=None, help="default: the device's")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"])
    parser.add_argument("--compile", action="store_true", help="torch.compile (CUDA)")
    parser.add_argument("--skip-http", action="store_true", help="no Ray here: (a) and (b)")
    parser.add_argument("--json", type=Path, default=Path("var/bench_upscale.json"))
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="also write a cProfile of one engine pass (b) to this file",
    )
    return parser.parse_args(argv)


def build_settings(args: argparse.Namespace, store: Path, manifest: Path | None) -> Settings:
    return Settings(
        model_store=store,
        extra_manifest=manifest,
        models=[args.model],
        default_model=args.model,
        tile_size=args.tile_size,
        tile_batch_size=args.tile_batch,
        precision=args.precision,
        compile=args.compile,
        batch_max_requests=args.requests,
        batch_wait_timeout_s=0.02,
        max_input_pixels=max(args.size**2, 4096**2),
        max_output_pixels=max((4 * args.size) ** 2, 8192**2),
        torch_threads=None if torch.cuda.is_available() else os.cpu_count(),
    )


def main(argv: list[str] | None = None) -> list[ModeResult]:
    args = parse_args(argv)
    store, manifest = args.store, None
    if args.model in BUILT_IN:
        args.model = BUILT_IN[args.model]
        store = Path(tempfile.mkdtemp(prefix="pixserve-bench-"))
        manifest = build_tiny_store(store)
    settings = build_settings(args, store, manifest)
    engine = UpscaleEngine(settings, ModelStore(store, load_manifest(manifest)))
    engine.load()
    if args.model not in engine.models:
        raise SystemExit(f"error: {engine.missing.get(args.model)}")
    results = run_modes(args, settings, engine)
    report(args, settings, results, engine.runtime.tile_batch)
    if args.profile is not None:
        profile_engine(engine, args, settings, args.profile)
    return results


def profile_engine(
    engine: UpscaleEngine, args: argparse.Namespace, settings: Settings, path: Path
) -> None:
    """Where (b)'s time goes: decode every image, then one ``predict`` over all of them
    in this thread (the micro-batcher runs it in a worker, which cProfile cannot see),
    the top functions by own time written to ``path``."""
    import cProfile
    import pstats

    images = sample_images(args.requests, args.size)
    options = UpscaleOptions(args.model, output_format=args.format)
    spec = engine.store.manifest.get(args.model)
    profiler = cProfile.Profile()
    profiler.enable()
    decoded = [decode_image(data, image_limits(settings)) for data in images]
    jobs = [TileJob(args.model, image.pixels, (image.width * spec.scale, image.height *
                    spec.scale), options.quality if args.format == "jpeg" else None)
            for image in decoded]  # fmt: skip
    engine.predict(jobs)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    profiler.disable()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as out:
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(35)
    print(f"wrote {path}")


def run_modes(
    args: argparse.Namespace, settings: Settings, engine: UpscaleEngine
) -> list[ModeResult]:
    """Measure (a) and (b) in-process, then free the engine and measure (c)."""
    model, fmt, images = args.model, args.format, sample_images(args.requests, args.size)
    here = {"this process": os.getpid()}

    def timed(name: str, run: Callable[[], Any], processes: dict[str, int]) -> ModeResult:
        return measure(name, run, len(images), args.rounds, processes)

    results = [
        timed("a: one at a time, bare model",
              lambda: reference_mode(engine, model, images, fmt), here),
        timed("b: engine, cross-request batching",
              lambda: asyncio.run(engine_mode(engine, model, images, fmt, settings)), here),
    ]  # fmt: skip
    if args.skip_http:
        return results
    engine.models.clear()  # give the memory back before the service loads its own copy
    url, stop = start_service(settings, 1.0 if torch.cuda.is_available() else 0.0)
    try:
        pids = replica_pids(["Ingress", "Upscaler"])
        results.append(
            timed("c: HTTP service (Ray Serve)", lambda: http_mode(url, model, images, fmt), pids)
        )
    finally:
        stop()
    return results


def report(
    args: argparse.Namespace, settings: Settings, results: list[ModeResult], tile_batch: int
) -> None:
    base = results[0].images_per_s
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else _cpu_name()
    print(f"\n{args.requests} x {args.size}x{args.size} -> {args.format}, model {args.model}, "
          f"tile {settings.tile_size}+{settings.tile_pad}, tile batch {tile_batch}, "
          f"device {device}, torch {torch.__version__}")  # fmt: skip
    print(f"{'mode':<40} {'img/s':>8} {'vs (a)':>7}  CPU s/img, peak RSS MB")
    for result in results:
        costs = ", ".join(f"{name} {result.cpu_s_per_image[name]:.3f} s / "
                          f"{result.peak_rss_mb.get(name, 0):.0f} MB"
                          for name in result.cpu_s_per_image)  # fmt: skip
        print(f"{result.mode:<40} {result.images_per_s:>8.3f} "
              f"{result.images_per_s / base:>6.2f}x  {costs}")  # fmt: skip
    if len(results) == 3:
        print(f"(c) / (b) = {results[2].images_per_s / results[1].images_per_s:.0%}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "args": {key: str(value) for key, value in vars(args).items()},
        "device": device,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "results": [result.__dict__ for result in results],
    }
    args.json.write_text(json.dumps(payload, indent=2))
    print(f"wrote {args.json}")


def _cpu_name() -> str:
    """The CPU model and core count, e.g. 'AMD EPYC x2'."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        name = next(line.split(":", 1)[1].strip() for line in lines if "model name" in line)
    except (OSError, StopIteration):
        name = platform.machine()
    return f"{name} x{os.cpu_count()}"


if __name__ == "__main__":
    main()
