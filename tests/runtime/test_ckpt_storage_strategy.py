"""The commit strategies alone (runtime/ckpt_commit.py), on real files and a real S3-compatible server.

A reader must never see half a checkpoint: not while it is written (local: a temporary sibling renamed
into place; object stores: the manifest written last is the commit marker), and not while it is deleted
(local: renamed aside first; object stores: the marker removed first). Local kills are real SIGKILLs of
a child process; object-store failures are injected at the back end's calls.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from blobs import free_port as _free_port

from cosanneal.runtime.ckpt_commit import (
    TMP_PREFIX,
    TRASH_PREFIX,
    CommitStrategy,
    FileSource,
    LocalCommit,
    ObjectStoreCommit,
    open_strategy,
)
from cosanneal.runtime.manifest import MANIFEST_NAME, build_manifest, encode_manifest

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
FILES = {"a.bin": b"alpha" * 1000, "b.bin": b"beta" * 3000}


def step_of(name: str) -> int | None:
    return int(name[5:]) if name.startswith("step-") and name[5:].isdigit() else None


def write_checkpoint(store: CommitStrategy, name: str, files: dict[str, bytes] = FILES) -> str:
    """Stage ``files`` and commit them as ``name``, the way the manager does; return the final path."""
    final = store.join(name)
    staging = store.begin(final)
    digests = {n: store.write(f"{staging}/{n}", FileSource.of_bytes(data)) for n, data in files.items()}
    store.commit(staging, final, encode_manifest(build_manifest(step_of(name) or 0, digests)))
    return final


def run_child(directory: Path, body: str) -> subprocess.CompletedProcess[str]:
    """Run ``body`` in a fresh interpreter with ``store`` (a LocalCommit on ``directory``) defined."""
    script = textwrap.dedent(
        """
        import os, shutil, signal, sys
        from cosanneal.runtime import ckpt_commit, storage
        from cosanneal.runtime.ckpt_commit import FileSource, open_strategy
        from cosanneal.runtime.manifest import build_manifest, encode_manifest

        def die():
            os.kill(os.getpid(), signal.SIGKILL)

        store = open_strategy(sys.argv[1])
        """
    ) + textwrap.dedent(body)
    return subprocess.run(
        [sys.executable, "-c", script, str(directory)], capture_output=True, text=True, timeout=60, env=ENV
    )


# ---- local: temporary sibling + atomic rename ---------------------------------------------------------
def test_open_strategy_picks_one_strategy_per_back_end(tmp_path: Path) -> None:
    assert isinstance(open_strategy(tmp_path), LocalCommit)
    assert isinstance(open_strategy(f"file://{tmp_path}"), LocalCommit)
    assert open_strategy(f"file://{tmp_path}").root == str(tmp_path)


def test_local_commit_publishes_the_whole_checkpoint_at_once(tmp_path: Path) -> None:
    store = open_strategy(tmp_path / "ckpts")
    final = store.join("step-1")
    staging = store.begin(final)
    assert os.path.basename(staging).startswith(f"{TMP_PREFIX}step-1-")
    for name, data in FILES.items():
        store.write(f"{staging}/{name}", FileSource.of_bytes(data))
    # every file is written, the manifest not yet: nothing is visible under the checkpoint's name
    assert store.checkpoint_dirs(store.root, step_of) == {} and not os.path.exists(final)
    store.commit(staging, final, encode_manifest(build_manifest(1, {})))
    assert store.committed(store.root, step_of) == {1: final}
    assert sorted(os.listdir(store.root)) == ["step-1"]  # the staging directory became the checkpoint
    assert sorted(os.listdir(final)) == sorted([*FILES, MANIFEST_NAME])
    assert store.leftovers(store.root, step_of) == []


@pytest.mark.parametrize(
    ("where", "kill"),
    [
        (
            "mid-file",
            "store.write(f'{staging}/b.bin', FileSource(lambda h: (h.write(b'half'), h.flush(), die())))",
        ),
        (
            "before the rename",
            "ckpt_commit.fsync_dir = lambda path: die()\nstore.commit(staging, final, b'{}')",
        ),
    ],
)
def test_local_kill_mid_write_leaves_no_visible_checkpoint(tmp_path: Path, where: str, kill: str) -> None:
    child = run_child(
        tmp_path,
        f"""
        final = store.join("step-7")
        staging = store.begin(final)
        store.write(f"{{staging}}/a.bin", FileSource.of_bytes(b"alpha"))
        {kill.replace(chr(10), chr(10) + " " * 8)}
        print("not killed")
        """,
    )
    assert child.returncode == -signal.SIGKILL, (where, child.stdout, child.stderr)
    store = open_strategy(tmp_path)
    names = sorted(os.listdir(tmp_path))
    assert len(names) == 1 and names[0].startswith(f"{TMP_PREFIX}step-7-")  # hidden, never step-7
    assert store.checkpoint_dirs(store.root, step_of) == {} and store.committed(store.root, step_of) == {}
    leftovers = store.leftovers(store.root, step_of)
    assert leftovers == [f"{tmp_path}/{names[0]}"]
    store.remove(leftovers[0])
    assert os.listdir(tmp_path) == []


def test_local_recommit_replaces_the_older_version_or_keeps_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_strategy(tmp_path)
    final = write_checkpoint(store, "step-3", {"a.bin": b"old"})
    write_checkpoint(store, "step-3", {"a.bin": b"new"})
    assert Path(final, "a.bin").read_bytes() == b"new" and sorted(os.listdir(tmp_path)) == ["step-3"]
    # the rename into place fails: the previous version is put back, whole
    real_rename = os.rename

    def failing_rename(src: str, dst: str) -> None:
        if os.path.basename(src).startswith(TMP_PREFIX):
            raise OSError("rename refused")
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", failing_rename)
    with pytest.raises(OSError, match="rename refused"):
        write_checkpoint(store, "step-3", {"a.bin": b"newer"})
    assert Path(final, "a.bin").read_bytes() == b"new" and store.is_committed(final)
    assert [n for n in os.listdir(tmp_path) if n.startswith(TRASH_PREFIX)] == []


def test_local_kill_during_deletion_leaves_no_half_checkpoint(tmp_path: Path) -> None:
    child = run_child(
        tmp_path,
        """
        final = store.join("step-2")
        staging = store.begin(final)
        digests = {n: store.write(f"{staging}/{n}", FileSource.of_bytes(b"x" * 100)) for n in ("a", "b", "c")}
        store.commit(staging, final, encode_manifest(build_manifest(2, digests)))

        def dying_rmtree(path, ignore_errors=False):
            os.unlink(os.path.join(path, sorted(os.listdir(path))[0]))  # one file gone, the others there
            die()

        shutil.rmtree = dying_rmtree
        store.remove(final)
        print("not killed")
        """,
    )
    assert child.returncode == -signal.SIGKILL, child.stdout + child.stderr
    store = open_strategy(tmp_path)
    names = sorted(os.listdir(tmp_path))
    assert len(names) == 1 and names[0].startswith(f"{TRASH_PREFIX}step-2-")  # renamed aside first
    assert len(os.listdir(tmp_path / names[0])) == 3  # the half-deleted directory, hidden
    assert store.committed(store.root, step_of) == {}
    assert store.leftovers(store.root, step_of) == [f"{tmp_path}/{names[0]}"]


def test_local_copy_commits_whole_or_not_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_strategy(tmp_path)
    assert isinstance(store, LocalCommit)
    src = write_checkpoint(store, "step-4")
    names = [*FILES, MANIFEST_NAME]
    dst = store.join("best", "step-4")
    real_copy = store.storage.copy_file
    copied: list[str] = []

    def copy_then_fail(a: str, b: str) -> None:
        if copied:
            raise OSError("disk full")
        copied.append(b)
        real_copy(a, b)

    monkeypatch.setattr(store.storage, "copy_file", copy_then_fail)
    with pytest.raises(OSError, match="disk full"):
        store.copy(src, dst, names)
    assert os.listdir(store.join("best")) == []  # no half copy, and no leftover either
    monkeypatch.undo()
    store.copy(src, dst, names)
    assert store.committed(store.join("best"), step_of) == {4: dst}
    assert os.stat(f"{dst}/a.bin").st_ino == os.stat(f"{src}/a.bin").st_ino  # a hard link, not a copy
    assert store.read_verified(dst, 4).source("a.bin") == f"{dst}/a.bin"


def test_local_read_verified_reports_why(tmp_path: Path) -> None:
    store = open_strategy(tmp_path)
    final = write_checkpoint(store, "step-5")
    assert store.read_verified(final, 5).source("b.bin") == f"{final}/b.bin"  # read from disk later
    with pytest.raises(ValueError, match="manifest is for step 5, directory is step 6"):
        store.read_verified(final, 6)
    Path(final, "b.bin").write_bytes(b"beta" * 2999 + b"bets")
    with pytest.raises(ValueError, match=r"b\.bin fails its SHA-256 check"):
        store.read_verified(final, 5)


def test_local_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_strategy(tmp_path / "ckpts")
    assert store.display(store.join("step-1")) == str(tmp_path / "ckpts" / "step-1")
    assert store.resolve("step-1") == str(tmp_path / "ckpts" / "step-1")
    assert store.resolve(f"file://{tmp_path}/x") == f"{tmp_path}/x"
    (tmp_path / "rel").mkdir()
    monkeypatch.chdir(tmp_path)
    assert store.resolve("rel") == str(tmp_path / "rel")
    assert store.absent(str(tmp_path / "nothing")) and not store.absent(str(tmp_path / "rel"))


# ---- object store: the manifest written last is the commit marker -------------------------------------


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    """A real S3-compatible server (moto's server mode) on loopback, as in test_checkpoints_s3.py."""
    moto_server = pytest.importorskip("moto.server", reason="moto[server] is needed for the S3 tests")
    pytest.importorskip("s3fs", reason="s3fs is needed for the S3 tests")
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3(endpoint: str, request: pytest.FixtureRequest) -> tuple[Any, ObjectStoreCommit]:
    import s3fs

    options = {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"endpoint_url": endpoint, "region_name": "eu-west-1"},
    }
    fs = s3fs.S3FileSystem(**options)
    bucket = "strategy-" + request.node.name.replace("_", "-")[:40].lower().strip("-")
    fs.mkdir(bucket)
    store = open_strategy(f"s3://{bucket}/run/checkpoints", options)
    assert isinstance(store, ObjectStoreCommit)
    return fs, store


