"""Tiny random-weight models, saved in the real formats, with a manifest.

They run the real loading path (spandrel, checksum, manifest) in milliseconds: the
tests use them, and so does the CPU benchmark where the full models would take hours.
The face models cannot be small (spandrel builds GFPGAN at its published size), so
they are random weights at full size, stored in fp16 safetensors. The face detectors
are RetinaFace's real MobileNet layout whose heads are set by hand: one "sees" a 64 px
face on every 16 px cell (NMS thins them to a lattice), the other never sees one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from spandrel.architectures.Compact import Compact as SRVGGNetCompact
from spandrel.architectures.DnCNN import DnCNN
from spandrel.architectures.ESRGAN import ESRGAN
from spandrel.architectures.SCUNet import SCUNet

from services.imaging.faces import CROP, TEMPLATE
from services.models.retinaface import RetinaFace
from services.models.store import sha256_file

TINY_RRDB = "tiny-x4"
TINY_COMPACT = "tiny-compact-x2"
TINY_X2_UNSHUFFLE = "tiny-x2-unshuffle"
NULL_X4 = "null-x4"  # near-zero compute at x4plus's data volume: the pipeline's own ceiling
TINY_SCUNET = "tiny-scunet"
TINY_DNCNN = "tiny-dncnn"
TINY_GFPGAN = "tiny-gfpgan"
TINY_CODEFORMER = "tiny-codeformer"
TINY_DETECTOR = "tiny-retinaface"
TINY_BLIND_DETECTOR = "tiny-retinaface-blind"
TINY_SDXL = "tiny-sdxl"
TINY_SDXL_ANIME = "tiny-sdxl-anime"
TINY_SAFETY = "tiny-safety-checker"


def _rrdb() -> torch.nn.Module:
    module: torch.nn.Module = ESRGAN(num_filters=8, num_blocks=1, scale=4)
    return module


def _null_x4() -> torch.nn.Module:
    """SRVGGNetCompact at its narrowest (1 feature, 1 conv), x4: its output is mostly the
    nearest-upsampled input, so nearly all of a run's time is the pipeline around it."""
    module: torch.nn.Module = SRVGGNetCompact(num_feat=1, num_conv=1, upscale=4)
    return module


def _x2_unshuffle() -> torch.nn.Module:
    """RealESRGAN_x2plus's shape: pixel-unshuffle by 2 (12 input channels), then x4."""
    module: torch.nn.Module = ESRGAN(
        in_nc=12, num_filters=8, num_blocks=1, scale=4, shuffle_factor=2
    )
    return module


def _compact() -> torch.nn.Module:
    module: torch.nn.Module = SRVGGNetCompact(num_feat=8, num_conv=2, upscale=2)
    return module


def _scunet() -> torch.nn.Module:
    """SCUNet's real layout (Swin-conv blocks, three downsamplings) with one block per
    stage and the narrowest width its 32-channel attention heads allow (64)."""
    module: torch.nn.Module = SCUNet(in_nc=3, config=[1, 1, 1, 1, 1, 1, 1], dim=64)
    return module


def _dncnn() -> torch.nn.Module:
    module: torch.nn.Module = DnCNN(in_nc=3, out_nc=3, nc=8, nb=4, act_mode="BR")
    return module


def _gfpgan() -> torch.nn.Module:
    from spandrel.architectures.GFPGAN import GFPGAN

    module: torch.nn.Module = GFPGAN(
        out_size=512, num_style_feat=512, channel_multiplier=2, decoder_load_path=None,
        fix_decoder=False, num_mlp=8, input_is_latent=True, different_w=True, narrow=1,
        sft_half=True,
    )  # fmt: skip
    return module


def _codeformer() -> torch.nn.Module:
    """CodeFormer's autoencoder at its published size, a narrow one-layer transformer."""
    from spandrel_extra_arches.architectures.CodeFormer import CodeFormer

    module: torch.nn.Module = CodeFormer(dim_embd=64, n_head=8, n_layers=1, codebook_size=64)
    return module


def _detector(sees_faces: bool) -> torch.nn.Module:
    """Random MobileNet body; heads that ignore it. Face logits are high (or low) for the
    64 px anchor of the stride-16 level only; boxes are the anchors; the landmarks sit
    where the FFHQ template puts them, for a face filling the anchor box."""
    network = RetinaFace("mobilenet0.25")
    face_logit = 4.0 if sees_faces else -4.0
    offsets = ((TEMPLATE - CROP / 2) / CROP / 0.1).reshape(-1)  # decode()'s variance 0.1
    state = network.state_dict()
    for key, value in state.items():
        if key.startswith(("ClassHead", "BboxHead", "LandmarkHead")):
            value.zero_()
    for level in range(3):
        state[f"ClassHead.{level}.conv1x1.bias"][:] = torch.tensor([0.0, -4.0, 0.0, -4.0])
        state[f"LandmarkHead.{level}.conv1x1.bias"][:] = torch.tensor(np.tile(offsets, 2))
    state["ClassHead.1.conv1x1.bias"][1] = face_logit  # anchor 0 of level 1: 64 px
    network.load_state_dict(state)
    return network


