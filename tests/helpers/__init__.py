"""Helpers shared by the test modules, one home each (import them; never import from a test module).

* :mod:`tests.helpers.digests`: sha256 digests of folders and phantoms.
* :mod:`tests.helpers.real_ct`: the shared real CTs (``../shared/real-ct``) and the NSCLC series,
  skipped visibly when absent, a failure when ``LUNGSEG_REQUIRE_REAL_CT=1`` or when present but incomplete.
* :mod:`tests.helpers.training`: tiny training data (dark ellipsoid blobs) and zero augmentation.
* :mod:`tests.helpers.models`: a tiny untrained U-Net saved as ``.keras``.
* :mod:`tests.helpers.host`: what the CPU can do (for x86-only settings).

``tests/helpers/dicom.py`` (DICOM rewriting, a JPEG Lossless encoder) and ``tests/helpers/phantoms.py`` (one
cached synthetic patient) predate this package and stay where they are.
"""
