"""Request and response bodies of the service, as they appear on its OpenAPI page (/docs)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class PredictJSON(BaseModel):
    """A JSON /predict body: `texts` for a text model, `images` (base64 file bytes) for an image model."""

    texts: list[str] | None = Field(None, description="Texts to classify (text models).")
    images: list[str] | None = Field(None, description="Base64-encoded image files, or data: URLs (image models).")


class PredictMultipart(BaseModel):
    """A multipart /predict body: one image file per part."""

    images: list[bytes] = Field(..., description="Image files (PNG, JPEG, BMP, TIFF, WebP).",
                                json_schema_extra={"items": {"type": "string", "format": "binary"}})


class Prediction(BaseModel):
    id: str = Field(..., description="Prediction id: send it to /feedback with the true label.")
    label: str
    confidence: float = Field(..., description="Probability of the predicted label.")
    probabilities: dict[str, float]
    model: str
    version: int = Field(..., description="Registry version that answered.")
    arm: Literal["production", "candidate"]


class PredictResponse(BaseModel):
    request_id: str
    predictions: list[Prediction]


class FeedbackRequest(BaseModel):
    prediction_id: str
    label: str = Field(..., description="The true label.")


class FeedbackResponse(BaseModel):
    prediction_id: str
    label: str
    predicted: str
    correct: bool
    version: int


class ArmState(BaseModel):
    model: str
    version: int
    runtime: str = Field(..., description="torch, or the ONNX Runtime variant served.")


class Health(BaseModel):
    status: Literal["ok"]
    modality: str
    labels: list[str]
    production: ArmState
    candidate: ArmState | None
    mode: str | None = Field(None, description="ab or shadow when a candidate is served.")
    split: float | None = None


class PromoteRequest(BaseModel):
    version: int = Field(..., strict=True, ge=1, description="Version number (an integer: true is not 1).")
    to: Literal["production", "candidate"] = "production"


class Error(BaseModel):
    detail: str
