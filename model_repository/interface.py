"""The served interface in one place: model names, tensor names, the public outputs, the protocols.

Everything in distil imports these names. The Python backends (``backends/``) are copied into a
repository and import only numpy, tokenizers and ONNX Runtime there, so they keep their own literals;
tests/unit/test_interface.py proves that they match these.
"""

from __future__ import annotations

from enum import Enum

# Models. ``distilbert`` is the public one (an ensemble); the others are its steps.
ENSEMBLE = "distilbert"
TOKENIZER = "tokenizer"
CLASSIFIER = "classifier"
POSTPROCESS = "postprocess"
BATCHED_MODELS = (TOKENIZER, CLASSIFIER, POSTPROCESS)

# The ensemble's public API; clients and load tests use these names.
TEXT = "TEXT"
LABEL = "LABEL"
PROBABILITIES = "PROBABILITIES"
LOGITS = "LOGITS"
TRUNCATED = "TRUNCATED"
PUBLIC_OUTPUTS = (LABEL, PROBABILITIES, LOGITS, TRUNCATED)

# The model's own tensors: the ONNX graph's inputs and output, and the classifier's.
INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
MODEL_INPUTS = (INPUT_IDS, ATTENTION_MASK)
MODEL_OUTPUT = "logits"

# Tensors inside the ensemble. Triton 2.51 prunes ensemble steps backwards from the outputs a client
# did not request; a public output that also fed a later step lost its producer when left out, and
# the request deadlocked. So every public output comes from the last step, which nothing consumes,
# and the earlier steps pass internal tensors (these names) forward.
INTERNAL_LOGITS = MODEL_OUTPUT
INTERNAL_TRUNCATED = "truncated"

# Triton's default ports.
HTTP_PORT = 8000
GRPC_PORT = 8001
METRICS_PORT = 8002


class Protocol(str, Enum):
    """Triton's two inference protocols."""

    http = "http"
    grpc = "grpc"

    @property
    def default_port(self) -> int:
        return GRPC_PORT if self is Protocol.grpc else HTTP_PORT
