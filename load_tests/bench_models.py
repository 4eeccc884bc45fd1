"""Model benchmarks, each a ratio against a reference measured in the same run.

faces: GFPGAN faces/s through the face engine, batched (``face_batch_size`` faces per
    forward pass, as concurrent requests meet in the FaceRestorer) vs one face at a
    time (``--compile``: both compiled, on CUDA). Random weights at GFPGAN's published
    size: the compute is the real one.
sdxl: seconds per image, SDXL text-to-image through the diffusion engine with
    pixserve's settings (fp16 on CUDA, SDPA, optional torch.compile of the UNet) vs the
    plain diffusers pipeline with its defaults (fp32), same size, steps and scheduler.
    The pipeline is SDXL's real architecture (UNet 2.6 B parameters, both CLIP text
    encoders, the VAE) built from its config with random weights, or the tiny test
    repository with ``--tiny``.
mesh: seconds per mesh for each engine at its default resolution (256) through the
    Mesher engine (fp16 on CUDA, large query chunks) vs the plain reference: one image
    at a time, fp32, TripoSR queried in its run.py's chunks of 8192 points and its mesh
    written undecimated, the depth model through transformers' own pipeline. TripoSR
    and Depth Anything V2 Small at their published sizes with random weights (the
    field's surface is random: its face count is printed), or the tiny ones with
    ``--tiny``.

Prints a table and writes JSON. Not a test: nothing here asserts time.

    python load_tests/bench_models.py faces --faces 32 --batch 8 [--compile]
    python load_tests/bench_models.py sdxl --size 1024 --steps 30 --compile
    python load_tests/bench_models.py sdxl --tiny --size 256 --steps 4   # CPU smoke run
    python load_tests/bench_models.py mesh --resolution 256
    python load_tests/bench_models.py mesh --tiny --resolution 32 --rounds 1   # CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from services.config import Settings
from services.models.diffusion import DiffusionEngine, GenerateOptions
from services.models.faces import FaceCrops, FaceEngine
from services.models.manifest import load_manifest
from services.models.mesh_io import MeshOptions
from services.models.mesher import MesherEngine
from services.models.store import ModelStore
from services.models.triposr import TripoSR
from tests.utils.tiny_meshers import TINY_DEPTH, TINY_TRIPOSR
from tests.utils.tiny_models import TINY_GFPGAN, TINY_SDXL, build_tiny_store


def best_of(rounds: int, work: Callable[[], None]) -> float:
    """Fastest of ``rounds`` timed runs after one warm-up (CUDA synchronised)."""
    work()
    times = []
    for _ in range(rounds):
        _sync()
        started = time.perf_counter()
        work()
        _sync()
        times.append(time.perf_counter() - started)
    return min(times)


def bench_faces(store: Path, manifest: Path, args: argparse.Namespace) -> dict[str, Any]:
    crops = np.random.default_rng(0).random((args.faces, 512, 512, 3), dtype=np.float32)
    rates = {}
    for label, batch in (("one at a time", 1), (f"batched x{args.batch}", args.batch)):
        settings = Settings(model_store=store, extra_manifest=manifest, device=args.device,
                            face_models=[TINY_GFPGAN], face_detectors=[],
                            face_batch_size=batch, compile=args.compile)  # fmt: skip
        engine = FaceEngine(settings, ModelStore(store, load_manifest(manifest)))
        engine.load()
        requests = [FaceCrops(TINY_GFPGAN, crops[i : i + 1], request_id=str(i))
                    for i in range(args.faces)]  # fmt: skip
        seconds = best_of(args.rounds, lambda e=engine, r=requests: _restore(e, r))
        rates[label] = args.faces / seconds
    reference, batched = rates["one at a time"], rates[f"batched x{args.batch}"]
    return {"faces": args.faces, "faces_per_s": rates, "ratio": batched / reference}


def bench_sdxl(store: Path, manifest: Path, args: argparse.Namespace) -> dict[str, Any]:
    model = TINY_SDXL if args.tiny else _full_sdxl(store)
    settings = Settings(model_store=store, extra_manifest=manifest, device=args.device,
                        diffusion_checkpoints={"bench": model}, safety_checker=None,
                        compile=args.compile, max_generate_side=4096)  # fmt: skip
    ours = _time_engine(settings, store, manifest, args)
    _free()
    if args.profile is not None:
        _profile_engine(settings, store, manifest, args)
        _free()
    plain = _plain_pipeline(store / model, args.device)
    generator = torch.Generator("cpu")

    def run_plain() -> None:
        plain("a lighthouse at dusk", width=args.size, height=args.size,
              num_inference_steps=args.steps, generator=generator.manual_seed(0))  # fmt: skip

    reference = best_of(args.rounds, run_plain)
    seconds = {"plain diffusers (defaults)": reference, "pixserve": ours}
    return {"size": args.size, "steps": args.steps, "seconds_per_image": seconds,
            "ratio": reference / ours}  # fmt: skip


def _time_engine(
    settings: Settings, store: Path, manifest: Path, args: argparse.Namespace
) -> float:
    """Seconds per image through the diffusion engine (its memory freed on return)."""
    engine = DiffusionEngine(settings, ModelStore(store, load_manifest(manifest)))
    engine.load()
    checkpoint = engine.load_checkpoint("bench")
    options = GenerateOptions("a lighthouse at dusk", "bench", width=args.size,
                              height=args.size, steps=args.steps, seed=0)  # fmt: skip
    return best_of(args.rounds, lambda: _generate(engine, checkpoint, options))


def _profile_engine(
    settings: Settings, store: Path, manifest: Path, args: argparse.Namespace
) -> None:
    """Where one warm generation's time goes: torch's profiler over CPU and CUDA, the
    top operators by device time and by host time, and wall vs device-busy seconds."""
    from torch.profiler import ProfilerActivity, profile

    engine = DiffusionEngine(settings, ModelStore(store, load_manifest(manifest)))
    engine.load()
    checkpoint = engine.load_checkpoint("bench")
    options = GenerateOptions("a lighthouse at dusk", "bench", width=args.size,
                              height=args.size, steps=args.steps, seed=0)  # fmt: skip
    _generate(engine, checkpoint, options)  # warm
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available()
                                           else [])  # fmt: skip
    started = time.perf_counter()
    with profile(activities=activities) as trace:
        _generate(engine, checkpoint, options)
        _sync()
    wall = time.perf_counter() - started
    table = trace.key_averages()
    device_key = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
    busy = sum(getattr(e, "self_device_time_total", 0) for e in table) / 1e6
    args.profile.parent.mkdir(parents=True, exist_ok=True)
    args.profile.write_text(
        f"wall {wall:.3f} s, device busy {busy:.3f} s, dtype {engine.dtype}\n\n"
        + table.table(sort_by=device_key, row_limit=25)
        + "\n\n"
        + table.table(sort_by="self_cpu_time_total", row_limit=25)
    )
    print(f"wrote {args.profile}")


def bench_mesh(store: Path, manifest: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Both engines through the Mesher engine, each against its plain reference."""
    from skimage import data

    depth, triposr = (TINY_DEPTH, TINY_TRIPOSR) if args.tiny else _full_mesh_models(store)
    manifest = _with_entries(manifest, store, {depth: ("depth", "DepthAnything"),
                                               triposr: ("mesh", "TripoSR")})  # fmt: skip
    settings = Settings(model_store=store, extra_manifest=manifest, device=args.device,
                        models=[], depth_model=depth, mesh_model=triposr,
                        mesh_max_resolution=max(args.resolution, 16))  # fmt: skip
    engine = MesherEngine(settings, ModelStore(store, load_manifest(manifest)))
    engine.load()
    image = data.chelsea()
    results: dict[str, Any] = {}
    for name, model in (("relief", depth), ("triposr", triposr)):
        options = MeshOptions(name, model, args.resolution, settings.mesh_max_faces,  # type: ignore[arg-type]
                              remove_background=False, preview=False)  # fmt: skip
        ours = best_of(args.rounds, lambda o=options: _mesh(engine, image, o))
        plain = _plain_mesher(name, store / model, args.device)
        reference = best_of(args.rounds, lambda p=plain: p(image, args.resolution))
        faces = engine.mesh(image, options).faces
        results[name] = {"plain (fp32, one at a time)": reference, "pixserve": ours,
                         "ratio": reference / ours, "faces": faces}  # fmt: skip
    return {"resolution": args.resolution, "seconds_per_mesh": results}


