"""Helpers shared by the JS9 analysis tests (an app with the JS9 router, demo files, requests)."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.main import create_app
from app.routers import js9
from app.settings import DEMO_DATA_ROOT, Settings

ANALYSIS = "/api/visualization/js9/analysis"


def js9_app(settings: Settings) -> FastAPI:
    """The application with the JS9 router (added only when ``create_app`` does not include it yet)."""
    app = create_app(settings)
    if not any(getattr(route, "path", None) == ANALYSIS for route in app.routes):
        app.include_router(js9.router)
    return app


def decompress_demo(name: str, target_dir: Path) -> Path:
    """``app/demo_data/<name>.gz`` decompressed into ``target_dir`` (CASA cannot read gzip)."""
    target = target_dir / name
    if not target.exists():
        with gzip.open(DEMO_DATA_ROOT / f"{name}.gz", "rb") as src, target.open("wb") as dst:
            shutil.copyfileobj(src, dst)
    return target


def plane(path: Path, z: int = 0) -> np.ndarray:
    """Native float32 ``(y, x)`` plane ``z`` of a FITS image or cube (first plane of other axes)."""
    from astropy.io import fits

    data = np.asarray(fits.getdata(path), dtype=np.float32)
    while data.ndim > 3:
        data = data[0]
    return data[z] if data.ndim == 3 else data


def cube(path: Path) -> np.ndarray:
    """Native float32 ``(z, y, x)`` cube of a FITS file (images get depth 1)."""
    from astropy.io import fits

    data = np.asarray(fits.getdata(path), dtype=np.float32)
    while data.ndim > 3:
        data = data[0]
    return data if data.ndim == 3 else data[None]


def analyse(client: TestClient, task: str, image_path: str | Path, region: dict | None = None,
            parameters: dict | None = None, expect: int = 200) -> dict[str, Any]:
    """POST one analysis request and return the JSON body (asserting the status code)."""
    body: dict[str, Any] = {"task": task, "image_path": str(image_path)}
    if region is not None:
        body["region"] = region
    if parameters is not None:
        body["parameters"] = parameters
    response = client.post(ANALYSIS, json=body)
    assert response.status_code == expect, response.text
    return response.json()
