"""Evaluation: metrics from one confusion matrix, and the evaluate command."""
