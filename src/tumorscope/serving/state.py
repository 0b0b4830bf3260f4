"""What the routes share: the settings, one predictor per inference slot, admission,
telemetry, and the volume masks kept for download."""

from __future__ import annotations

import queue
import shutil
import tempfile
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tumorscope.inference.predictor import Predictor
from tumorscope.serving.admission import Admission
from tumorscope.serving.schemas import ModelInfo
from tumorscope.serving.settings import ServiceSettings
from tumorscope.serving.telemetry import Telemetry


class ResultStore:
    """Volume masks kept for download, the oldest dropped past ``keep``."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.root = Path(tempfile.mkdtemp(prefix="tumorscope-results-"))
        self._items: OrderedDict[str, Path] = OrderedDict()

    def add(self, rid: str) -> Path:
        """A new folder for result ``rid``."""
        folder = self.root / rid
        folder.mkdir()
        self._items[rid] = folder
        while len(self._items) > self.keep:
            _, old = self._items.popitem(last=False)
            shutil.rmtree(old, ignore_errors=True)
        return folder

    def get(self, rid: str) -> Path | None:
        """Result ``rid``'s folder, or None when unknown or dropped."""
        return self._items.get(rid)

    def close(self) -> None:
        """Delete every kept result."""
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class ServiceState:
    """What the routes share: the settings, the predictors, admission and telemetry."""

    settings: ServiceSettings
    telemetry: Telemetry
    admission: Admission
    store: ResultStore
    predictors: queue.SimpleQueue[Predictor] = field(default_factory=queue.SimpleQueue)
    info: ModelInfo | None = None
    ready: bool = False
    draining: bool = False
    load_seconds: float = 0.0
    startup_error: str | None = None

    @contextmanager
    def lease(self) -> Iterator[Predictor]:
        """A predictor of its own for the calling inference slot."""
        predictor = self.predictors.get()
        try:
            yield predictor
        finally:
            self.predictors.put(predictor)
