"""Every non-empty subset of the ensemble's outputs, asked for by the stock tritonclient over each protocol.

Triton 2.51 prunes ensemble steps backwards from unrequested outputs; before the ensemble emitted
every public output from its last step, most subsets deadlocked. All 45 requests (15 subsets × HTTP
JSON, HTTP binary, gRPC) go out together, so the check costs about one batch of the served model.
"""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from distil.model_repository.interface import PUBLIC_OUTPUTS
from distil.model_repository.server import TritonServer

pytestmark = pytest.mark.integration

TEXTS = [b"A great movie with a moving story.", b"terrible service, very slow", b"good " * 600]
SUBSETS = [subset for size in range(1, 5) for subset in itertools.combinations(PUBLIC_OUTPUTS, size)]
PROTOCOLS = ("http-json", "http-binary", "grpc")


def _infer(server: TritonServer, protocol: str, outputs: tuple[str, ...]) -> dict[str, np.ndarray]:
    module: Any = grpcclient if protocol == "grpc" else httpclient
    url = server.config.grpc_url if protocol == "grpc" else server.config.http_url
    client = module.InferenceServerClient(url)
    try:
        text = module.InferInput("TEXT", [len(TEXTS), 1], "BYTES")
        array = np.array([[t] for t in TEXTS], dtype=np.object_)
        if protocol == "http-json":
            text.set_data_from_numpy(array, binary_data=False)
            requested = [module.InferRequestedOutput(name, binary_data=False) for name in outputs]
        else:
            text.set_data_from_numpy(array)
            requested = [module.InferRequestedOutput(name) for name in outputs]
        result = client.infer("distilbert", [text], outputs=requested)
        return {name: result.as_numpy(name) for name in PUBLIC_OUTPUTS if result.get_output(name) is not None}
    finally:
        client.close()


def test_every_output_subset_works_over_every_protocol_and_equals_the_full_request(server: TritonServer) -> None:
    assert len(SUBSETS) == 15
    full = _infer(server, "grpc", PUBLIC_OUTPUTS)
    assert full["TRUNCATED"][:, 0].tolist() == [False, False, True]
    cases = [(protocol, subset) for protocol in PROTOCOLS for subset in SUBSETS]
    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(lambda case: _infer(server, *case), cases))
    for (protocol, subset), answer in zip(cases, answers, strict=True):
        assert sorted(answer) == sorted(subset), (protocol, subset)
        for name in subset:
            if name in ("LOGITS", "PROBABILITIES"):
                np.testing.assert_allclose(answer[name], full[name], atol=1e-5, rtol=0, err_msg=f"{protocol} {name}")
            else:
                assert _plain(answer[name]) == _plain(full[name]), (protocol, subset, name)


def _plain(array: np.ndarray) -> list[Any]:
    """Values as Python objects; BYTES come back as str over HTTP JSON and as bytes otherwise."""
    return [v.decode() if isinstance(v, bytes) else v for v in array.reshape(-1).tolist()]
