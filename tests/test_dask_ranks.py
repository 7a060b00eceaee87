"""Tests of data_prep.dask_ranks: a Dask run over loopback writes the local generator's bytes, resumes,
refuses workers that cannot see the output folder, and names the image and the distortion of a failed
task."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from data_prep import dask_ranks, distortions, make_ranks, pristine
from data_prep.make_ranks import generate
from rankiqa.errors import InputError
from tests.test_make_ranks import REPO, crops, finished_distortions

TYPES = ["GN", "IN", "GB", "JPEG", "BW", "CQD"]  # random and deterministic types, fast ones
SEED = 7


@pytest.fixture(scope="module")
def source_dir(tmp_path_factory) -> Path:
    """Three small colour pristine images."""
    folder = tmp_path_factory.mktemp("pristine")
    for name, image in list(crops().items())[:3]:
        assert cv2.imwrite(str(folder / f"{name}.png"), np.ascontiguousarray(image))
    return folder


def larger_sources(folder: Path) -> Path:
    """Three 300x300 crops of an embedded photograph: larger images than the other tests', so that a run
    lasts past an interruption or a kill sent after its first images."""
    folder.mkdir()
    photo = cv2.imread(str(pristine.skimage_data_dir() / "astronaut.png"), cv2.IMREAD_COLOR)
    for k in range(3):
        crop = np.ascontiguousarray(photo[k * 100:k * 100 + 300, :300])
        assert cv2.imwrite(str(folder / f"p{k}.png"), crop)
    return folder


def hashes(folder: Path) -> dict[str, str]:
    """SHA-256 of every image, manifest and list under ``folder`` (relative path -> hex)."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix in (".png", ".csv", ".txt")}


@pytest.fixture(scope="module")
def local_run(source_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local") / "ranks"
    generate("tid2013", source_dir, out, seed=SEED, jobs=1, types=TYPES, min_size=64, progress=False)
    return out


@pytest.fixture(scope="module")
def threads_client():
    """A LocalCluster of two single-threaded workers inside this process, over loopback."""
    with dask_ranks.connect(dask_ranks.LOCAL, 2, processes=False) as client:
        yield client


def dask_generate(client, source_dir: Path, out: Path, **kwargs):
    return generate("tid2013", source_dir, out, seed=SEED, jobs=1, types=TYPES, min_size=64, progress=False,
                    run_tasks=dask_ranks.runner(client, wait_s=60), **kwargs)


@pytest.mark.parametrize("workers, processes", [(1, False), (2, True)])
def test_a_dask_run_writes_the_local_runs_bytes(source_dir, local_run, tmp_path, workers, processes):
    out = tmp_path / "ranks"
    with dask_ranks.connect(dask_ranks.LOCAL, workers, processes=processes) as client:
        assert len(client.scheduler_info()["workers"]) == workers
        result = dask_generate(client, source_dir, out)
    assert result.n_written == 3 * len(TYPES) * 4
    assert hashes(out) == hashes(local_run)
    assert len(hashes(out)) == 3 + 3 * len(TYPES) * 4 + 3  # pristine, distorted, manifest and two lists
    assert not (out / dask_ranks.TOKEN_FILE).exists()


def test_a_rerun_finishes_without_redoing_finished_images(source_dir, local_run, threads_client, tmp_path):
    out = tmp_path / "ranks"
    dask_generate(threads_client, source_dir, out)
    manifest = out / "manifest.csv"
    # An interrupted run: some images never written, one cut short during its write, no manifest yet.
    removed = [out / "GN/GN2/astro.png", out / "BW/BW4/flag.png", out / "CQD/CQD1/coffee.png"]
    for path in removed:
        path.unlink()
    partial = out / "GB/GB3/.astro.png.k3j9.tmp.png"
    partial.write_bytes(b"\x89PNG half an image")
    manifest.unlink()
    kept = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in finished_distortions(out)}

    result = dask_generate(threads_client, source_dir, out)
    assert result.n_written == len(removed)
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in kept} == kept, "finished images were redone"
    assert not partial.exists()
    assert hashes(out) == hashes(local_run)
    # Nothing left to do: nothing is submitted, nothing written.
    assert dask_generate(threads_client, source_dir, out).n_written == 0


