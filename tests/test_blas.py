"""Tests of rankiqa/blas.py: the BLAS thread count of training, and setting it in a running process."""

from __future__ import annotations

import pytest

from rankiqa import blas
from tests.caffe_marks import needs_caffe


@pytest.fixture
def no_blas_variables(monkeypatch):
    for var in blas.VARIABLES:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_training_leaves_a_core_to_each_prefetch_worker_or_to_the_solvers_loading(no_blas_variables):
    monkeypatch = no_blas_variables
    monkeypatch.setattr(blas, "usable_cores", lambda: 16)
    assert [blas.training_threads(workers) for workers in (0, 1, 2, 15, 16, 40)] == [15, 15, 14, 1, 1, 1]
    assert blas.openblas_default() == 16
    monkeypatch.setattr(blas, "usable_cores", lambda: 2)
    assert [blas.training_threads(workers) for workers in (0, 1, 2)] == [1, 1, 1]
    assert blas.openblas_default() == 2
    monkeypatch.setattr(blas, "usable_cores", lambda: 1)
    assert blas.training_threads(0) == 1


def test_the_environment_wins_in_openblas_order(no_blas_variables):
    monkeypatch = no_blas_variables
    monkeypatch.setattr(blas, "usable_cores", lambda: 8)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert blas.requested_threads() == 3 and blas.training_threads(2) == 3 and blas.openblas_default() == 3
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "5")
    assert blas.training_threads(2) == 5
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "zero")  # not a count: the next variable
    assert blas.training_threads(2) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "0")
    assert blas.requested_threads() is None and blas.training_threads(2) == 6 and blas.openblas_default() == 8


def test_usable_cores_follow_the_affinity():
    import os

    if hasattr(os, "sched_getaffinity"):
        assert blas.usable_cores() == len(os.sched_getaffinity(0))
    assert blas.usable_cores() >= 1


@needs_caffe
def test_threads_set_changes_caffes_openblas_and_restores_it():
    from rankiqa.caffe_io import import_caffe

    import_caffe()
    before = blas.get_threads()
    assert before is not None  # this build links OpenBLAS, loaded with pycaffe
    with blas.threads_set(1) as env:
        assert blas.get_threads() == 1 and env == {"OPENBLAS_NUM_THREADS": "1"}
    assert blas.get_threads() == before
    with blas.threads_set(None) as env:
        assert env == {} and blas.get_threads() == before
    with pytest.raises(ValueError):
        blas.set_threads(0)
