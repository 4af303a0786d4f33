"""JS9 image analysis (``POST /api/visualization/js9/analysis``): CASA-style tasks on FITS images.

Modules:

- :mod:`.errors` — the API's own error convention (400/404 ``{"detail"}``, 500 ``{"success": false}``);
- :mod:`.regions` — JS9 region objects (1-based pixels) → pixel masks and CASA region text;
- :mod:`.images` — opening an image for a task: Stokes plane, channel range, beam, axis layout;
- :mod:`.native_engine` — the five tasks on our kernels (NumPy on CPU, CuPy on GPU);
- :mod:`.casa_engine` — the same tasks through casatasks (optional ``casa`` extra, offline);
- :mod:`.cache` — the SHA-256-keyed FIFO result cache;
- :mod:`.analysis` — request validation, engine choice, dispatch, timing and caching.
"""
