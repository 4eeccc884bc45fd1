"""A request's compute budget, checked before any model runs.

Cost is counted in units of about one output megapixel of Real-ESRGAN x4plus: each
architecture's relative cost per megapixel it produces, times the megapixels (a tile
model produces input x scale^2; a diffusion model, output x steps). A plan knows its
cost per input megapixel (and a generation its whole cost) before it runs; the use
case checks it once the input's size is decoded from the header, so a small upload
claiming a huge image cannot buy minutes of compute. ``max_request_cost`` sets the
limit (the default admits everything the pixel limits admit for x4plus).
"""

from __future__ import annotations

from dataclasses import dataclass

from services.errors import PixserveError
from services.models.manifest import ModelSpec

# relative cost per output megapixel (RRDBNet = 1); diffusion: per megapixel per step
ARCHITECTURE_COST: dict[str, float] = {
    "RRDBNet": 1.0, "SRVGGNetCompact": 0.15, "SCUNet": 1.0, "DnCNN": 0.1,
    "GFPGAN": 0.5, "CodeFormer": 0.5, "RetinaFace": 0.05, "SDXL": 1.0,
    "SafetyChecker": 0.05, "BLIP": 0.1, "ViT": 0.05, "RealCUGAN": 0.5, "CUNet": 0.5,
    "FFDNet": 0.1, "MobileNetV2": 0.02, "OpenNSFW": 0.05,
    # these resize every input to their own size: their cost is in ``mesh_cost``
    "TripoSR": 0.0, "DepthAnything": 0.0, "DPT": 0.0, "UperNet": 0.0, "SegFormer": 0.0,
}  # fmt: skip
# a mesh at resolution 256, whatever the input's size: TripoSR samples 256^3 points
MESH_COST = {"triposr": 2.0, "relief": 0.2}


class OverBudget(PixserveError):
    """The request would cost more compute than one request may."""

    code = "over_budget"
    status = 422


@dataclass(frozen=True)
class Budget:
    """What a plan costs: ``fixed`` units plus ``per_megapixel`` per input megapixel."""

    per_megapixel: float = 0.0
    fixed: float = 0.0
    limit: float | None = None  # None: unlimited

    def check(self, width: int = 0, height: int = 0) -> float:
        """The cost for an input of this size; ``OverBudget`` past the limit."""
        cost = self.fixed + self.per_megapixel * width * height / 1e6
        if self.limit is not None and cost > self.limit:
            size = f" for a {width}x{height} input" if width else ""
            raise OverBudget(f"this request would cost {cost:.1f} compute units{size}; one "
                             f"request may cost {self.limit:g} (max_request_cost): send a "
                             "smaller image or ask for less")  # fmt: skip
        return cost


NO_BUDGET = Budget()  # what costs nothing by size (generation's cost is fixed at planning)


def tile_budget(models: list[ModelSpec], limit: float | None) -> Budget:
    """Tile models run one after the other, each on the previous one's output."""
    per_megapixel, growth = 0.0, 1.0
    for model in models:
        growth *= model.scale**2
        per_megapixel += ARCHITECTURE_COST.get(model.architecture, 1.0) * growth
    return Budget(per_megapixel=per_megapixel, limit=limit)


def mesh_cost(engine: str, resolution: int) -> float:
    """A mesh's fixed cost: TripoSR's grows with the grid's volume, a relief's with
    its area."""
    power = 3 if engine == "triposr" else 2
    return MESH_COST[engine] * (resolution / 256) ** power


def generation_budget(width: int, height: int, steps: int, limit: float | None) -> Budget:
    cost = ARCHITECTURE_COST["SDXL"] * steps * width * height / 1e6
    return Budget(fixed=cost, limit=limit)


def image_to_image_budget(steps_run: int, limit: float | None) -> Budget:
    """Image-to-image works at the input's size, known once decoded, for the steps the
    strength leaves (``int(steps x strength)``)."""
    return Budget(per_megapixel=ARCHITECTURE_COST["SDXL"] * steps_run, limit=limit)
