"""``marsam predict``: put a trained model to work on folders and whole orbital products."""
from .models import open_predictor
from .run import PredictReport, PredictSettings, predict_images

__all__ = ["PredictReport", "PredictSettings", "open_predictor", "predict_images"]