def _save_fp16(module: torch.nn.Module, path: Path) -> None:
    state = {key: value.half().contiguous() for key, value in module.state_dict().items()}
    save_file(state, str(path))


def build_tiny_store(
    root: Path, faces: bool = False, diffusion: bool = False, vision: bool = False,
    mesh: bool = False,
) -> Path:  # fmt: skip
    """Write the tiny models into ``root`` and return the path of their manifest;
    ``faces`` adds the face models (about 320 MB, a few seconds), ``diffusion`` two
    tiny SDXL repositories and a safety checker (diffusers/transformers layouts),
    ``vision`` BLIP captioning/VQA and two ViT classifiers, ``mesh`` TripoSR, Depth
    Anything and SegFormer (services/models/mesher.py)."""
    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    entries: list[dict[str, object]] = []
    for name, arch, scale, build in (
        (TINY_RRDB, "RRDBNet", 4, _rrdb),
        (TINY_COMPACT, "SRVGGNetCompact", 2, _compact),
        (NULL_X4, "SRVGGNetCompact", 4, _null_x4),
        (TINY_X2_UNSHUFFLE, "RRDBNet", 2, _x2_unshuffle),
        (TINY_SCUNET, "SCUNet", 1, _scunet),
        (TINY_DNCNN, "DnCNN", 1, _dncnn),
    ):
        filename = f"{name}.pth"
        torch.save(build().state_dict(), root / filename)
        entries.append(
            {
                "name": name,
                "task": "denoise" if scale == 1 else "upscale",
                "architecture": arch,
                "scale": scale,
                "license": "test-only",
                "description": "random weights for tests",
                "sources": [
                    {"kind": "local", "filename": filename, "sha256": sha256_file(root / filename)}
                ],
            }
        )
    if faces:
        entries += _face_entries(root)
    if diffusion:
        entries += _diffusion_entries(root)
    if vision:
        entries += _vision_entries(root)
    if mesh:
        from tests.utils.tiny_meshers import mesh_entries

        entries += mesh_entries(root)
    manifest = root / "manifest.json"
    manifest.write_text(json.dumps({"models": entries}, indent=2))
    return manifest


def _face_entries(root: Path) -> list[dict[str, object]]:
    entries: list[dict[str, object]] = []
    for name, task, arch, filename in (
        (TINY_GFPGAN, "face", "GFPGAN", f"{TINY_GFPGAN}.safetensors"),
        (TINY_CODEFORMER, "face", "CodeFormer", f"{TINY_CODEFORMER}.safetensors"),
        (TINY_DETECTOR, "detect", "RetinaFace", f"{TINY_DETECTOR}.pth"),
        (TINY_BLIND_DETECTOR, "detect", "RetinaFace", f"{TINY_BLIND_DETECTOR}.pth"),
    ):
        path = root / filename
        if name == TINY_GFPGAN:
            _save_fp16(_gfpgan(), path)
        elif name == TINY_CODEFORMER:
            _save_fp16(_codeformer(), path)
        else:
            torch.save(_detector(name == TINY_DETECTOR).state_dict(), path)
        entries.append(
            {"name": name, "task": task, "architecture": arch, "scale": 1,
             "license": "test-only", "description": "random or hand-set weights for tests",
             "sources": [{"kind": "local", "filename": filename, "sha256": sha256_file(path)}]}
        )  # fmt: skip
    return entries


def _diffusion_entries(root: Path) -> list[dict[str, object]]:
    """SDXL's layout (two CLIP text encoders, UNet with text-time embedding, VAE) at
    the width of diffusers' own test models, saved with ``save_pretrained``; and the
    CLIP safety checker, whose untrained concept thresholds never flag an image."""
    entries: list[dict[str, object]] = []
    for name, seed in ((TINY_SDXL, 0), (TINY_SDXL_ANIME, 1)):
        _sdxl(seed).save_pretrained(root / name)
        entries.append(_directory_entry(name, "generate", "SDXL"))
    _safety_checker(root / TINY_SAFETY)
    entries.append(_directory_entry(TINY_SAFETY, "safety", "SafetyChecker"))
    return entries


def _directory_entry(name: str, task: str, architecture: str) -> dict[str, object]:
    return {"name": name, "task": task, "architecture": architecture, "scale": 1,
            "license": "test-only", "description": "random weights for tests",
            "sources": [{"kind": "local", "filename": name}]}  # fmt: skip


