"""Steering a policy with imagination: score candidate action chunks by their imagined outcome."""

from worldsim.steering.policy import SteeredPolicy
from worldsim.steering.predictor import OutcomePredictor, Prediction
from worldsim.steering.scorers import GoalImageScorer

__all__ = ["GoalImageScorer", "OutcomePredictor", "Prediction", "SteeredPolicy"]