def test_a_folder_made_with_other_libraries_gets_no_dask_images(source_dir, local_run, threads_client,
                                                                tmp_path):
    """The client checks the folder's recorded library versions as a local run does, before any task."""
    import json
    from importlib import metadata

    out = tmp_path / "ranks"
    shutil.copytree(local_run, out)
    record_path = out / make_ranks.SETTINGS_FILE
    record = json.loads(record_path.read_text())
    record["libraries"] = {**record["libraries"], "scipy": "0.1"}  # what a run with another SciPy records
    record_path.write_text(json.dumps(record))
    (out / "GN/GN2/astro.png").unlink()
    with pytest.raises(InputError, match=rf"scipy 0\.1 there, {metadata.version('scipy')} here") as err:
        dask_generate(threads_client, source_dir, out)
    assert err.value.path == str(out)
    assert not (out / "GN/GN2/astro.png").exists() and not (out / dask_ranks.TOKEN_FILE).exists()


@pytest.mark.slow
def test_the_client_killed_midway_then_the_same_command_finishes(tmp_path):
    source_dir = larger_sources(tmp_path / "pristine")  # small images: the run could end before Ctrl-C lands
    local_run = tmp_path / "local"
    generate("tid2013", source_dir, local_run, seed=SEED, jobs=1, types=TYPES, min_size=64, progress=False)
    out = tmp_path / "ranks"
    command = [sys.executable, "-m", "data_prep.dask_ranks", "--dask", "local", "--dask-workers", "1",
               "--rankset", "tid2013", "--pristine", str(source_dir), "--out", str(out), "--seed", str(SEED),
               "--jobs", "1", "--quiet", "--min-size", "64", "--types", ",".join(TYPES)]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    # Ctrl-C as at a terminal: a shell that starts a job in the background hands it SIGINT ignored, and
    # Python then installs no KeyboardInterrupt handler (this test run in such a job saw the run finish).
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if len(finished_distortions(out)) >= 5:
                break
            time.sleep(0.01)
        at_interrupt = len(finished_distortions(out))
        proc.send_signal(signal.SIGINT)  # Ctrl-C: the client cancels its tasks and closes its cluster
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, (at_interrupt, stderr)  # the run was interrupted, not finished
    assert "run the same command again to go on from what was finished" in stderr
    done = finished_distortions(out)
    assert 5 <= len(done) < 3 * len(TYPES) * 4 and not (out / "manifest.csv").exists()
    kept = {p: p.stat().st_ino for p in done}

    finished = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    assert f"{3 * len(TYPES) * 4 - len(done)} images written" in finished.stdout
    assert {p: p.stat().st_ino for p in kept} == kept
    assert hashes(out) == hashes(local_run)


@pytest.mark.slow
def test_a_worker_killed_midway_does_not_cost_the_run_its_bytes(tmp_path):
    """A worker process killed during the run: Dask gives its task to the other one; nothing is lost."""
    import threading

    sources = larger_sources(tmp_path / "pristine")
    local = tmp_path / "local"
    generate("tid2013", sources, local, seed=SEED, jobs=1, types=TYPES, min_size=64, progress=False)
    out = tmp_path / "ranks"
    outcome: dict = {}
    with dask_ranks.connect(dask_ranks.LOCAL, 2) as client:
        def run() -> None:
            try:
                outcome["result"] = dask_generate(client, sources, out)
            except BaseException as err:  # handed to the test's thread
                outcome["error"] = err

        thread = threading.Thread(target=run)
        thread.start()
        deadline = time.monotonic() + 180
        while len(finished_distortions(out)) < 5 and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        victim = sorted(client.run(os.getpid).values())[0]
        os.kill(victim, signal.SIGKILL)
        killed_at = len(finished_distortions(out))
        thread.join(timeout=300)
    assert killed_at < 3 * len(TYPES) * 4, "the run ended before a worker could be killed"
    assert "error" not in outcome, outcome.get("error")
    assert outcome["result"].n_written == 3 * len(TYPES) * 4
    assert not [p for p in out.rglob(".*") if ".tmp" in p.name]
    assert hashes(out) == hashes(local)


