"""gradforge's C backend (C99 header + source, libm only); registered via the `gradforge` entry point."""
