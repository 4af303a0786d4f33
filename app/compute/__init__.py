"""Compute layer: backend selection, device slots, chunking and the kernel contract.

This package must stay importable without FastAPI or astropy (the kernels import
:mod:`app.compute.contract` and the GPU machine has NumPy/CuPy only).
"""
