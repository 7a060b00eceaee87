"""The mark of the tests that need pycaffe: the ``caffe`` marker, under the name the test modules import.

``tests/conftest.py`` skips the tests it marks where pycaffe is not built (``make caffe``; always there in
CI), and a pycaffe that is present but broken makes them fail loudly instead of skipping them.
"""

import pytest

needs_caffe = pytest.mark.caffe
