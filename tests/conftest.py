"""Shared test set-up: every test gets its own working directory, so a default `.dash` lands in tmp."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path_factory, monkeypatch):
    work = tmp_path_factory.mktemp("cwd")
    monkeypatch.chdir(work)
    monkeypatch.delenv("ML_DASH_ROOT", raising=False)
    for k in [k for k in os.environ if k.startswith("ML_DASH_")]:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("ML_DASH_CACHE_DIR", str(work / ".ml-dash-cache"))  # the column cache, not ~/.cache
    yield
