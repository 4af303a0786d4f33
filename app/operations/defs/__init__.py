"""Operation modules: one operation (or a family sharing one capability row) per module."""