def _mesh(engine: MesherEngine, image: np.ndarray, options: MeshOptions) -> None:
    engine.mesh(image, options)


def _plain_mesher(engine: str, path: Path, device: str) -> Callable[[np.ndarray, int], bytes]:
    """The reference way to make each engine's mesh: fp32, one image, the published
    tools' defaults."""
    from services.imaging import meshes

    target = torch.device(_device(device))
    if engine == "relief":
        import transformers

        library: Any = transformers
        estimate = library.pipeline("depth-estimation", model=str(path), device=target)

        def relief(image: np.ndarray, resolution: int) -> bytes:
            from PIL import Image

            depth = np.asarray(estimate(Image.fromarray(image))["predicted_depth"], np.float32)
            small = np.asarray(Image.fromarray(depth).resize((resolution, round(
                resolution * image.shape[0] / image.shape[1]))), np.float32)  # fmt: skip
            unit = (small - small.min()) / max(float(np.ptp(small)), 1e-6)
            mesh = meshes.relief(unit, None, 0.3)
            mesh.texture = image
            return meshes.export(meshes.normalized(mesh), "glb")

        return relief
    model = TripoSR.load(path).to(target)

    def reconstruct(image: np.ndarray, resolution: int) -> bytes:
        size = model.config.cond_image_size
        pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float().div(255).to(target)
        condition = torch.nn.functional.interpolate(pixels, size=(size, size), mode="bilinear",
                                                    antialias=True)  # fmt: skip
        with torch.no_grad():
            triplane = model.scene_codes(condition)[0]
            axis = torch.linspace(-model.config.radius, model.config.radius, resolution)
            grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
            density = torch.cat([model.query(triplane, c.to(target))[0].cpu()
                                 for c in grid.split(8192)])  # fmt: skip
            volume = density.reshape(resolution, resolution, resolution).numpy()
            vertices, faces = meshes.isosurface(volume, 25.0, model.config.radius)
            colors = torch.cat([model.query(triplane, c.to(target))[1].cpu()
                                for c in torch.from_numpy(vertices).split(8192)])  # fmt: skip
        rgb = (colors.numpy() * 255).astype(np.uint8)
        return meshes.export(meshes.Mesh(vertices, faces, rgb), "glb")

    return reconstruct


