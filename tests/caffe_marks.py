"""The skip mark of the tests that need pycaffe (built by `make caffe`; always there in CI).

``find_spec`` rather than a guarded import: a pycaffe that is present but broken makes those tests fail
loudly instead of skipping them.
"""

import importlib.util

import pytest

needs_caffe = pytest.mark.skipif(importlib.util.find_spec("caffe") is None,
                                 reason="pycaffe is not built (make caffe)")