def test_workers_that_do_not_see_the_output_folder_are_refused(source_dir, threads_client, tmp_path,
                                                              monkeypatch):
    # The client's token lands where the workers do not look: as on a folder that is not shared.
    out = tmp_path / "ranks"
    real_write = dask_ranks.atomic_write_text
    monkeypatch.setattr(dask_ranks, "atomic_write_text",
                        lambda path, text: real_write(tmp_path / "client-only.token", text))
    with pytest.raises(InputError, match="2 of 2 Dask worker.*cannot see the output folder .cannot") as err:
        dask_generate(threads_client, source_dir, out)
    assert err.value.path == str(out.resolve())
    assert dask_ranks.TOKEN_FILE in str(err.value)
    assert not finished_distortions(out) and not (out / "manifest.csv").exists()


def test_a_worker_checks_the_folder_and_its_libraries_before_its_first_task(tmp_path):
    token_path = tmp_path / dask_ranks.TOKEN_FILE
    task = (str(tmp_path), "tid2013", 0, "astro", "GN", 1)
    ours = make_ranks.libraries()
    assert ours["generator"] == str(distortions.GENERATOR_VERSION) and "missing" not in ours.values()
    with pytest.raises(InputError, match="this Dask worker cannot see the output folder") as err:
        dask_ranks.distort_image(task, str(token_path), "abc", ours)
    assert err.value.path == str(tmp_path)
    token_path.write_text("def\n")
    problem = dask_ranks.worker_problem(str(token_path), "abc", ours)
    assert f"{token_path} holds another run's token" in problem
    token_path.write_text("abc\n")
    assert dask_ranks.worker_problem(str(token_path), "abc", ours) is None
    other = {**ours, "numpy": "1.0.0", "generator": "0"}
    version = distortions.GENERATOR_VERSION
    with pytest.raises(InputError, match=rf"other libraries .*generator {version} here, 0 on the client; "
                                         rf"numpy {ours['numpy']} here, 1.0.0 on the client"):
        dask_ranks.distort_image(task, str(token_path), "abc", other)


def test_a_worker_without_the_shared_folder_fails_the_run(source_dir, tmp_path):
    """A real worker process whose view of the output folder is an empty file system of its own."""
    if shutil.which("unshare") is None or subprocess.run(
            ["unshare", "--mount", "true"], capture_output=True).returncode != 0:
        pytest.skip("cannot make a mount namespace here (unshare --mount needs root)")
    out = tmp_path / "ranks"
    out.mkdir()
    with dask_ranks.connect(dask_ranks.LOCAL, 0) as client:
        worker = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c",
             'mount -t tmpfs none "$0" && exec "$1" -m distributed.cli.dask_worker "$2" --nthreads 1 '
             '--no-dashboard', str(out), sys.executable, client.scheduler.address],
            env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            client.wait_for_workers(1, timeout=120)
            with pytest.raises(InputError, match="1 of 1 Dask worker.*cannot read .*No such file") as err:
                dask_generate(client, source_dir, out)
        finally:
            worker.terminate()
            worker.wait(timeout=60)
    assert err.value.path == str(out.resolve())
    assert not finished_distortions(out)


