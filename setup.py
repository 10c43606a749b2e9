"""setuptools glue: cffi builds specloop._native from native/build.py."""

from setuptools import setup

setup(cffi_modules=["native/build.py:ffibuilder"])
