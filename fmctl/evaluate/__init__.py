"""Evaluation reports: metrics files, predictions and plots."""
