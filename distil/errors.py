"""The error tree: the library raises these, and only the CLI turns them into messages.

Each message says what happened and what to do next.
"""


class DistilError(Exception):
    """Root of every error distil raises on purpose."""

    exit_code = 1


class ConfigError(DistilError):
    """An option or configuration value is invalid."""

    exit_code = 2


class ModelSourceError(DistilError):
    """The model checkpoint could not be found or loaded."""


class BuildError(DistilError):
    """Building the model artefacts failed."""


class OnnxExportError(BuildError):
    """Export to ONNX, or the ONNX checker, failed."""


class OutputMismatchError(BuildError):
    """ONNX Runtime and PyTorch disagree beyond the tolerance."""


class EngineBuildError(BuildError):
    """A TensorRT engine could not be built."""


class RepositoryError(DistilError):
    """The Triton model repository could not be written or read."""


class ServerError(DistilError):
    """The Triton server could not be started or did not become ready."""


class InferenceError(DistilError):
    """A request to a Triton server failed."""


class LoadTestError(DistilError):
    """A load test could not run or its results could not be analysed."""
