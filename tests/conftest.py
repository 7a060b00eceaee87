"""Shared fixtures and the markers of the test suite (registered in ``pyproject.toml``).

Markers:
- ``caffe``: needs pycaffe (``make caffe``); skipped where it is not built. A pycaffe that is there but
  broken fails those tests loudly instead (``find_spec``, not a guarded import). Tests using the
  ``pycaffe`` fixture get it by themselves.
- ``infra``: tests of the build and infrastructure scripts (Caffe build, Docker replay, GPU bundle); every
  test under ``tests/infra/`` gets it.
- ``slow``: more than a few seconds each on 2 cores (training, Caffe nets, builds).

``make test`` runs them all; ``make test-fast`` (``pytest -m "not slow and not infra"``) is the quick loop.

The tiny IQA databases of ``tests/iqa_fixtures.py`` stay plain builders (a test makes several, with
options, under folders of its own); ``tests/small_fs.py`` is also a context manager for tests that mount
more than one file system or mount one part-way through.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from tests import small_fs as small_fs_module

INFRA_DIR = Path(__file__).resolve().parent / "infra"
HAVE_CAFFE = importlib.util.find_spec("caffe") is not None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the tests under ``tests/infra/`` ``infra`` and those using the ``pycaffe`` fixture ``caffe``;
    skip ``caffe`` tests where pycaffe is not built."""
    skip_caffe = pytest.mark.skip(reason="pycaffe is not built (make caffe)")
    for item in items:
        if INFRA_DIR in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.infra)
        if "pycaffe" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.caffe)
        if not HAVE_CAFFE and item.get_closest_marker("caffe") is not None:
            item.add_marker(skip_caffe)


@pytest.fixture
def pycaffe() -> Any:
    """pycaffe, imported quietly as the tools import it (``rankiqa.caffe_io.import_caffe``); the test is
    skipped where it is not built."""
    if not HAVE_CAFFE:
        pytest.skip("pycaffe is not built (make caffe)")
    from rankiqa.caffe_io import import_caffe

    return import_caffe()


@pytest.fixture
def write_image(tmp_path: Path) -> Callable[..., Path]:
    """``write_image(name, height=40, width=48, seed=0)``: a random BGR uint8 image written under
    ``tmp_path`` by its suffix's format (folders made); returns its path."""

    def write(name: str | Path, height: int = 40, width: int = 48, seed: int = 0) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        image = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        assert cv2.imwrite(str(path), image), path
        return path

    return write


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """``small_fs(size, name="fs")``: a tmpfs of ``size`` bytes mounted on ``tmp_path/<name>`` for the
    test (skipped where mounting is refused), unmounted after it; ``small_fs.remount(folder, "ro")``
    changes it (``tests/small_fs.py``)."""
    with contextlib.ExitStack() as stack:

        def mount(size: int, name: str = "fs") -> Path:
            return stack.enter_context(small_fs_module.small_fs(tmp_path / name, size))

        mount.remount = small_fs_module.remount  # type: ignore[attr-defined]
        yield mount
