"""gradforge's Metal backend: MSL compute kernels, Swift host code, and a C++ shim that runs the
kernels on the CPU for verification on Linux (see docs/backends/metal.md)."""
