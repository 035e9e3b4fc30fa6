"""PROTOTYPE, measured by scripts/bench_serving_layouts.py, never shipped: tokenizer, classifier and
postprocess in one Python-backend stub, on the backends' own code (copied beside it as dtok, dclf,
dpost; the stages in layout_common.py). The model's CPU is timed on its own thread and written to
$FUSED_REPORT when the server stops."""

import json
import os
import time
from pathlib import Path

import dclf
import layout_common


class TritonPythonModel(layout_common.OneStage):
    def initialize(self, args):
        super().initialize(args)
        self.classifier = dclf.OnnxClassifier(
            self.version / "model.onnx", intra_op_threads=1, inter_op_threads=1, pad_id=0
        )
        self.model_cpu = 0.0
        self.texts = 0

    def finalize(self):
        super().finalize()
        Path(os.environ["FUSED_REPORT"]).write_text(json.dumps({"model_cpu_s": self.model_cpu, "texts": self.texts}))

    def logits(self, batch):
        started = time.thread_time()
        [logits] = self.classifier([batch.input_ids], [batch.attention_mask])
        self.model_cpu += time.thread_time() - started
        self.texts += batch.input_ids.shape[0]
        return logits
