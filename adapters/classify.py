"""The three stages of the `classify` demo pipeline: zero-shot text classification on the shipped
all-MiniLM-L6-v2 sentence embedder (see `adapters.text`).

1. `classify-prep` (`ClassifyPrepAdapter`, CPU): a string -> the cleaned text (Unicode NFKC, control
   characters removed, whitespace collapsed), its word count and MiniLM's token ids for it
   (`{"input_ids", "words", "text"}`). The whole batch goes through one tokenizer call.
2. `classify-encode` (`ClassifyEncodeAdapter`, GPU when there is one): token ids -> the cosine
   similarity of the text's embedding (mean-pooled, L2-normalised, as `minilm` computes it) with the
   embedding of each label's description (`{"labels", "similarities", "words"}`). The label embeddings
   are computed once, at load; the batch is padded to its longest item and runs in one forward pass.
3. `classify-format` (`ClassifyFormatAdapter`, CPU, pure Python): similarities -> softmax with a
   temperature -> `{"label", "confidence", "scores", "words"}`.

Each stage's output is the next one's input, and every output is plain lists, dicts, strings and
numbers (it travels as msgpack). `validate` runs in the main process at submission, so torch and
transformers are imported only in `load`/`predict`, in the worker.
"""

from __future__ import annotations

import math
import unicodedata
from pathlib import Path
from typing import Any

from adapters.base import BaseAdapter, ItemError
from adapters.text import (
    MAX_SENTENCE_CHARS,
    MINILM_MAX_LENGTH,
    MiniLMAdapter,
    _import_transformers,
    mean_pool,
    minilm_path,
)

MINILM_VOCAB_SIZE = 30_522  # the model's vocab_size (config.json): token ids are 0 <= id < this
MAX_INPUT_IDS = 512  # the model's max_position_embeddings
FORWARD_CHUNK = 256  # items per forward pass when `predict` is handed a larger batch than the worker sends
DEFAULT_TEMPERATURE = 0.05
DEFAULT_LABELS: dict[str, str] = {
    "positive": "This text is positive: it expresses approval, happiness, praise or satisfaction.",
    "negative": "This text is negative: it expresses disapproval, anger, complaint or disappointment.",
    "neutral": "This text is neutral: it is neither positive nor negative: it states facts or asks a question.",
}
# Removed by `clean_text` (whitespace among them becomes a space first): control, format (zero-width
# characters, the byte-order mark) and lone surrogates. BERT's own tokenizer drops these too.
_REMOVED_CATEGORIES = frozenset({"Cc", "Cf", "Cs"})


def clean_text(text: str) -> str:
    """NFKC, control and format characters removed (whitespace ones become a space), runs of
    whitespace collapsed to one space, stripped. Not lower-cased: the tokenizer is uncased."""
    normal = unicodedata.normalize("NFKC", text)
    kept = "".join(
        " " if char.isspace() else char
        for char in normal
        if char.isspace() or unicodedata.category(char) not in _REMOVED_CATEGORIES
    )
    return " ".join(kept.split())


def _positive_int(options: dict[str, Any], key: str, default: int, limit: int | None = None) -> int:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"options.{key} must be a positive integer (got {value!r})")
    if limit is not None and value > limit:
        raise ValueError(f"options.{key} is {value}; the limit is {limit}")
    return value


def _temperature(options: dict[str, Any]) -> float:
    value = options.get("temperature", DEFAULT_TEMPERATURE)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"options.temperature must be a positive number (got {value!r})")
    return float(value)


def _labels(options: dict[str, Any]) -> dict[str, str]:
    labels = options.get("labels", DEFAULT_LABELS)
    if not isinstance(labels, dict) or not labels:
        raise ValueError("options.labels must be a non-empty mapping of label -> description")
    for label, description in labels.items():
        if not isinstance(label, str) or not label:
            raise ValueError(f"options.labels: every label must be a non-empty string (got {label!r})")
        if not isinstance(description, str) or not description.strip():
            raise ValueError(f"options.labels[{label!r}] must be a non-empty description string")
    return dict(labels)


def _model_path(options: dict[str, Any]) -> Path:
    return Path(options.get("path") or minilm_path())


