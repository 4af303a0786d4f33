"""CPU emulation of the GPU kernel tree for the test suite (CuPy stand-in + CUDA-as-C++ executor)."""
