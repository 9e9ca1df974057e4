"""Experiment code for the tensor-train layers: data, training and reporting helpers.

``experiments.load_model(run_dir, backend="torch", which="best-val")`` loads a run's weights into either
framework's model (:mod:`experiments.weights`). Importing the package imports neither JAX nor PyTorch.
"""

from experiments.weights import load_model

__all__ = ["load_model"]