def _full_mesh_models(store: Path) -> tuple[str, str]:
    """TripoSR and Depth Anything V2 Small at their published sizes, random weights."""
    import transformers

    from tests.utils.tiny_meshers import OFFICIAL_TRIPOSR_CONFIG, write_triposr

    write_triposr(store / "triposr-random", OFFICIAL_TRIPOSR_CONFIG, dino=None, inside=0.1)
    library: Any = transformers
    depth = store / "depth-anything-random"
    library.DepthAnythingForDepthEstimation(library.DepthAnythingConfig()).save_pretrained(depth)
    processor = library.DPTImageProcessor(
        size={"height": 518, "width": 518}, keep_aspect_ratio=True, ensure_multiple_of=14
    )
    processor.save_pretrained(depth)
    return "depth-anything-random", "triposr-random"


def _with_entries(manifest: Path, store: Path, models: dict[str, tuple[str, str]]) -> Path:
    """The manifest with directory entries for ``models`` (name -> task, architecture)."""
    entries = json.loads(manifest.read_text())["models"]
    known = {entry["name"] for entry in entries}
    for name, (task, architecture) in models.items():
        if name not in known:
            entries.append({"name": name, "task": task, "architecture": architecture, "scale": 1,
                            "license": "test-only", "description": "benchmark",
                            "sources": [{"kind": "local", "filename": name}]})  # fmt: skip
    path = store / "bench-manifest.json"
    path.write_text(json.dumps({"models": entries}))
    return path


