"""Inference: the one predictor, folder prediction, figures and language-use measures."""
