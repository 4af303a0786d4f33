"""CPU reference kernels (NumPy/SciPy): the oracle the GPU kernels are checked against."""
