# Everything else is in pyproject.toml; setup.py only hooks the cffi build in.
from setuptools import setup

setup(cffi_modules=["csrc/build_core.py:ffibuilder"])