class ClassifyPrepAdapter(BaseAdapter):
    """Stage 1: a string -> `{"input_ids": [int], "words": int, "text": cleaned text}`.

    Options: `max_chars` (submission limit, default 10000), `max_length` (tokens, special ones
    included; longer texts are truncated; default 256), `path` (another copy of the model).
    A text that is empty once cleaned fails alone (an ItemError).
    """

    name = "classify-prep"
    device = "cpu"
    vram_mb = 0
    max_batch_size = 64
    max_delay_ms = 2.0

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.max_chars = _positive_int(options, "max_chars", MAX_SENTENCE_CHARS)
        self.max_length = _positive_int(options, "max_length", MINILM_MAX_LENGTH, limit=MAX_INPUT_IDS)

    def validate(self, inputs: Any) -> None:
        if not isinstance(inputs, str):
            raise ValueError(f"inputs must be a string (got {type(inputs).__name__})")
        if not inputs:
            raise ValueError("inputs must be a non-empty string")
        if len(inputs) > self.max_chars:
            raise ValueError(f"inputs has {len(inputs)} characters; the limit is {self.max_chars} characters")
        if not clean_text(inputs):  # refused at submission (422), not by the stage's worker
            raise ValueError("inputs holds no text once cleaned (only whitespace or control characters)")

    def load(self, device: str) -> Any:
        transformers = _import_transformers()
        tokenizer = transformers.AutoTokenizer.from_pretrained(
            _model_path(self.options), local_files_only=True
        )
        return {"tokenizer": tokenizer}

    def predict(self, state: Any, batch: list[Any]) -> list[Any]:
        outputs: list[Any] = []
        texts: list[str] = []
        for inputs in batch:
            try:
                self.validate(inputs)
            except ValueError as exc:
                outputs.append(ItemError(str(exc)))
                continue
            text = clean_text(inputs)
            if not text:
                outputs.append(ItemError("the text is empty after cleaning"))
                continue
            outputs.append(text)
            texts.append(text)
        if not texts:
            return outputs
        encoded = state["tokenizer"](
            texts, truncation=True, max_length=self.max_length, add_special_tokens=True, padding=False
        )
        ids = iter(encoded["input_ids"])
        return [
            {"input_ids": [int(i) for i in next(ids)], "words": len(out.split()), "text": out}
            if isinstance(out, str)
            else out
            for out in outputs
        ]


def _validate_encode_inputs(inputs: Any) -> None:
    if not isinstance(inputs, dict):
        raise ValueError(f"inputs must be a mapping with input_ids (got {type(inputs).__name__})")
    ids = inputs.get("input_ids")
    if not isinstance(ids, list):
        raise ValueError("inputs.input_ids must be a list of token ids")
    if not 1 <= len(ids) <= MAX_INPUT_IDS:
        raise ValueError(f"inputs.input_ids has {len(ids)} ids; it must hold 1 to {MAX_INPUT_IDS}")
    for index, token in enumerate(ids):
        if isinstance(token, bool) or not isinstance(token, int):
            raise ValueError(f"inputs.input_ids[{index}] must be an integer (got {type(token).__name__})")
        if not 0 <= token < MINILM_VOCAB_SIZE:
            raise ValueError(
                f"inputs.input_ids[{index}] is {token}; token ids are 0 to {MINILM_VOCAB_SIZE - 1}"
            )
    words = inputs.get("words")
    if words is not None and (isinstance(words, bool) or not isinstance(words, int) or words < 0):
        raise ValueError("inputs.words must be a non-negative integer or null")


