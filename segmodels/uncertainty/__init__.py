"""Uncertainty of marsam models: where a prediction should not be trusted.

Single-pass measures (predictive entropy, 1 - max probability), MC dropout (epistemic part as
mutual information), the aleatoric variance of a heteroscedastic head, and calibration (ECE
plus a reliability diagram).
"""
from .aleatoric import AleatoricResult, aleatoric_variance
from .calibration import CalibrationBins, expected_calibration_error, reliability_diagram
from .mc_dropout import MCDropoutResult, dropout_layers, mc_dropout, mc_dropout_mode
from .measures import max_prob_uncertainty, predictive_entropy, single_pass_maps

__all__ = ["AleatoricResult", "aleatoric_variance", "CalibrationBins", "expected_calibration_error",
           "reliability_diagram", "MCDropoutResult", "dropout_layers", "mc_dropout", "mc_dropout_mode",
           "max_prob_uncertainty", "predictive_entropy", "single_pass_maps"]
