"""setuptools glue: cffi builds specloop._native (the engine) from
native/build.py; specloop._core (the loop core, CPython C API) is an
ordinary extension built from native/py/."""

import os

from setuptools import Extension, setup

_CFLAGS = ["-std=gnu11", "-fno-strict-aliasing", "-Wall", "-Wextra",
           "-Wno-unused-parameter", "-Wno-missing-field-initializers",
           "-O0" if os.environ.get("SPECLOOP_DEBUG") else "-O2", "-g"]
_LDFLAGS = []
if os.environ.get("SPECLOOP_SANITIZE"):
    _SAN = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer",
            "-fno-sanitize-recover=undefined"]
    _CFLAGS += _SAN
    _LDFLAGS += _SAN

core = Extension(
    "specloop._core",
    sources=[f"native/py/{name}.c" for name in ("module", "loopcore", "pump", "transport")],
    include_dirs=["native", "native/py"],
    depends=["native/specloop.h", "native/py/pycore.h"],
    extra_compile_args=_CFLAGS,
    extra_link_args=_LDFLAGS,
)

setup(cffi_modules=["native/build.py:ffibuilder"], ext_modules=[core])
