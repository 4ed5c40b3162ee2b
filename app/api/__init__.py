"""The REST API (FastAPI). See app.api.main.create_app."""

import os

# One BLAS thread per serving process: the hot paths are small matrix-vector products where
# OpenBLAS' spinning worker threads only compete with the event loop (and with other
# workers) for cores; set before numpy loads OpenBLAS. An operator's own setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
