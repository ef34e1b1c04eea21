"""Fitting models: tf.data datasets and augmentation, the fit loop, Optuna tuning, fine-tuning,
cross-validation, stage-2 (refine) training, and MLflow experiment tracking.

May import from io, nn, inference and evaluation; nothing outside :mod:`lungseg.stages` imports it
except other training modules (a served model never drags in the trainer).
"""
