"""What the one-stage prototypes (fused_model.py, bls_model.py) share: a Python-backend ``distilbert``
that tokenizes the texts of its batch, gets their logits from ``self.logits`` (each prototype its own
way) and postprocesses, on the backends' own code. Copied beside them by scripts/bench_serving_layouts.py."""

import inspect
import json
import os
import time
from collections import defaultdict
from pathlib import Path

import distil_quality_metrics as quality_metrics
import dpost
import dtok
import numpy as np
import triton_python_backend_utils as pb_utils

MAX_TEXT_BYTES = 16384


class OneStage:
    def initialize(self, args):
        os.environ["TOKENIZERS_PARALLELISM"] = "false"  # as the shipped tokenizer: one thread per batch
        self.version = Path(args["model_repository"]) / args["model_version"]
        # Repositories written before the tokenizer built its own padding take a pad token.
        older = "pad_token" in inspect.signature(dtok.TextTokenizer).parameters
        self.tokenizer = dtok.TextTokenizer(
            self.version / "tokenizer.json", max_length=512, pad_id=0, **({"pad_token": "[PAD]"} if older else {})
        )
        self.labels = json.loads((self.version / "labels.json").read_text())
        self.metrics = quality_metrics.QualityMetrics()
        self.inputs = dtok.InputCounts(self.metrics, dtok.length_buckets(512, ()), self.tokenizer.special_tokens)
        self.predictions = dpost.PredictionCounts(self.metrics, self.labels)
        self.metrics.start()
        self.phases = defaultdict(float)  # phase -> CPU seconds of the executing thread
        self.texts = 0

    def report(self):
        """CPU ms per text of each phase of ``execute`` (warm-up included), for $FUSED_REPORT."""
        return {phase: 1000.0 * seconds / max(self.texts, 1) for phase, seconds in self.phases.items()}

    def finalize(self):
        self.metrics.close()

    def logits(self, batch):
        raise NotImplementedError

    def execute(self, requests):
        clock = time.thread_time
        mark = clock()
        phases = self.phases

        def lap(phase):
            nonlocal mark
            now = clock()
            phases[phase] += now - mark
            mark = now

        responses = [None] * len(requests)
        texts, cut, spans = [], [], []
        for index, request in enumerate(requests):
            try:
                values = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy()
                decoded = dtok.decode_texts(values, MAX_TEXT_BYTES)
            except dtok.InvalidTextError as exc:
                responses[index] = pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)
                )
                continue
            spans.append((index, len(texts), len(texts) + len(decoded.texts)))
            texts.extend(decoded.texts)
            cut.extend(decoded.cut)
        lap("read")
        if not texts:
            return responses
        self.texts += len(texts)
        batch = self.tokenizer(texts)
        truncated = batch.truncated | np.array(cut, dtype=np.bool_)
        lap("tokenize")
        self.inputs.count(batch, truncated)
        lap("count")
        try:
            logits = self.logits(batch)
        except RuntimeError as exc:
            error = pb_utils.TritonError(str(exc))
            return [response or pb_utils.InferenceResponse(error=error) for response in responses]
        lap("model")
        probabilities = dpost.softmax(logits)
        labels = dpost.label_names(probabilities, self.labels)
        lap("postprocess")
        self.predictions.count(probabilities)
        lap("count")
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
        lap("respond")
        return responses
