"""GPU kernels (CuPy, imported lazily inside functions so this package imports without CUDA)."""
