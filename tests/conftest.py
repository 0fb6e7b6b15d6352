"""Suite-wide setup: the library adapters are installed at process start in production
(`WorkerServices.start`); tests that build agents without worker services get them here."""

from __future__ import annotations

import pytest

from app.adapters import install_adapters


@pytest.fixture(autouse=True, scope="session")
def _library_adapters() -> None:
    install_adapters()
