"""Python-backend models, copied into ``<repository>/<model>/1/model.py`` by the writer.

They import without Triton (``triton_python_backend_utils`` is guarded) so they are linted and
unit-tested like the rest of the code.
"""