def _record(monkeypatch: pytest.MonkeyPatch, target: Any, method: str, log: list[str]) -> None:
    real = getattr(target, method)

    def recording(path: str, *args: Any) -> Any:
        log.append(path.rsplit("/", 1)[-1] if method != "copy_file" else args[0].rsplit("/", 1)[-1])
        return real(path, *args)

    monkeypatch.setattr(target, method, recording)


def test_object_store_writes_the_commit_marker_last(
    s3: tuple[Any, ObjectStoreCommit], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, store = s3
    written: list[str] = []
    _record(monkeypatch, store.storage, "write_file", written)
    final = write_checkpoint(store, "step-1")
    assert written == [*FILES, MANIFEST_NAME]  # straight into the final prefix, the marker last
    assert store.committed(store.root, step_of) == {1: final}
    assert store.display(final).startswith("s3://") and store.resolve(store.display(final)) == final
    copied: list[str] = []
    _record(monkeypatch, store.storage, "copy_file", copied)
    store.copy(final, store.join("best", "step-1"), [MANIFEST_NAME, *FILES])
    assert copied == [*FILES, MANIFEST_NAME]  # the copy commits last too, whatever order it was given
    assert store.committed(store.join("best"), step_of) == {1: store.join("best", "step-1")}


def test_object_store_listing_ignores_unmarked_prefixes(s3: tuple[Any, ObjectStoreCommit]) -> None:
    fs, store = s3
    write_checkpoint(store, "step-1")
    staging = store.begin(store.join("step-2"))  # a writer killed before its marker
    for name, data in FILES.items():
        store.write(f"{staging}/{name}", FileSource.of_bytes(data))
    write_checkpoint(store, "step-3", {})
    fs.pipe(store.join("best", "note.txt"), b"not a checkpoint")  # a prefix that is no checkpoint
    assert sorted(store.checkpoint_dirs(store.root, step_of)) == [1, 2, 3]
    assert sorted(store.committed(store.root, step_of)) == [1, 3]
    assert store.leftovers(store.root, step_of) == [store.join("step-2")]  # not best/
    with pytest.raises(ValueError, match=r"no MANIFEST\.json \(incomplete write\)"):
        store.read_verified(staging, 2)
    store.remove(staging)
    fs.invalidate_cache()
    assert not fs.exists(staging) and fs.exists(store.join("best", "note.txt"))


def test_object_store_rewrite_and_deletion_uncommit_first(
    s3: tuple[Any, ObjectStoreCommit], monkeypatch: pytest.MonkeyPatch
) -> None:
    fs, store = s3
    final = write_checkpoint(store, "step-4")
    # a deletion killed after the marker went: the files are still there, but nothing lists them
    removed: list[str] = []

    def dying_remove_tree(path: str) -> None:
        removed.append(path)
        raise KeyboardInterrupt  # stands in for a kill: nothing after this point runs

    monkeypatch.setattr(store.storage, "remove_tree", dying_remove_tree)
    with pytest.raises(KeyboardInterrupt):
        store.remove(final)
    fs.invalidate_cache()
    assert removed == [final] and sorted(fs.ls(final)) == sorted(f"{final}/{n}" for n in FILES)
    assert store.committed(store.root, step_of) == {} and store.leftovers(store.root, step_of) == [final]
    monkeypatch.undo()
    # re-writing a committed name removes its marker before any new file is written
    write_checkpoint(store, "step-4")
    with pytest.raises(KeyboardInterrupt):
        monkeypatch.setattr(store.storage, "remove_tree", dying_remove_tree)
        store.begin(final)
    assert not store.is_committed(final)


def test_object_store_read_verified_checks_in_memory(s3: tuple[Any, ObjectStoreCommit]) -> None:
    fs, store = s3
    final = write_checkpoint(store, "step-5")
    verified = store.read_verified(final, 5)
    assert verified.source("a.bin") == FILES["a.bin"]  # read once, hashed in memory
    fs.pipe(f"{final}/b.bin", b"beta" * 2999 + b"bets")
    with pytest.raises(ValueError, match=r"b\.bin fails its SHA-256 check"):
        store.read_verified(final, 5)
