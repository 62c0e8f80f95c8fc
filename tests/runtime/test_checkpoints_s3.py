"""Checkpoints on object storage: a real S3-compatible server (moto's server mode) on loopback, via s3fs."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from blobs import free_port as _free_port

from cosanneal.runtime.checkpoints import CheckpointError, Checkpoints

moto_server = pytest.importorskip("moto.server", reason="moto[server] is needed for the S3 tests")
s3fs = pytest.importorskip("s3fs", reason="s3fs is needed for the S3 tests")


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3(endpoint: str, request: pytest.FixtureRequest) -> tuple[Any, str, dict[str, Any]]:
    options = {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"endpoint_url": endpoint, "region_name": "eu-west-1"},
    }
    fs = s3fs.S3FileSystem(**options)
    bucket = "ckpt-" + request.node.name.replace("_", "-")[:40].lower()
    fs.mkdir(bucket)
    return fs, f"s3://{bucket}/run/checkpoints", options


def _model(value: float) -> torch.nn.Module:
    model = torch.nn.Linear(8, 4)
    with torch.no_grad():
        model.weight.fill_(value)
        model.bias.fill_(value)
    return model


def test_save_rotate_best_load_on_s3(s3: tuple[Any, str, dict[str, Any]]) -> None:
    fs, url, options = s3
    ck = Checkpoints(url, keep_last=2, storage_options=options)
    opt_model = _model(0.0)
    opt = torch.optim.SGD(opt_model.parameters(), lr=0.1, momentum=0.9)
    opt_model(torch.ones(1, 8)).sum().backward()
    opt.step()
    for step, loss in enumerate([0.5, 0.2, 0.6, 0.7]):
        ck.save(step, model=_model(float(step)), optimizer=opt, metrics={"val_loss": loss}, epoch=step)
    root = url.removeprefix("s3://")
    fs.invalidate_cache()
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls(root)) == ["best", "step-000000002", "step-000000003"]
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls(f"{root}/step-000000003")) == [
        "MANIFEST.json",
        "model.safetensors",
        "optimizer.pt",
        "state.json",
    ]
    assert [c.step for c in ck.list()] == [2, 3]
    assert ck.best is not None and ck.best.step == 1 and ck.best.path == f"{url}/best/step-000000001"
    fresh = _model(-1.0)
    opt2 = torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)
    loaded = Checkpoints(url, storage_options=options).load_latest(fresh, opt2)
    assert loaded is not None and loaded.step == 3 and loaded.epoch == 3
    assert torch.all(fresh.weight == 3.0)
    assert torch.equal(
        opt2.state[fresh.weight]["momentum_buffer"], opt.state[opt_model.weight]["momentum_buffer"]
    )
    best = Checkpoints(url, storage_options=options).load(ck.best, fresh)
    assert best.step == 1 and torch.all(fresh.weight == 1.0)


def test_corrupt_and_uncommitted_prefixes_fall_back_on_s3(s3: tuple[Any, str, dict[str, Any]]) -> None:
    fs, url, options = s3
    ck = Checkpoints(url, keep_last=3, best=None, storage_options=options)
    for step in range(3):
        ck.save(step, model=_model(float(step)))
    root = url.removeprefix("s3://")
    # step 2: flip a byte in the weights; step 5: a write killed before its manifest (the commit marker)
    blob = bytearray(fs.cat(f"{root}/step-000000002/model.safetensors"))
    blob[-1] ^= 0xFF
    fs.pipe(f"{root}/step-000000002/model.safetensors", bytes(blob))
    fs.pipe(f"{root}/step-000000005/model.safetensors", b"partial")
    events: list[tuple[str, dict[str, Any]]] = []
    fresh = _model(-1.0)
    with pytest.warns(RuntimeWarning) as record:
        loaded = Checkpoints(url, storage_options=options).load_latest(
            fresh, on_event=lambda kind, **p: events.append((kind, p))
        )
    assert loaded is not None and loaded.step == 1 and torch.all(fresh.weight == 1.0)
    assert [s.reason for s in loaded.skipped] == [
        "no MANIFEST.json (incomplete write)",
        "model.safetensors fails its SHA-256 check (corrupt or modified)",
    ]
    assert len(record) == 2
    assert [k for k, _ in events] == [
        "checkpoint_skipped_corrupt",
        "checkpoint_skipped_corrupt",
        "checkpoint_loaded",
    ]
    # the uncommitted prefix is not listed, and the next writer removes it
    writer = Checkpoints(url, keep_last=3, best=None, storage_options=options)
    assert [c.step for c in writer.list()] == [0, 1, 2]
    writer.save(3, model=_model(3.0))
    fs.invalidate_cache()
    assert not fs.exists(f"{root}/step-000000005")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert writer.load_latest(fresh) is not None and torch.all(fresh.weight == 3.0)


def test_missing_bucket_reads_as_empty_and_fails_to_write_clearly(
    s3: tuple[Any, str, dict[str, Any]],
) -> None:
    _, url, options = s3
    ck = Checkpoints(url.replace("ckpt-", "missing-bucket-"), best=None, storage_options=options)
    assert ck.load_latest(_model(0.0)) is None  # no such bucket: nothing was saved there
    with pytest.raises(
        CheckpointError, match="could not write checkpoint step-000000000 to s3://missing-bucket-"
    ):
        ck.save(0, model=_model(1.0))