def test_a_failed_task_names_the_image_and_the_distortion(source_dir, threads_client, tmp_path, monkeypatch):
    out = tmp_path / "ranks"
    real = distortions.distort

    def broken(image, rankset, dtype, level, seed):
        if dtype == "JPEG" and level == 3:
            raise ZeroDivisionError("a bug in JPEG")
        return real(image, rankset, dtype, level, seed)

    monkeypatch.setattr(distortions, "distort", broken)  # the workers are threads of this process
    with pytest.raises(dask_ranks.TaskFailed, match=r"image '\w+', JPEG level 3 .*: ZeroDivisionError: a bug "
                                                    "in JPEG") as err:
        dask_generate(threads_client, source_dir, out)
    assert isinstance(err.value.__cause__, ZeroDivisionError)
    assert not (out / "manifest.csv").exists()
    # The task that was running on the other worker thread when the error came finishes its image (its
    # atomic write renames or removes its temporary file): none is left once it has.
    deadline = time.monotonic() + 30
    while [p for p in out.rglob(".*") if ".tmp" in p.name] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in out.rglob(".*") if ".tmp" in p.name]
    # Bad input on a worker (a pristine image that cannot be read) stays an InputError: exit 2.
    monkeypatch.setattr(distortions, "distort", real)
    (out / "pristine/coffee.png").write_bytes(b"not a png")
    for path in out.glob("*/*/coffee.png"):
        path.unlink()
    with pytest.raises(InputError, match=r"image 'coffee', \w+ level \d .*cannot read the pristine image"):
        dask_generate(threads_client, source_dir, out)


def test_an_unreachable_scheduler_is_named(tmp_path):
    with pytest.raises(InputError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
        with dask_ranks.connect("tcp://127.0.0.1:9", 1, timeout_s=2):
            pass


@pytest.mark.slow
def test_cli_exit_code_and_summary(source_dir, local_run, tmp_path):
    out = tmp_path / "ranks"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    command = [sys.executable, "-m", "data_prep.dask_ranks", "--dask", "local"]
    ok = subprocess.run([*command, "--dask-workers", "2", "--pristine", str(source_dir), "--out", str(out),
                         "--seed", str(SEED), "--jobs", "1", "--min-size", "64", "--types", ",".join(TYPES),
                         "--quiet"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert f"{3 * len(TYPES) * 4} images written" in ok.stdout
    assert hashes(out) == hashes(local_run)
    bad = subprocess.run([*command, "--pristine", str(tmp_path / "none"), "--out", str(tmp_path / "x")],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "error:" in bad.stderr and str(tmp_path / "none") in bad.stderr



def test_a_result_lost_with_its_worker_is_waited_for_not_read_as_an_error(monkeypatch):
    """A task that ended on a worker killed before its result was read comes back as 'lost' (the scheduler
    computes it again): the run waits for it; it is not a failure whose exception would be None."""
    import distributed

    class Future:
        def __init__(self, size: int) -> None:
            self.status, self.size, self.added = "lost", size, 0

        def result(self) -> int:
            assert self.status == "finished"
            return self.size

        def release(self) -> None:
            pass

        def exception(self) -> None:  # a lost future holds no error
            return None

    class AsCompleted:  # yields each future when added; a lost one added again has been computed again
        def __init__(self) -> None:
            self.queue: list[Future] = []

        def add(self, future: Future) -> None:
            future.added += 1
            if future.added > 1:
                future.status = "finished"
            self.queue.append(future)

        def __iter__(self):
            while self.queue:
                yield self.queue.pop(0)

    class Client:
        def map(self, function, chunk, **options) -> list[Future]:
            return [Future(100 + k) for k, _ in enumerate(chunk)]

        def cancel(self, futures) -> None:
            pass

    monkeypatch.setattr(distributed, "as_completed", AsCompleted)
    tasks = [("/out", "tid2013", 0, "x", "GN", level) for level in (1, 2)]
    sizes = dask_ranks._collect(Client(), tasks, "token-file", "token", False, "tid2013")
    assert sizes == {tasks[0]: 100, tasks[1]: 101}
