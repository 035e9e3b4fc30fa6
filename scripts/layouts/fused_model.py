"""PROTOTYPE, measured by scripts/bench_serving_layouts.py, never shipped: tokenizer, classifier and
postprocess in one Python-backend stub, on the backends' own code (copied beside it as dtok, dclf,
dpost; the stages in layout_common.py). The CPU of each phase of ``execute`` (the model's among them)
is timed on the executing thread and written to $FUSED_REPORT when the server stops."""

import json
import os
from pathlib import Path

import dclf
import layout_common


class TritonPythonModel(layout_common.OneStage):
    def initialize(self, args):
        super().initialize(args)
        self.classifier = dclf.OnnxClassifier(
            self.version / "model.onnx", intra_op_threads=1, inter_op_threads=1, pad_id=0
        )

    def finalize(self):
        super().finalize()
        Path(os.environ["FUSED_REPORT"]).write_text(json.dumps(self.report()))

    def logits(self, batch):
        [logits] = self.classifier([batch.input_ids], [batch.attention_mask])
        return logits
