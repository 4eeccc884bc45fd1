"""The Mesher engine on tiny random-weight models in their real layouts: TripoSR's
official checkpoint (transformers 4.x ViT names) loads key for key, both engines make
meshes within their budgets, and the object's outline comes from alpha,
segmentation or depth as reported."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from skimage import data

from services.config import Settings
from services.errors import InvalidParameter, NotConfigured, UnknownModel
from services.models.manifest import Manifest, load_manifest
from services.models.mesh_io import MeshOptions
from services.models.mesher import MesherEngine
from services.models.store import ModelStore
from services.models.triposr import TripoConfig, TripoSR, _renamed
from services.pipelines.mesh import mesh_options
from tests.utils.tiny_meshers import (
    OFFICIAL_TRIPOSR_CONFIG,
    TINY_DEPTH,
    TINY_SEGMENTER,
    TINY_TRIPOSR,
    checkpoint_keys,
)
from tests.utils.tiny_models import build_tiny_store


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("meshers")
    return root, build_tiny_store(root, mesh=True)


def _settings(store: tuple[Path, Path], **changes: object) -> Settings:
    root, manifest = store
    fields = {"model_store": root, "extra_manifest": manifest, "models": [],
              "mesh_model": TINY_TRIPOSR, "depth_model": TINY_DEPTH,
              "segment_model": TINY_SEGMENTER, **changes}  # fmt: skip
    return Settings(**fields)  # type: ignore[arg-type]


def _engine(settings: Settings) -> tuple[MesherEngine, Manifest]:
    manifest = load_manifest(settings.extra_manifest)
    engine = MesherEngine(settings, ModelStore(settings.model_store, manifest))
    engine.load()
    return engine, manifest


@pytest.fixture(scope="module")
def engine(store: tuple[Path, Path]) -> tuple[MesherEngine, Manifest, Settings]:
    settings = _settings(store)
    return (*_engine(settings), settings)


def test_the_official_checkpoint_layout_loads_key_for_key(store: tuple[Path, Path]) -> None:
    folder = store[0] / TINY_TRIPOSR
    keys = checkpoint_keys(folder)
    assert "image_tokenizer.model.encoder.layer.0.attention.attention.query.weight" in keys
    model = TripoSR.load(folder)  # strict: every key used, none missing
    wanted = set(model.state_dict())
    state = torch.load(folder / "model.ckpt", map_location="cpu", weights_only=True)
    assert set(_renamed(state, wanted)) == wanted


def test_the_official_config_builds_the_official_shapes(tmp_path: Path) -> None:
    """The published config's ``${...}`` reference resolves, DINO's config is known, and
    the modules carry the checkpoint's names and shapes (built on the meta device)."""
    import yaml

    (tmp_path / "config.yaml").write_text(yaml.safe_dump(OFFICIAL_TRIPOSR_CONFIG))
    config = TripoConfig.read(tmp_path)
    assert config.plane_channels == 1024 and config.vit["hidden_size"] == 768
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in TripoSR(config).state_dict().items()}
    assert shapes["tokenizer.embeddings"] == (3, 1024, 32, 32)
    assert shapes["backbone.transformer_blocks.15.attn2.to_k.weight"] == (1024, 768)
    assert shapes["backbone.transformer_blocks.0.ff.net.0.proj.weight"] == (8192, 1024)
    assert shapes["post_processor.upsample.weight"] == (1024, 40, 2, 2)
    assert shapes["decoder.layers.18.weight"] == (4, 64)  # 9 hidden layers of 64
    assert shapes["image_tokenizer.model.embeddings.position_embeddings"] == (1, 197, 768)


def test_triposr_makes_a_vertex_coloured_mesh_within_the_budget(
    engine: tuple[MesherEngine, Manifest, Settings],
) -> None:
    mesher, manifest, settings = engine
    options = mesh_options({"engine": "triposr", "resolution": 40, "max_faces": 3000},
                           manifest, settings)  # fmt: skip
    output = mesher.mesh(data.chelsea(), options)
    assert 0 < output.faces <= 3000 and output.foreground == "segmentation"
    scene = trimesh.load(io.BytesIO(output.data), file_type="glb")
    shape = next(iter(scene.geometry.values()))
    assert len(shape.faces) == output.faces and shape.visual.kind == "vertex"
    assert np.abs(shape.bounds).max() == pytest.approx(0.5, abs=1e-3)  # 1 m, centred


def test_relief_is_watertight_and_textured_within_the_budget(
    engine: tuple[MesherEngine, Manifest, Settings],
) -> None:
    mesher, manifest, settings = engine
    options = mesh_options({"resolution": 200, "max_faces": 4000, "remove_background": False},
                           manifest, settings)  # fmt: skip
    output = mesher.mesh(data.coffee(), options)
    assert output.faces <= 4000 and output.foreground == "none"
    shape = next(iter(trimesh.load(io.BytesIO(output.data), file_type="glb").geometry.values()))
    assert shape.is_watertight and shape.visual.kind == "texture"
    assert shape.visual.material.baseColorTexture.size == (600, 400)  # the photo itself


def test_alpha_is_the_outline_when_the_upload_has_one(
    engine: tuple[MesherEngine, Manifest, Settings],
) -> None:
    mesher, manifest, settings = engine
    rgba = np.concatenate([data.astronaut(), np.zeros((512, 512, 1), np.uint8)], axis=2)
    rgba[100:400, 200:300, 3] = 255  # a 1:3 upright object
    output = mesher.mesh(rgba, mesh_options({"format": "ply"}, manifest, settings))
    shape = trimesh.load(io.BytesIO(output.data), file_type="ply")
    width, height, _ = shape.extents
    assert output.foreground == "alpha" and height / width == pytest.approx(3, rel=0.05)


def test_without_a_segmenter_the_near_region_is_the_object(store: tuple[Path, Path]) -> None:
    settings = _settings(store, segment_model=None)
    mesher, manifest = _engine(settings)
    output = mesher.mesh(data.chelsea(), mesh_options({}, manifest, settings))
    assert output.foreground == "depth" and output.faces > 0


def test_options_are_checked_against_the_caps_and_the_configured_models(
    engine: tuple[MesherEngine, Manifest, Settings], store: tuple[Path, Path],
) -> None:  # fmt: skip
    _, manifest, settings = engine
    cases = [({"resolution": 321}, "resolution"), ({"max_faces": 50}, "max_faces"),
             ({"engine": "nerf"}, "engine"), ({"format": "stl"}, "format"),
             ({"relief_depth": 3}, "relief_depth")]  # fmt: skip
    for params, field in cases:
        with pytest.raises(InvalidParameter) as refused:
            mesh_options(params, manifest, settings)
        assert refused.value.param == field
    with pytest.raises(UnknownModel) as unknown:
        mesh_options({"engine": "triposr", "model": TINY_DEPTH}, manifest, settings)
    assert "not a mesh model" in unknown.value.message
    with pytest.raises(NotConfigured, match="mesh_model"):
        mesh_options({"engine": "triposr"}, manifest, _settings(store, mesh_model=None))
    assert mesh_options({}, manifest, settings) == MeshOptions(
        "relief", TINY_DEPTH, 256, settings.mesh_max_faces
    )
