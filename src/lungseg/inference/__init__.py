"""Using a trained model: the Segmenter (preprocessing, network, post-processing, quality checks),
densitometry, model bundles and the registry lookup, stage-2 refinement, batch and cohort runs
(plain, sharded, Ray), and the MLflow pyfunc served by ``mlflow models serve``.

Imports nothing from :mod:`lungseg.training` (checked by ``tests/unit/test_structure.py``).
"""
