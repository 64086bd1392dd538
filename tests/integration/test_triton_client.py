"""tritonclient, the Open Inference Protocol's own client, against the real server: its defaults
(binary tensor data both ways), JSON inputs, named outputs in either encoding, and its request
compression (gzip, deflate)."""

from __future__ import annotations

import numpy as np
import pytest
import requests
import tritonclient.http as tritonclient_http

from gunicorn_server import GunicornServer
from support import PAPER_ROW
from wine_quality import MODEL_NAME

pytestmark = pytest.mark.slow

ROWS = np.array([PAPER_ROW, [11.2, 0.28, 0.56, 1.9, 0.075, 17, 60, 0.998, 3.16, 0.58, 9.8]])


def json_answer(server: GunicornServer) -> dict[str, list]:
    body = {
        "inputs": [
            {
                "name": "input-0",
                "shape": list(ROWS.shape),
                "datatype": "FP64",
                "data": ROWS.tolist(),
            }
        ]
    }
    answer = requests.post(f"{server.url}/v2/models/{MODEL_NAME}/infer", json=body, timeout=10)
    assert answer.status_code == 200, answer.text
    return {o["name"]: o["data"] for o in answer.json()["outputs"]}


@pytest.mark.parametrize("binary_in", [True, False])
@pytest.mark.parametrize("dtype", ["FP64", "FP32"])
def test_tritonclient_defaults_get_the_json_answers(
    small_model_server: GunicornServer, binary_in: bool, dtype: str
) -> None:
    expected = json_answer(small_model_server)
    client = tritonclient_http.InferenceServerClient(f"127.0.0.1:{small_model_server.port}")
    try:
        assert client.is_server_ready()
        assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
        tensor = tritonclient_http.InferInput("input-0", list(ROWS.shape), dtype)
        values = ROWS.astype(np.float32 if dtype == "FP32" else np.float64)
        tensor.set_data_from_numpy(values, binary_data=binary_in)
        result = client.infer(MODEL_NAME, [tensor])  # outputs: binary, the client's default
    finally:
        client.close()
    assert result.as_numpy("grade").tolist() == expected["grade"]
    tolerance = 1e-5 if dtype == "FP32" else 1e-9
    np.testing.assert_allclose(result.as_numpy("quality"), expected["quality"], atol=tolerance)


def test_tritonclient_named_outputs_mixed_encodings(small_model_server: GunicornServer) -> None:
    expected = json_answer(small_model_server)
    client = tritonclient_http.InferenceServerClient(f"127.0.0.1:{small_model_server.port}")
    try:
        tensor = tritonclient_http.InferInput("input-0", list(ROWS.shape), "FP64")
        tensor.set_data_from_numpy(ROWS)
        outputs = [
            tritonclient_http.InferRequestedOutput("grade", binary_data=False),
            tritonclient_http.InferRequestedOutput("quality", binary_data=True),
        ]
        result = client.infer(MODEL_NAME, [tensor], outputs=outputs)
    finally:
        client.close()
    assert result.get_output("grade")["data"] == expected["grade"]
    np.testing.assert_allclose(result.as_numpy("quality"), expected["quality"], atol=1e-9)


def test_binary_sizes_that_do_not_add_up_are_400(small_model_server: GunicornServer) -> None:
    header = (
        b'{"inputs":[{"name":"input-0","shape":[1,11],"datatype":"FP64",'
        b'"parameters":{"binary_data_size":88}}]}'
    )
    for tail, reason in ((b"\0" * 80, "short"), (b"\0" * 96, "long")):
        answer = requests.post(
            f"{small_model_server.url}/v2/models/{MODEL_NAME}/infer",
            data=header + tail,
            headers={"Inference-Header-Content-Length": str(len(header))},
            timeout=10,
        )
        assert answer.status_code == 400, (reason, answer.text)
        assert "binary" in answer.json()["error"], reason


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_tritonclient_compressed_requests_get_the_same_answers(
    small_model_server: GunicornServer, algorithm: str
) -> None:
    expected = json_answer(small_model_server)
    client = tritonclient_http.InferenceServerClient(f"127.0.0.1:{small_model_server.port}")
    try:
        tensor = tritonclient_http.InferInput("input-0", list(ROWS.shape), "FP64")
        tensor.set_data_from_numpy(ROWS)  # binary, behind a JSON header: both compressed
        result = client.infer(MODEL_NAME, [tensor], request_compression_algorithm=algorithm)
    finally:
        client.close()
    assert result.as_numpy("grade").tolist() == expected["grade"]
    np.testing.assert_allclose(result.as_numpy("quality"), expected["quality"], atol=1e-9)
