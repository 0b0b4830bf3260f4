"""The run folder: its files, its typed manifest and :func:`load_run`.

``tumorscope.runs`` owns the folder a training run (or an export) leaves behind; training
writes it through :mod:`tumorscope.runs.files` and :class:`RunManifest`, and prediction,
evaluation, export and the service read it only through :func:`load_run`.
"""

from tumorscope.runs.backend import Backend, TorchBackend
from tumorscope.runs.files import MANIFEST_FILE, MODEL_FILE, CheckpointError
from tumorscope.runs.load import LoadedRun, load_run, read_run_manifest
from tumorscope.runs.manifest import SCHEMA_VERSION, Calibration, ManifestError, RunManifest

__all__ = [
    "MANIFEST_FILE",
    "MODEL_FILE",
    "SCHEMA_VERSION",
    "Backend",
    "Calibration",
    "CheckpointError",
    "LoadedRun",
    "ManifestError",
    "RunManifest",
    "TorchBackend",
    "load_run",
    "read_run_manifest",
]