def clip_tokenizer() -> object:
    """A byte-level CLIP tokenizer without merges: every character is a token."""
    from transformers import CLIPTokenizer

    characters = list(_bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(characters)}
    vocab.update({c + "</w>": len(characters) + i for i, c in enumerate(characters)})
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's (and CLIP's) byte-level alphabet: printable bytes map to themselves, the
    others to code points from 256 up. Written here because transformers moves its copy
    between releases (5.17 has none where 5.25 has it)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]  # fmt: skip
    extra = (byte for byte in range(256) if byte not in printable)
    mapping = {byte: chr(byte) for byte in printable}
    mapping.update({byte: chr(256 + n) for n, byte in enumerate(extra)})
    return mapping


def _sdxl(seed: int) -> Any:
    import diffusers
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    parts: Any = diffusers  # diffusers' typing is partial
    torch.manual_seed(seed)
    tokenizer: Any = clip_tokenizer()
    unet = parts.UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=4,
        out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=80,
        cross_attention_dim=64, norm_num_groups=1,
    )  # fmt: skip
    # four blocks: latents are 1/8 of the image, as SDXL's (two made them 1/2, and a
    # 512 px image a 256x256 latent whose attention took a minute on CPU)
    vae = parts.AutoencoderKL(
        block_out_channels=[16, 16, 32, 32], in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
        sample_size=128, norm_num_groups=8,
    )  # fmt: skip
    size = len(tokenizer)
    text = CLIPTextConfig(
        bos_token_id=size - 2, eos_token_id=size - 1, pad_token_id=size - 1, vocab_size=size,
        hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
        projection_dim=32, hidden_act="gelu",
    )  # fmt: skip
    scheduler = parts.EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, steps_offset=1, beta_schedule="scaled_linear",
        timestep_spacing="leading",
    )  # fmt: skip
    return parts.StableDiffusionXLPipeline(
        vae=vae, text_encoder=CLIPTextModel(text), text_encoder_2=CLIPTextModelWithProjection(text),
        tokenizer=tokenizer, tokenizer_2=tokenizer, unet=unet, scheduler=scheduler,
    )  # fmt: skip


def _safety_checker(path: Path) -> None:
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    config = CLIPConfig(
        text_config={"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4,
                     "num_hidden_layers": 2},
        vision_config={"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4,
                       "num_hidden_layers": 2, "image_size": 32, "patch_size": 8},
        projection_dim=32,
    )  # fmt: skip
    checker: Any = StableDiffusionSafetyChecker(config)
    checker.save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
                       ).save_pretrained(path)  # fmt: skip


TINY_CAPTION = "tiny-blip-caption"
TINY_VQA = "tiny-blip-vqa"
TINY_TAGGER = "tiny-vit-tagger"
TINY_NSFW = "tiny-vit-nsfw"
_SENTENCE = "a photo of the an astronaut person woman cat dog red blue white in on with is "
_WORDS = tuple((_SENTENCE + "what yes no color image space suit flag").split())


def _vision_entries(root: Path) -> list[dict[str, object]]:
    """BLIP (captioning and VQA) and ViT classifiers (a multi-label tagger, a
    normal/nsfw classifier) at test width, saved with ``save_pretrained``."""
    import transformers

    library: Any = transformers  # its typing is partial
    torch.manual_seed(0)
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {word: i for i, word in enumerate(dict.fromkeys(special + list(_WORDS)))}
    tokenizer = library.BertTokenizer(vocab=vocab, do_lower_case=True)
    small = {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4,
             "num_hidden_layers": 2}  # fmt: skip
    vision = {**small, "image_size": 32, "patch_size": 8}
    blip = library.BlipConfig(
        text_config={**small, "vocab_size": len(vocab), "encoder_hidden_size": 32,
                     "bos_token_id": vocab["[CLS]"], "pad_token_id": vocab["[PAD]"],
                     "sep_token_id": vocab["[SEP]"]},
        vision_config=vision, projection_dim=32,
    )  # fmt: skip
    processor = library.BlipProcessor(
        image_processor=library.BlipImageProcessor(size={"height": 32, "width": 32}),
        tokenizer=tokenizer,
    )
    entries: list[dict[str, object]] = []
    for name, kind, task in ((TINY_CAPTION, "BlipForConditionalGeneration", "caption"),
                             (TINY_VQA, "BlipForQuestionAnswering", "vqa")):  # fmt: skip
        getattr(library, kind)(blip).save_pretrained(root / name)
        processor.save_pretrained(root / name)
        entries.append(_directory_entry(name, task, "BLIP"))
    labels = {TINY_TAGGER: ["person", "space", "flag", "cat", "suit"],
              TINY_NSFW: ["normal", "nsfw"]}  # fmt: skip
    for name, task in ((TINY_TAGGER, "tags"), (TINY_NSFW, "nsfw")):
        config = library.ViTConfig(
            **vision, num_labels=len(labels[name]), id2label=dict(enumerate(labels[name])),
            problem_type="multi_label_classification" if task == "tags" else None,
        )  # fmt: skip
        library.ViTForImageClassification(config).save_pretrained(root / name)
        library.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(root / name)
        entries.append(_directory_entry(name, task, "ViT"))
    return entries
