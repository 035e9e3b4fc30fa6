"""FLOOR, measured by scripts/bench_serving_layouts.py, never shipped: a Python-backend ``distilbert``
that answers every request with fixed outputs (what Triton and one stub cost per request, no work)."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.label = np.array([[b"POSITIVE"]], dtype=np.object_)
        self.probabilities = np.array([[0.25, 0.75]], dtype=np.float32)
        self.flags = np.array([[False]])

    def execute(self, requests):
        return [
            pb_utils.InferenceResponse(
                output_tensors=[
                    pb_utils.Tensor("LABEL", self.label),
                    pb_utils.Tensor("PROBABILITIES", self.probabilities),
                    pb_utils.Tensor("LOGITS", self.probabilities),
                    pb_utils.Tensor("TRUNCATED", self.flags),
                ]
            )
            for request in requests
        ]
