"""PROTOTYPE, measured by scripts/bench_serving_layouts.py, never shipped: tokenizer, classifier and
postprocess in one Python-backend stub, on the backends' own code (copied beside it as dtok, dclf,
dpost). The model's CPU is timed on its own thread and written to $FUSED_REPORT when the server stops."""

import json
import os
import time
from pathlib import Path

import dclf
import distil_quality_metrics as quality_metrics
import dpost
import dtok
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        d = Path(args["model_repository"]) / args["model_version"]
        self.tokenizer = dtok.TextTokenizer(
            d / "tokenizer.json", max_length=512, pad_id=0, pad_token="[PAD]", buckets=()
        )
        self.classifier = dclf.OnnxClassifier(d / "model.onnx", intra_op_threads=1, inter_op_threads=1, pad_id=0)
        self.labels = json.loads((d / "labels.json").read_text())
        self.metrics = quality_metrics.QualityMetrics()
        self.inputs = dtok.InputCounts(self.metrics, dtok.length_buckets(512, ()), self.tokenizer.special_tokens)
        self.predictions = dpost.PredictionCounts(self.metrics, self.labels)
        self.metrics.start()
        self.model_cpu = 0.0
        self.texts = 0

    def finalize(self):
        self.metrics.close()
        Path(os.environ["FUSED_REPORT"]).write_text(json.dumps({"model_cpu_s": self.model_cpu, "texts": self.texts}))

    def execute(self, requests):
        responses = [None] * len(requests)
        texts, cut, spans = [], [], []
        for index, request in enumerate(requests):
            try:
                decoded = dtok.decode_texts(pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy(), 16384)
            except dtok.InvalidTextError as exc:
                responses[index] = pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)
                )
                continue
            spans.append((index, len(texts), len(texts) + len(decoded.texts)))
            texts.extend(decoded.texts)
            cut.extend(decoded.cut)
        if not texts:
            return responses
        batch = self.tokenizer(texts)
        truncated = batch.truncated | np.array(cut, dtype=np.bool_)
        self.inputs.count(batch, truncated)
        started = time.thread_time()
        [logits] = self.classifier([batch.input_ids], [batch.attention_mask])
        self.model_cpu += time.thread_time() - started
        self.texts += len(texts)
        probabilities = dpost.softmax(logits)
        labels = dpost.label_names(probabilities, self.labels)
        self.predictions.count(probabilities)
        flags = truncated.reshape(-1, 1)
        for index, start, stop in spans:
            responses[index] = pb_utils.InferenceResponse(
                output_tensors=[
                    pb_utils.Tensor("LABEL", labels[start:stop]),
                    pb_utils.Tensor("PROBABILITIES", probabilities[start:stop]),
                    pb_utils.Tensor("LOGITS", logits[start:stop]),
                    pb_utils.Tensor("TRUNCATED", flags[start:stop]),
                ]
            )
        return responses
