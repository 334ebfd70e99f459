"""The protocols users already speak, each proven with its own client against a real daemon: the
`openai` package on `/v1/embeddings` and `/v1/models`, `tritonclient.http` on the Open Inference
Protocol (`/v2/...`) for `mlp` (FP32) and `minilm` (BYTES in, FP32 out)."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import numpy as np
import openai
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from adapters.text import MiniLMAdapter
from tests.http.conftest import TOKEN
from tests.support.daemon import Daemon

SENTENCES = ["The quick brown fox jumps over the lazy dog.", "A scheduler places jobs on workers.", "hi"]
MLP_ROWS = np.linspace(-1, 1, 3 * 256, dtype=np.float32).reshape(3, 256)


@pytest.fixture(scope="module")
def own(shared_daemon: Daemon) -> dict[str, np.ndarray]:
    """What the models give through the daemon's own endpoint, to compare the protocols with."""
    with shared_daemon.client() as http:
        minilm = http.post("/models/minilm/infer", json={"inputs": SENTENCES}, timeout=120).json()["result"]
        mlp = [
            http.post("/models/mlp/infer", json={"inputs": row.tolist()}).json()["result"] for row in MLP_ROWS
        ]
    return {"minilm": np.asarray(minilm, dtype=np.float32), "mlp": np.asarray(mlp, dtype=np.float32)}


@pytest.fixture
def openai_client(shared_daemon: Daemon) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(base_url=f"{shared_daemon.url}/v1", api_key=TOKEN, max_retries=0)
    yield client
    client.close()


def test_openai_embeddings_equal_minilm_in_float_and_base64(
    openai_client: openai.OpenAI, own: dict[str, np.ndarray], shared_daemon: Daemon
) -> None:
    floats = openai_client.embeddings.create(model="minilm", input=SENTENCES, encoding_format="float")
    assert [item.index for item in floats.data] == [0, 1, 2] and floats.model == "minilm"
    np.testing.assert_allclose(np.asarray([item.embedding for item in floats.data]), own["minilm"], atol=1e-6)
    expected_tokens = sum(MiniLMAdapter().count_tokens(SENTENCES))
    assert floats.usage.prompt_tokens == floats.usage.total_tokens == expected_tokens > len(SENTENCES)
    default = openai_client.embeddings.create(model="minilm", input=SENTENCES)  # the package asks for base64
    np.testing.assert_allclose(
        np.asarray([item.embedding for item in default.data]), own["minilm"], atol=1e-6
    )
    one = openai_client.embeddings.create(model="minilm", input=SENTENCES[0])
    np.testing.assert_allclose(one.data[0].embedding, own["minilm"][0], atol=1e-6)
    asked = {"model": "minilm", "input": SENTENCES[:1]}
    with shared_daemon.client() as http:
        raw = http.post("/v1/embeddings", json={**asked, "encoding_format": "base64"}).json()
        as_floats = http.post("/v1/embeddings", json={**asked, "encoding_format": "float"}).json()
    packed = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    # base64 loses nothing: the same float32 values as the same request's JSON floats. (Against `own`,
    # a batch of three, only close: a CPU's kernels may round a batch of one differently.)
    np.testing.assert_array_equal(packed, np.asarray(as_floats["data"][0]["embedding"], dtype=np.float32))
    np.testing.assert_allclose(packed, own["minilm"][0], atol=1e-6)
    assert {model.id for model in openai_client.models.list()} >= {"minilm", "mlp", "echo"}
    assert openai_client.models.retrieve("minilm").id == "minilm"
    with pytest.raises(openai.UnprocessableEntityError) as refused:
        openai_client.embeddings.create(model="mlp", input="not an embedding model")
    assert "not an embedding model" in str(refused.value)
    with pytest.raises(openai.NotFoundError):
        openai_client.embeddings.create(model="nope", input="x")
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{shared_daemon.url}/v1", api_key="wrong", max_retries=0).models.list()


@pytest.fixture
def triton_client(shared_daemon: Daemon) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(shared_daemon.url.removeprefix("http://"))
    yield client
    client.close()


def auth() -> dict[str, str]:
    """A fresh headers dict per call: tritonclient writes its own headers into the one it is given."""
    return {"Authorization": f"Bearer {TOKEN}"}


def test_tritonclient_health_and_metadata(triton_client: triton.InferenceServerClient) -> None:
    assert triton_client.is_server_live(headers=auth()) and triton_client.is_server_ready(headers=auth())
    assert triton_client.is_model_ready("mlp", headers=auth()) and triton_client.is_model_ready(
        "minilm", headers=auth()
    )
    assert not triton_client.is_model_ready("nope", headers=auth())
    metadata = triton_client.get_model_metadata("mlp", headers=auth())
    assert metadata["inputs"] == [{"name": "INPUT", "datatype": "FP32", "shape": [-1, 256]}]
    assert metadata["outputs"] == [{"name": "OUTPUT", "datatype": "FP32", "shape": [-1, 16]}]
    assert triton_client.get_model_metadata("minilm", headers=auth())["inputs"][0]["datatype"] == "BYTES"
    assert triton_client.get_server_metadata(headers=auth())["name"] == "modelsched"


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_infers_mlp_and_minilm(
    triton_client: triton.InferenceServerClient, own: dict[str, np.ndarray], binary: bool
) -> None:
    rows = triton.InferInput("INPUT", list(MLP_ROWS.shape), "FP32")
    rows.set_data_from_numpy(MLP_ROWS, binary_data=binary)
    outputs = [triton.InferRequestedOutput("OUTPUT", binary_data=binary)]
    answer = triton_client.infer("mlp", [rows], outputs=outputs, headers=auth(), request_id="r1")
    np.testing.assert_allclose(answer.as_numpy("OUTPUT"), own["mlp"], atol=1e-6)
    assert answer.get_response()["id"] == "r1"
    text = triton.InferInput("TEXT", [len(SENTENCES)], "BYTES")
    text.set_data_from_numpy(np.array([s.encode() for s in SENTENCES], dtype=np.object_), binary_data=binary)
    embedded = triton_client.infer("minilm", [text], headers=auth())  # no outputs named: all, in binary
    vectors = embedded.as_numpy("EMBEDDING")
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(vectors, own["minilm"], atol=1e-6)


def test_tritonclient_errors(triton_client: triton.InferenceServerClient) -> None:
    wrong = triton.InferInput("INPUT", [1, 3], "FP32")
    wrong.set_data_from_numpy(np.zeros((1, 3), dtype=np.float32))
    with pytest.raises(InferenceServerException) as refused:
        triton_client.infer("mlp", [wrong], headers=auth())
    assert refused.value.status() == "422" and "256" in refused.value.message()
    with pytest.raises(InferenceServerException) as unknown:
        triton_client.infer("nope", [wrong], headers=auth())
    assert unknown.value.status() == "404"
    typed = triton.InferInput("INPUT", [1, 256], "FP64")
    typed.set_data_from_numpy(np.zeros((1, 256), dtype=np.float64))
    with pytest.raises(InferenceServerException, match="FP32"):
        triton_client.infer("mlp", [typed], headers=auth())