class ClassifyEncodeAdapter(BaseAdapter):
    """Stage 2: `{"input_ids": [int], ...}` -> `{"labels": [str], "similarities": [float], "words"}`.

    The similarities are cosines between the text's MiniLM embedding and each label description's;
    `words` is passed through from the input (null when absent). Options: `labels` (label ->
    description, default positive/negative/neutral), `temperature` (checked and accepted so one option
    set can serve the pipeline; only classify-format applies it), `path`, `torch_threads`.
    """

    name = "classify-encode"
    device = "auto"
    vram_mb = 256
    max_batch_size = 32
    max_delay_ms = 5.0

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.labels = _labels(options)
        self.temperature = _temperature(options)
        if options.get("torch_threads") is not None:
            _positive_int(options, "torch_threads", 1)

    def validate(self, inputs: Any) -> None:
        _validate_encode_inputs(inputs)

    def load(self, device: str) -> Any:
        import torch

        # The label embeddings come from MiniLMAdapter itself, so texts and labels are embedded alike.
        embedder = MiniLMAdapter(
            path=str(_model_path(self.options)), torch_threads=self.options.get("torch_threads")
        )
        state = embedder.load(device)
        vectors = embedder.forward(state, list(self.labels.values()))
        state["label_names"] = list(self.labels)
        state["label_matrix"] = torch.tensor(vectors, dtype=torch.float32, device=device)
        pad = state["tokenizer"].pad_token_id
        state["pad_id"] = int(pad) if pad is not None else 0
        return state

    def predict(self, state: Any, batch: list[Any]) -> list[Any]:
        outputs: list[Any] = []
        valid: list[int] = []
        for position, inputs in enumerate(batch):
            try:
                self.validate(inputs)
            except ValueError as exc:
                outputs.append(ItemError(str(exc)))
                continue
            outputs.append(None)
            valid.append(position)
        for start in range(0, len(valid), FORWARD_CHUNK):
            chunk = valid[start : start + FORWARD_CHUNK]
            rows = self.similarities(state, [batch[p]["input_ids"] for p in chunk])
            for position, row in zip(chunk, rows, strict=True):
                outputs[position] = {
                    "labels": list(state["label_names"]),
                    "similarities": row,
                    "words": batch[position].get("words"),
                }
        return outputs

    def embed(self, state: Any, sequences: list[list[int]]) -> Any:
        """The L2-normalised, mean-pooled embeddings of token-id sequences, padded to the longest."""
        import torch

        longest = max(len(ids) for ids in sequences)
        pad = state["pad_id"]
        input_ids = torch.tensor([ids + [pad] * (longest - len(ids)) for ids in sequences], dtype=torch.long)
        mask = torch.tensor(
            [[1] * len(ids) + [0] * (longest - len(ids)) for ids in sequences], dtype=torch.long
        )
        device = state["device"]
        with torch.inference_mode():
            mask = mask.to(device)
            hidden = state["model"](input_ids=input_ids.to(device), attention_mask=mask).last_hidden_state
            return torch.nn.functional.normalize(mean_pool(hidden, mask), p=2, dim=1)

    def similarities(self, state: Any, sequences: list[list[int]]) -> list[list[float]]:
        import torch

        with torch.inference_mode():
            vectors = self.embed(state, sequences)
            scores = vectors.float() @ state["label_matrix"].T
        rows: list[list[float]] = scores.cpu().tolist()
        return rows


def _validate_format_inputs(inputs: Any) -> None:
    if not isinstance(inputs, dict):
        raise ValueError(
            f"inputs must be a mapping with labels and similarities (got {type(inputs).__name__})"
        )
    labels, similarities = inputs.get("labels"), inputs.get("similarities")
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        raise ValueError("inputs.labels must be a non-empty list of strings")
    if len(set(labels)) != len(labels):
        raise ValueError("inputs.labels must not repeat a label")
    if not isinstance(similarities, list) or not all(
        isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in similarities
    ):
        raise ValueError("inputs.similarities must be a list of finite numbers")
    if len(similarities) != len(labels):
        raise ValueError(
            f"inputs.similarities has {len(similarities)} numbers; inputs.labels has {len(labels)} labels"
        )


def softmax(values: list[float], temperature: float) -> list[float]:
    """softmax(values / temperature), stable: the largest logit is subtracted first."""
    logits = [value / temperature for value in values]
    top = max(logits)
    exps = [math.exp(logit - top) for logit in logits]
    total = math.fsum(exps)
    return [e / total for e in exps]


class ClassifyFormatAdapter(BaseAdapter):
    """Stage 3: `{"labels", "similarities", "words"?}` -> `{"label", "confidence", "scores", "words"}`:
    probabilities are softmax(similarities / temperature), rounded to 6 places; the label is the most
    probable (the first on a tie). Option: `temperature` (default 0.05). Pure Python."""

    name = "classify-format"
    device = "cpu"
    vram_mb = 0
    max_batch_size = 256
    max_delay_ms = 1.0

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.temperature = _temperature(options)

    def validate(self, inputs: Any) -> None:
        _validate_format_inputs(inputs)

    def predict(self, state: Any, batch: list[Any]) -> list[Any]:
        return [self._format_one(inputs) for inputs in batch]

    def _format_one(self, inputs: Any) -> Any:
        try:
            self.validate(inputs)
        except ValueError as exc:
            return ItemError(str(exc))
        labels: list[str] = inputs["labels"]
        probabilities = softmax([float(x) for x in inputs["similarities"]], self.temperature)
        best = max(range(len(labels)), key=probabilities.__getitem__)
        return {
            "label": labels[best],
            "confidence": round(probabilities[best], 6),
            "scores": {label: round(p, 6) for label, p in zip(labels, probabilities, strict=True)},
            "words": inputs.get("words"),
        }
