"""Signed manifests: a checkpoint whose weights were altered and whose digests were rebuilt is refused.

The attack the digests alone cannot catch: change a weight in ``model.safetensors``, recompute its
SHA-256 and size in ``MANIFEST.json``. Without a key such a checkpoint loads (the digests match);
with ``COSANNEAL_CHECKPOINT_KEY`` (HMAC-SHA256) or ``COSANNEAL_CHECKPOINT_KEY_FILE`` (Ed25519) set,
it is refused with a one-line reason and the loader falls back to the newest checkpoint that
verifies. Real files, real keys (``cryptography`` for Ed25519), a real trainer run for the CLI.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from cosanneal.errors import ConfigError
from cosanneal.runtime import signing
from cosanneal.runtime.checkpoints import CheckpointError, Checkpoints
from cosanneal.runtime.manifest import MANIFEST_NAME

SECRET = "0123456789abcdef" * 4  # 64 characters
OTHER = "fedcba9876543210" * 4


def _model(fill: float) -> torch.nn.Linear:
    model = torch.nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.fill_(fill)
        model.bias.zero_()
    return model


def _save(directory: Path, steps: list[int]) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    ck = Checkpoints(
        directory, keep_last=5, best=None, on_event=lambda kind, **p: events.append({"kind": kind, **p})
    )
    for step in steps:
        ck.save(step, model=_model(float(step)))
    ck.close()
    return events


def _load(directory: Path) -> tuple[Any, torch.nn.Linear, list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    model = _model(-1.0)
    loaded = Checkpoints(directory, keep_last=5, best=None).load_latest(
        model, on_event=lambda kind, **p: events.append({"kind": kind, **p})
    )
    return loaded, model, events


def _tamper(step_dir: Path) -> None:
    """Set every weight to 1000 in the safetensors file, then rebuild its digest and size in the manifest."""
    path = step_dir / "model.safetensors"
    raw = bytearray(path.read_bytes())
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    begin, end = header["weight"]["data_offsets"]
    raw[8 + n + begin : 8 + n + end] = struct.pack("<6f", *([1000.0] * 6))
    path.write_bytes(bytes(raw))
    manifest = json.loads((step_dir / MANIFEST_NAME).read_text())
    manifest["files"]["model.safetensors"] = {"sha256": hashlib.sha256(raw).hexdigest(), "size": len(raw)}
    (step_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def _weight(model: torch.nn.Linear) -> float:
    return float(model.weight.detach()[0, 0])


def test_without_a_key_rebuilt_digests_fool_the_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the threat model: digests catch accidents only
    monkeypatch.delenv(signing.KEY_ENV, raising=False)
    monkeypatch.delenv(signing.KEY_FILE_ENV, raising=False)
    _save(tmp_path, [1, 2])
    _tamper(tmp_path / "step-000000002")
    loaded, model, _ = _load(tmp_path)
    assert loaded.step == 2 and _weight(model) == 1000.0


def test_hmac_signed_save_loads_and_a_tampered_one_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(signing.KEY_ENV, SECRET)
    saved = _save(tmp_path, [1, 2])
    key_id = hashlib.sha256(SECRET.encode()).hexdigest()[:16]
    assert [e["signed"] for e in saved if e["kind"] == "checkpoint_saved"] == [
        {"alg": "hmac-sha256", "key_id": key_id}
    ] * 2
    manifest = json.loads((tmp_path / "step-000000002" / MANIFEST_NAME).read_text())
    assert manifest["signature"]["alg"] == "hmac-sha256" and manifest["signature"]["key_id"] == key_id

    loaded, model, events = _load(tmp_path)
    assert loaded.step == 2 and _weight(model) == 2.0
    assert events[-1]["kind"] == "checkpoint_loaded" and events[-1]["signed"]["key_id"] == key_id

    _tamper(tmp_path / "step-000000002")
    with pytest.warns(RuntimeWarning, match="altered after signing"):
        loaded, model, events = _load(tmp_path)
    assert loaded.step == 1 and _weight(model) == 1.0  # fell back to the newest checkpoint that verifies
    skipped = [e for e in events if e["kind"] == "checkpoint_skipped_corrupt"]
    assert len(skipped) == 1 and skipped[0]["step"] == 2
    assert (
        skipped[0]["reason"]
        == "MANIFEST.json's signature does not match its content (altered after signing): refused"
    )


def test_an_unsigned_or_foreign_checkpoint_is_refused_when_a_key_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(signing.KEY_ENV, raising=False)
    _save(tmp_path / "unsigned", [1])
    monkeypatch.setenv(signing.KEY_ENV, OTHER)
    _save(tmp_path / "foreign", [1])
    monkeypatch.setenv(signing.KEY_ENV, SECRET)
    for name, reason in [
        ("unsigned", "is not signed, and a checkpoint key is set"),
        ("foreign", "is signed with another key"),
    ]:
        with pytest.warns(RuntimeWarning, match=reason), pytest.raises(CheckpointError, match=reason):
            _load(tmp_path / name)  # the only checkpoint is refused: nothing to fall back to


def _ed25519_files(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    private = ed25519.Ed25519PrivateKey.generate()
    priv = tmp_path / "ckpt-key.pem"
    pub = tmp_path / "ckpt-key.pub.pem"
    priv.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    pub.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return priv, pub


def test_ed25519_private_key_signs_public_key_verifies_and_refuses_tampering(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("cryptography")
    priv, pub = _ed25519_files(tmp_path)
    monkeypatch.delenv(signing.KEY_ENV, raising=False)
    monkeypatch.setenv(signing.KEY_FILE_ENV, str(priv))
    _save(tmp_path / "ck", [1, 2])
    assert (
        json.loads((tmp_path / "ck" / "step-000000002" / MANIFEST_NAME).read_text())["signature"]["alg"]
        == "ed25519"
    )

    monkeypatch.setenv(signing.KEY_FILE_ENV, str(pub))  # a serving host holds only the public key
    loaded, model, _ = _load(tmp_path / "ck")
    assert loaded.step == 2 and _weight(model) == 2.0
    _tamper(tmp_path / "ck" / "step-000000002")
    with pytest.warns(RuntimeWarning, match="altered after signing"):
        loaded, model, _ = _load(tmp_path / "ck")
    assert loaded.step == 1

    ck = Checkpoints(tmp_path / "ck2", keep_last=2, best=None)  # a writer with the public key only
    with pytest.raises(Exception, match="public key only verifies"):
        ck.save(1, model=_model(1.0))
    assert not (tmp_path / "ck2" / "step-000000001").exists()


def test_a_flipped_signature_byte_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(signing.KEY_ENV, SECRET)
    _save(tmp_path, [1])
    path = tmp_path / "step-000000001" / MANIFEST_NAME
    manifest = json.loads(path.read_text())
    value = manifest["signature"]["value"]
    manifest["signature"]["value"] = ("0" if value[0] != "0" else "1") + value[1:]
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    with (
        pytest.warns(RuntimeWarning, match="altered after signing"),
        pytest.raises(CheckpointError, match="altered"),
    ):
        _load(tmp_path)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {signing.KEY_ENV: "short"},
            "COSANNEAL_CHECKPOINT_KEY: an HMAC secret needs at least 32 bytes, got 5",
        ),
        (
            {signing.KEY_ENV: SECRET, signing.KEY_FILE_ENV: "/x"},
            "set one of COSANNEAL_CHECKPOINT_KEY and COSANNEAL_CHECKPOINT_KEY_FILE",
        ),
        ({signing.KEY_FILE_ENV: "/no/such/key"}, "cannot read the key file"),
    ],
)
def test_unusable_keys_are_one_line_config_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")) as info:
        signing.from_env(env)
    assert "\n" not in str(info.value)


def test_a_pem_key_that_is_not_ed25519_is_refused(tmp_path: Path) -> None:
    pytest.importorskip("cryptography")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (tmp_path / "ec.pem").write_bytes(pem)
    with pytest.raises(ConfigError, match="not an Ed25519 key"):
        signing.from_env({signing.KEY_FILE_ENV: str(tmp_path / "ec.pem")})
    (tmp_path / "raw.key").write_bytes(os.urandom(48))  # not PEM: an HMAC secret
    assert signing.from_env({signing.KEY_FILE_ENV: str(tmp_path / "raw.key")}).alg == "hmac-sha256"  # type: ignore[union-attr]


def test_the_trainer_with_a_bad_key_exits_2_in_one_line(tmp_path: Path) -> None:
    env = {**os.environ, signing.KEY_ENV: "too-short"}
    proc = subprocess.run(
        [sys.executable, "-m", "cosanneal", "demo", "--example", "digits", "--no-interrupt", "--no-progress",
         "--run-dir", "run"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].lower().startswith("error: ")
    assert lines[0].endswith(
        "COSANNEAL_CHECKPOINT_KEY: an HMAC secret needs at least 32 bytes, got 9; use e.g. `openssl rand -hex 32`"
    )
    assert not (tmp_path / "run").exists()  # nothing written


def test_a_key_file_is_read_once_and_read_again_when_it_is_rotated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every manifest read and write asks for the key: the file is read once, until it changes."""
    key_file = tmp_path / "checkpoint.key"
    key_file.write_text(SECRET)
    monkeypatch.setenv(signing.KEY_FILE_ENV, str(key_file))
    monkeypatch.delenv(signing.KEY_ENV, raising=False)
    reads: list[str] = []
    real_open = open

    def counting_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        if os.fspath(file) == str(key_file):
            reads.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", counting_open)
    ckpts = Checkpoints(tmp_path / "ckpts", keep_last=2)
    for step in (1, 2, 3):
        ckpts.save(step, model=_model(float(step)))
    first = signing.from_env()
    assert ckpts.load_latest(_model(0.0)).step == 3
    assert len(reads) == 1
    key_file.write_text(OTHER + "rotated")  # another size: another version of the file
    rotated = signing.from_env()
    assert len(reads) == 2
    assert first is not None and rotated is not None and rotated.key_id != first.key_id