def _generate(engine: DiffusionEngine, checkpoint: Any, options: GenerateOptions) -> None:
    engine.generate(checkpoint, options)


def _restore(engine: FaceEngine, requests: list[FaceCrops]) -> None:
    results = engine.restore(requests)
    assert all(isinstance(r, np.ndarray) for r in results), results


def _plain_pipeline(path: Path, device: str) -> Any:
    import diffusers

    pipeline: Any = diffusers.StableDiffusionXLPipeline.from_pretrained(path)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline.to(_device(device))


def _full_sdxl(store: Path) -> str:
    """SDXL base's architecture from its published configs, random weights, saved as a
    diffusers repository in ``store`` and declared in its manifest."""
    import diffusers
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from tests.utils.tiny_models import clip_tokenizer

    parts: Any = diffusers
    unet = parts.UNet2DConditionModel(
        sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20),
        cross_attention_dim=2048, use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
    )  # fmt: skip
    vae = parts.AutoencoderKL(
        block_out_channels=(128, 256, 512, 512), latent_channels=4, sample_size=1024,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        scaling_factor=0.13025,
    )  # fmt: skip
    tokenizer: Any = clip_tokenizer()
    size = len(tokenizer)
    common = {"vocab_size": size, "bos_token_id": size - 2, "eos_token_id": size - 1,
              "pad_token_id": size - 1, "max_position_embeddings": 77}  # fmt: skip
    large = CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                           num_hidden_layers=12, projection_dim=768, hidden_act="quick_gelu",
                           **common)  # fmt: skip
    big_g = CLIPTextConfig(hidden_size=1280, intermediate_size=5120, num_attention_heads=20,
                           num_hidden_layers=32, projection_dim=1280, hidden_act="gelu",
                           **common)  # fmt: skip
    scheduler = parts.EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
        timestep_spacing="leading",
    )  # fmt: skip
    pipeline = parts.StableDiffusionXLPipeline(
        vae=vae, text_encoder=CLIPTextModel(large),
        text_encoder_2=CLIPTextModelWithProjection(big_g), tokenizer=tokenizer,
        tokenizer_2=tokenizer, unet=unet, scheduler=scheduler,
    )  # fmt: skip
    pipeline.save_pretrained(store / "sdxl-random")
    manifest = store / "manifest.json"
    entries = json.loads(manifest.read_text())
    entries["models"].append({
        "name": "sdxl-random", "task": "generate", "architecture": "SDXL", "scale": 1,
        "license": "test-only", "sources": [{"kind": "local", "filename": "sdxl-random"}],
    })  # fmt: skip
    manifest.write_text(json.dumps(entries))
    return "sdxl-random"


def _device(name: str) -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _free() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("which", choices=["faces", "sdxl", "mesh"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--faces", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--resolution", type=int, default=256, help="mesh: the grid")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--tiny", action="store_true", help="the tiny SDXL (CPU smoke run)")
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="sdxl: also profile one warm generation into this file",
    )
    parser.add_argument("--json", "--out", dest="out", type=Path,
                        default=Path("var/bench_models.json"))  # fmt: skip
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        store = Path(folder)
        manifest = build_tiny_store(store, faces=args.which == "faces",
                                    diffusion=args.which == "sdxl",
                                    mesh=args.which == "mesh")  # fmt: skip
        bench = {"faces": bench_faces, "sdxl": bench_sdxl, "mesh": bench_mesh}[args.which]
        result = bench(store, manifest, args)
    device = (torch.cuda.get_device_name() if torch.cuda.is_available()
              else f"CPU {platform.machine()}, {os.cpu_count()} cores")  # fmt: skip
    result.update(which=args.which, device=device, torch=torch.__version__)
    for name, value in result.items():
        print(f"{name:>20}: {value}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
