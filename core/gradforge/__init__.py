"""gradforge: training code with exact gradients, generated for Swift, Metal, C and NumPy."""
__version__ = "0.1.0"

from .hookspecs import hookimpl  # noqa: E402  (plugins import gradforge.hookimpl)
from .errors import BackendError, GradforgeError, ProjectError, ToolchainError  # noqa: E402
from .project import ProjectSpec, load_project  # noqa: E402
from .backend import Backend, Case, Option, Result, Toolchain  # noqa: E402
from .api import build, compile_project, emit, load_program  # noqa: E402



def __getattr__(name):
    """``gradforge.train``, ``gradforge.predict``, ``gradforge.TrainResult``: imported on first
    use (they need numpy and pyarrow, which building code does not)."""
    if name in ("train", "predict", "TrainResult", "Iteration"):
        from . import training
        return getattr(training, name)
    raise AttributeError(f"module 'gradforge' has no attribute {name!r}")


__all__ = ["train", "predict", "TrainResult", "Iteration",
    "__version__", "hookimpl", "ProjectSpec", "load_project", "compile_project", "emit", "build",
    "load_program", "Backend", "Option", "Case", "Result", "Toolchain", "GradforgeError",
    "ProjectError", "BackendError", "ToolchainError",
]
