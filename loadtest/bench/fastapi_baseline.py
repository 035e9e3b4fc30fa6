"""The baseline most tutorials deploy: FastAPI + uvicorn, ONNX Runtime run per request, HF fast tokenizer.

``distil bench`` starts it itself on loopback (``uvicorn distil.loadtest.bench.fastapi_baseline:app --workers
<cores>``) with the model chosen through environment variables, and sends it the same texts as every
other path. It is deliberately the tutorial shape and nothing more: one ``POST /predict`` per request,
tokenized with ``transformers``' fast tokenizer and run through a default ``InferenceSession``, no
batching across requests, no thread tuning. Responses carry the top label and the probabilities.
"""

import os
from pathlib import Path
from typing import Any

import numpy as np

from distil.model_repository.interface import MODEL_INPUTS, MODEL_OUTPUT
from distil.ort_session import cpu_session

MODEL_ENV = "DISTIL_BASELINE_ONNX"
TOKENIZER_ENV = "DISTIL_BASELINE_TOKENIZER"
LABELS_ENV = "DISTIL_BASELINE_LABELS"
MAX_LENGTH_ENV = "DISTIL_BASELINE_MAX_LENGTH"
PREDICT_PATH = "/predict"


def create_app() -> Any:
    """The FastAPI app, with the model and tokenizer loaded once per worker process."""
    from fastapi import FastAPI
    from pydantic import BaseModel
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(Path(os.environ[TOKENIZER_ENV]), use_fast=True)
    session = cpu_session(Path(os.environ[MODEL_ENV]))
    labels = os.environ.get(LABELS_ENV, "").split(",")
    max_length = int(os.environ.get(MAX_LENGTH_ENV, "512"))

    class Texts(BaseModel):
        texts: list[str]

    app = FastAPI(title="distil tutorial baseline")

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post(PREDICT_PATH)
    def predict(body: Texts) -> dict[str, Any]:
        encoded = tokenizer(body.texts, truncation=True, max_length=max_length, padding=True, return_tensors="np")
        feeds = {name: encoded[name].astype(np.int64) for name in MODEL_INPUTS}
        logits = session.run([MODEL_OUTPUT], feeds)[0]
        shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
        probabilities = shifted / shifted.sum(axis=-1, keepdims=True)
        top = probabilities.argmax(axis=-1)
        return {"labels": [labels[i] for i in top], "probabilities": probabilities.tolist()}

    return app


def __getattr__(name: str) -> Any:
    # uvicorn imports ``module:app`` in each worker; the model loads there, not when this module is imported.
    if name == "app":
        return create_app()
    raise AttributeError(name)
