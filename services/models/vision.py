"""The vision engine: caption, tags, NSFW score and visual questions on one image, with
the models named in settings (BLIP captioning and VQA through transformers; taggers
and NSFW classifiers through ``services.models.classifiers``).

Each model is optional: a deployment configured with only a captioner captions, and
a request for what is not loaded gets a 503 naming the setting and the fetch command.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from services.config import MODEL_SETTINGS
from services.errors import InvalidParameter
from services.models.classifiers import Classifier, load_classifier, nsfw_index
from services.models.roles import RoleEngine

ROLES = {role: MODEL_SETTINGS[role] for role in ("caption", "tags", "nsfw", "vqa")}


@dataclass(frozen=True)
class Tag:
    label: str
    score: float


@dataclass(frozen=True)
class Description:
    """What was asked of one image: a caption, tags with scores, an NSFW probability."""

    caption: str | None = None
    tags: list[Tag] | None = None
    nsfw: float | None = None

    def public(self) -> dict[str, Any]:
        tags = None if self.tags is None else [{"label": t.label, "score": t.score}
                                               for t in self.tags]  # fmt: skip
        return {"caption": self.caption, "tags": tags, "nsfw": self.nsfw}


@dataclass(frozen=True)
class Question:
    """A visual question and how to decode its answer: greedily at temperature 0,
    else sampled (with nucleus ``top_p``)."""

    text: str
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0

    def sampling(self) -> dict[str, Any]:
        """``generate``'s decoding options."""
        if self.temperature <= 0:
            return {}
        return {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p}


@dataclass(frozen=True)
class Answer:
    """A visual question's whole answer and its token counts (OpenAI's usage block);
    a streamed answer ends with it, after its text pieces."""

    text: str
    prompt_tokens: int
    answer_tokens: int


@dataclass
class VisionEngine(RoleEngine):
    """Loads the configured vision models; describes images and answers questions.
    ``models`` holds (model, processor) for caption and vqa, a ``Classifier`` for tags
    and nsfw."""

    roles: ClassVar[dict[str, str]] = ROLES

    def __post_init__(self) -> None:
        super().__post_init__()
        self.dtype = torch.float16 if self.runtime.on_cuda else torch.float32

    def describe(self, image: np.ndarray, want: set[str]) -> Description:
        """``want`` of caption, tags, nsfw for an RGB uint8 image."""
        if unknown := want - {"caption", "tags", "nsfw"}:
            raise InvalidParameter(f"unknown outputs {sorted(unknown)}: caption, tags, nsfw")
        return Description(
            caption=self._caption(image) if "caption" in want else None,
            tags=self._tags(image) if "tags" in want else None,
            nsfw=self._nsfw(image) if "nsfw" in want else None,
        )

    def answer(
        self, image: np.ndarray, question: Question, on_text: Callable[[str], None] | None = None
    ) -> Answer:
        """The answer to a question about the image with its token counts; ``on_text``
        gets the answer's text as it is generated, piece by piece (streamed chats)."""
        model, processor = self._model("vqa")
        inputs = processor(images=image, text=question.text, return_tensors="pt")
        deltas = None if on_text is None else TextDeltas(processor, on_text)
        output = self._generate(model, inputs, question.max_tokens, streamer=deltas,
                                **question.sampling())  # fmt: skip
        text = processor.decode(output[0], skip_special_tokens=True).strip()
        return Answer(text, int(inputs["input_ids"].shape[-1]), int(output.shape[-1]))

    def _caption(self, image: np.ndarray) -> str:
        model, processor = self._model("caption")
        output = self._generate(model, processor(images=image, return_tensors="pt"),
                                self.settings.caption_max_tokens)  # fmt: skip
        return str(processor.decode(output[0], skip_special_tokens=True)).strip()

    def _tags(self, image: np.ndarray) -> list[Tag]:
        """Multi-label taggers: every label over ``tag_threshold``; single-label
        classifiers: the top five."""
        tagger = self._classifier("tags")
        logits = self._classify(tagger, image)
        if tagger.multi_label:
            scores = torch.sigmoid(logits)
            chosen = [int(i) for i in torch.nonzero(scores >= self.settings.tag_threshold)]
            chosen = sorted(chosen, key=lambda i: -float(scores[i]))[: self.settings.max_tags]
        else:
            scores = torch.softmax(logits, dim=-1)
            chosen = [int(i) for i in torch.argsort(scores, descending=True)[:5]]
        return [Tag(tagger.labels[i], round(float(scores[i]), 4)) for i in chosen]

    def _nsfw(self, image: np.ndarray) -> float:
        classifier = self._classifier("nsfw")
        scores = torch.softmax(self._classify(classifier, image), dim=-1)
        return round(float(scores[nsfw_index(classifier)]), 4)

    def _classify(self, classifier: Classifier, image: np.ndarray) -> torch.Tensor:
        with self.runtime.counting():
            return classifier.logits(image)

    def _generate(self, model: Any, inputs: Any, max_tokens: int, **options: Any) -> torch.Tensor:
        inputs = inputs.to(self.runtime.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        with self.runtime.counting(), torch.inference_mode():
            output: torch.Tensor = model.generate(**inputs, max_new_tokens=max_tokens, **options)
        return output.cpu()

    def _classifier(self, role: str) -> Classifier:
        classifier: Classifier = self._model(role)
        return classifier

    def _load(self, role: str, name: str) -> Any:
        """A classifier for tags and nsfw; (BLIP model, processor) for caption and vqa."""
        spec = self.store.manifest.for_task(name, role)  # type: ignore[arg-type]
        path = self.store.locate(spec.name)
        if role in ("tags", "nsfw"):
            classifier = load_classifier(spec, path, self.runtime.device, self.dtype)
            if role == "nsfw":
                nsfw_index(classifier)
            return classifier
        import transformers

        library: Any = transformers  # its typing is partial
        kind = "BlipForConditionalGeneration" if role == "caption" else "BlipForQuestionAnswering"
        model = getattr(library, kind).from_pretrained(path, dtype=self.dtype)
        processor = library.BlipProcessor.from_pretrained(path)
        return model.to(self.runtime.device).eval(), processor


class TextDeltas:
    """A transformers streamer: decodes the tokens so far on each step and hands on what
    the text gained (word pieces join up: "hel" then "lo", never "hel ##lo")."""

    def __init__(self, processor: Any, emit: Callable[[str], None]) -> None:
        self.processor, self.emit = processor, emit
        self.ids: list[int] = []
        self.sent = ""

    def put(self, value: torch.Tensor) -> None:
        self.ids.extend(int(token) for token in value.reshape(-1).tolist())
        text = str(self.processor.decode(self.ids, skip_special_tokens=True)).strip()
        if len(text) > len(self.sent) and text.startswith(self.sent):
            self.emit(text[len(self.sent) :])
            self.sent = text

    def end(self) -> None:
        """Nothing held back: each step's text went out as it came."""
