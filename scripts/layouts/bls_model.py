"""PROTOTYPE, measured by scripts/bench_serving_layouts.py, never shipped: the layout a GPU node would
serve with one Python stage. ``distilbert`` is one Python-backend model that tokenizes the requests of
its batch, sends the whole batch to ``classifier`` as ONE request (business logic scripting, BLS),
and postprocesses the logits (the stages in layout_common.py); the classifier stays a model of its
own (on a GPU node: ONNX Runtime or TensorRT inside tritonserver; here the CPU repository's
Python-backend classifier). Per request one Python hop; per batch one more, to the classifier."""

import layout_common
import triton_python_backend_utils as pb_utils


class TritonPythonModel(layout_common.OneStage):
    def logits(self, batch):
        answer = pb_utils.InferenceRequest(
            model_name="classifier",
            requested_output_names=["logits"],
            inputs=[
                pb_utils.Tensor("input_ids", batch.input_ids),
                pb_utils.Tensor("attention_mask", batch.attention_mask),
            ],
        ).exec()
        if answer.has_error():
            raise RuntimeError(f"classifier: {answer.error().message()}")
        return pb_utils.get_output_tensor_by_name(answer, "logits").as_numpy()
