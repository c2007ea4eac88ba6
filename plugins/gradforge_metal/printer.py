"""Metal Shading Language expression printer and reserved words.

MSL is C++14 with address spaces, so the shared :class:`~gradforge.printing.CFamilyPrinter`
does the work: ``float`` literals carry the ``f`` suffix (Metal has no ``double``; an unsuffixed
literal would be a ``double`` to a C++ compiler and is an error on Metal GPUs without double
support), small integer powers are products, ``Piecewise`` is a nested ``?:``, and ``sign``
prints as the kernels' ``gf_sign`` helper: Metal's built-in ``sign`` (``sign(±0) = 0``, the
subgradient rule gradforge uses) except that NaN stays NaN, as in every backend.
"""
from __future__ import annotations

from gradforge.plugin_api import CFamilyPrinter

#: C++14 keywords (MSL is based on C++14) and alternative tokens.
CPP_KEYWORDS = {
    "alignas", "alignof", "and", "and_eq", "asm", "auto", "bitand", "bitor", "bool", "break",
    "case", "catch", "char", "char16_t", "char32_t", "class", "compl", "const", "constexpr",
    "const_cast", "continue", "decltype", "default", "delete", "do", "double", "dynamic_cast",
    "else", "enum", "explicit", "export", "extern", "false", "float", "for", "friend", "goto",
    "if", "inline", "int", "long", "mutable", "namespace", "new", "noexcept", "not", "not_eq",
    "nullptr", "operator", "or", "or_eq", "private", "protected", "public", "register",
    "reinterpret_cast", "return", "short", "signed", "sizeof", "static", "static_assert",
    "static_cast", "struct", "switch", "template", "this", "thread_local", "throw", "true",
    "try", "typedef", "typeid", "typename", "union", "unsigned", "using", "virtual", "void",
    "volatile", "wchar_t", "while", "char8_t", "concept", "consteval", "constinit",
    "co_await", "co_return", "co_yield", "requires",
}

_SCALARS = ("bool", "char", "uchar", "short", "ushort", "int", "uint", "long", "ulong", "half",
            "float", "bfloat", "size_t", "ptrdiff_t")

#: Metal words: address spaces, function qualifiers, types, attributes, metal:: functions,
#: plus every macro name of the C++ shim (a symbol with such a name would be rewritten by the
#: preprocessor in the Linux verification build).
METAL_WORDS = {
    "device", "constant", "thread", "threadgroup", "threadgroup_imageblock", "ray_data",
    "object_data", "kernel", "vertex", "fragment", "visible", "intersection", "mesh", "object",
    "stage_in", "metal", "uint", "ushort", "uchar", "ulong", "half", "bfloat", "sampler",
    "texture", "buffer", "max_total_threads_per_threadgroup", "thread_position_in_grid",
    "thread_position_in_threadgroup", "thread_index_in_threadgroup",
    "threadgroup_position_in_grid", "threads_per_threadgroup", "threadgroups_per_grid",
    "threads_per_grid", "thread_index_in_simdgroup", "simdgroup_index_in_threadgroup",
    "threads_per_simdgroup", "simdgroups_per_threadgroup", "mem_flags", "threadgroup_barrier",
    "simdgroup_barrier", "simd_sum", "abs", "fabs", "exp", "exp2", "exp10", "log", "log2",
    "log10", "sin", "cos", "tan", "tanh", "sinh", "cosh", "asin", "acos", "atan", "atan2",
    "sqrt", "rsqrt", "pow", "powr", "sign", "min", "max", "fmin", "fmax", "clamp", "mix",
    "select", "step", "dot", "fma", "floor", "ceil", "round", "trunc", "fract", "saturate",
    "isnan", "isinf", "precise", "fast", "atomic_int", "atomic_uint", "atomic_float",
    "atomic_bool", "main", "NAN", "INFINITY", "MAXFLOAT", "gf_sign",
}
METAL_WORDS |= {f"{s}{n}" for s in _SCALARS for n in (2, 3, 4)}
METAL_WORDS |= {f"packed_{s}{n}" for s in _SCALARS for n in (2, 3, 4)}
METAL_WORDS |= {f"{s}{r}x{c}" for s in ("half", "float") for r in (2, 3, 4) for c in (2, 3, 4)}
METAL_WORDS |= set(_SCALARS)

RESERVED = CPP_KEYWORDS | METAL_WORDS


class MetalPrinter(CFamilyPrinter):
    """Prints IR expressions as MSL ``float`` code."""

    _default_settings = dict(CFamilyPrinter._default_settings, precision="float32",
                             literal_suffix="f", sign_function="gf_sign",
                             function_names={"fabs": "fabs", "log1p": "gf_log1p",
                                             "expm1": "gf_expm1"}, pow_function="pow")

    def __init__(self, names):
        super().__init__({"names": names, "precision": "float32", "literal_suffix": "f",
                          "sign_function": "gf_sign", "pow_function": "pow"})
