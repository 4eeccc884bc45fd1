"""Memory of large images: the peak RSS one big upscale adds to the Ingress and to the
Upscaler replica, against the output's own uint8 size, on the real Serve app.

The null x4 model (near-zero compute, x4plus's data volume) keeps the run short; a
2048x2048 input makes an 8192x8192 output of 192 MiB as uint8 RGB (768 MiB as
float32). Each output format is one request after a warm-up one, with the peaks reset
in between. Also records the replicas' RSS at rest. Prints a table and writes JSON;
asserts nothing.

    python load_tests/bench_memory.py --size 2048
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from load_tests.procstats import ProcessStats, replica_pids, rss_mb
from services.config import Settings
from tests.utils.tiny_models import NULL_X4, build_tiny_store


def photo(size: int) -> bytes:
    """A ``size`` px PNG with detail everywhere (the astronaut, tiled and shifted)."""
    from skimage import data

    base = np.asarray(data.astronaut())
    reps = -(-size // base.shape[0])
    tiled = np.tile(base, (reps, reps, 1))[:size, :size]
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(tiled)).save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def upscale(url: str, data: bytes, fmt: str) -> int:
    files = {"image": ("in.png", data, "image/png")}
    response = httpx.post(f"{url}/v1/upscale", files=files, data={"format": fmt}, timeout=3600)
    response.raise_for_status()
    return len(response.content)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--formats", nargs="+", default=["jpeg", "png"])
    parser.add_argument("--json", type=Path, default=Path("var/bench_memory.json"))
    args = parser.parse_args(argv)
    from load_tests.bench_upscale import start_service

    store = Path(tempfile.mkdtemp(prefix="pixserve-memory-"))
    settings = Settings(
        model_store=store, extra_manifest=build_tiny_store(store), models=[NULL_X4],
        default_model=NULL_X4, max_input_pixels=max(args.size**2, 4096**2),
        max_output_pixels=max((4 * args.size) ** 2, 8192**2), max_upload_bytes=200_000_000,
    )  # fmt: skip
    url, stop = start_service(settings, 0.0)
    try:
        result = measure(url, photo(args.size), args.size, args.formats)
    finally:
        stop()
    report(result, args.json)
    return result


def measure(url: str, data: bytes, size: int, formats: list[str]) -> dict[str, Any]:
    pids = replica_pids(["Ingress", "Upscaler"])
    output_mb = (4 * size) ** 2 * 3 / 2**20
    at_rest = {name: rss_mb(pid) for name, pid in pids.items()}
    runs = []
    for fmt in formats:
        upscale(url, data, fmt)  # warm-up: allocator arenas, Ray's object store buffers
        time.sleep(1)
        stats = ProcessStats(pids)
        encoded = upscale(url, data, fmt)
        added = stats.peak_added_mb()
        runs.append({"format": fmt, "encoded_mb": encoded / 2**20, "peak_added_mb": added,
                     "vs_output": {n: mb / output_mb for n, mb in added.items()},
                     "resettable": stats.resettable})  # fmt: skip
    return {"size": size, "output_uint8_mb": output_mb, "rss_at_rest_mb": at_rest, "runs": runs}


def report(result: dict[str, Any], path: Path) -> None:
    size, output_mb = result["size"], result["output_uint8_mb"]
    print(
        f"\n{size}x{size} -> {4 * size}x{4 * size} (null x4); output as uint8: {output_mb:.0f} MiB"
    )
    print(
        "RSS at rest: "
        + ", ".join(f"{n} {mb:.0f} MiB" for n, mb in result["rss_at_rest_mb"].items())
    )
    for run in result["runs"]:
        shares = ", ".join(f"{name} +{mb:.0f} MiB ({run['vs_output'][name]:.2f}x)"
                           for name, mb in run["peak_added_mb"].items())  # fmt: skip
        print(f"{run['format']:>5}: peak added {shares}; encoded {run['encoded_mb']:.1f} MiB")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
