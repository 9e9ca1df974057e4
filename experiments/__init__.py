"""Experiment code for the tensor-train layers: data, training and reporting helpers."""
