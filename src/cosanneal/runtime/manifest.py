"""The checkpoint manifest: SHA-256 and size of every file, written last as the commit marker.

``MANIFEST.json`` looks like::

    {"format": 1, "step": 1200,
     "files": {"model.safetensors": {"sha256": "…", "size": 4096}, "state.json": {…}, …}}

A checkpoint counts as committed only when its manifest exists, parses, and every file it lists has
exactly the recorded size and digest. This detects truncation, bit flips, missing files and files
swapped in without rebuilding the manifest. Alone it is an integrity check, not a signature (someone
who can write the directory can rewrite the manifest too, which is why loading never unpickles code);
with a checkpoint key configured (:mod:`cosanneal.runtime.signing`) the manifest is also signed when
written (:func:`seal`) and its signature is checked whenever it is read (:func:`read_manifest`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from cosanneal.runtime import signing
from cosanneal.runtime.storage import Storage, sha256_stream

MANIFEST_NAME = "MANIFEST.json"
MANIFEST_FORMAT = 1


def build_manifest(step: int, digests: Mapping[str, tuple[str, int]]) -> dict[str, Any]:
    """The manifest for ``step`` from ``{name: (sha256, size)}``.

    Example:
        >>> build_manifest(3, {"a.bin": ("00ff", 2)})
        {'format': 1, 'step': 3, 'files': {'a.bin': {'sha256': '00ff', 'size': 2}}}
    """
    files = {name: {"sha256": sha, "size": size} for name, (sha, size) in sorted(digests.items())}
    return {"format": MANIFEST_FORMAT, "step": step, "files": files}


def encode_manifest(manifest: Mapping[str, Any]) -> bytes:
    """The manifest as UTF-8 JSON bytes (sorted keys, trailing newline)."""
    return (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode("utf-8")


def seal(manifest: Mapping[str, Any], key: signing.ManifestKey | None = None) -> bytes:
    """The manifest's bytes to write: :func:`encode_manifest`, signed when a key is configured.

    ``key`` defaults to the environment's (:func:`cosanneal.runtime.signing.from_env`); the signature
    is over the encoding of the manifest without it.

    Example:
        >>> key = signing.ManifestKey.hmac(b"k" * 32, source="test")
        >>> import json
        >>> sorted(json.loads(seal(build_manifest(1, {}), key))["signature"])
        ['alg', 'key_id', 'value']
    """
    key = signing.from_env() if key is None else key
    unsigned = {k: v for k, v in manifest.items() if k != "signature"}
    if key is None:
        return encode_manifest(unsigned)
    return encode_manifest({**unsigned, "signature": key.sign(encode_manifest(unsigned))})


def signer() -> dict[str, str] | None:
    """``{"alg", "key_id"}`` of the configured key (for audit events), or ``None`` without one."""
    key = signing.from_env()
    return None if key is None else {"alg": key.alg, "key_id": key.key_id}


def signed_payload() -> dict[str, Any]:
    """``{"signed": {"alg", "key_id"}}`` for the audit events when manifests are signed, else ``{}``."""
    key = signer()
    return {} if key is None else {"signed": key}


def read_manifest(storage: Storage, directory: str) -> dict[str, Any]:
    """Parse ``directory``'s manifest and, with a checkpoint key configured, check its signature.

    Raises:
        ValueError: the manifest is missing, unreadable or malformed, or (with a key) unsigned,
            signed with another key, or altered after signing.
        ConfigError: the configured key itself is unusable (:func:`cosanneal.runtime.signing.from_env`).
    """
    path = f"{directory}/{MANIFEST_NAME}"
    try:
        with storage.open_read(path) as handle:
            data = json.loads(handle.read().decode("utf-8"))
    except FileNotFoundError as exc:
        raise ValueError("no MANIFEST.json (incomplete write)") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"unreadable MANIFEST.json: {exc}") from exc
    if (
        not isinstance(data, dict)
        or data.get("format") != MANIFEST_FORMAT
        or not isinstance(data.get("files"), dict)
    ):
        raise ValueError(
            f"malformed MANIFEST.json (format {data.get('format') if isinstance(data, dict) else None!r})"
        )
    for name, entry in data["files"].items():
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("sha256"), str)
            or not isinstance(entry.get("size"), int)
            or "/" in name
            or name in ("", ".", "..", MANIFEST_NAME)
        ):
            raise ValueError(f"malformed MANIFEST.json entry {name!r}")
    unsigned = encode_manifest({k: v for k, v in data.items() if k != "signature"})
    problem = signing.signature_problem(data, unsigned, signing.from_env())
    if problem is not None:
        raise ValueError(problem)
    return data


def verify(storage: Storage, directory: str, step: int | None = None) -> str | None:
    """Check ``directory`` against its manifest; ``None`` when it verifies, else the reason.

    Sizes are compared first (cheap, catches truncation), then every file is hashed.
    """
    try:
        manifest = read_manifest(storage, directory)
    except ValueError as exc:
        return str(exc)
    if step is not None and manifest.get("step") != step:
        return f"manifest is for step {manifest.get('step')!r}, directory is step {step}"
    present = storage.files(directory)
    expected: dict[str, Any] = manifest["files"]
    for name, entry in expected.items():
        if name not in present:
            return f"{name} is missing"
        if present[name] != entry["size"]:
            return f"{name} has {present[name]} bytes, manifest says {entry['size']}"
    for name, entry in expected.items():
        with storage.open_read(f"{directory}/{name}") as handle:
            sha, size = sha256_stream(handle)
        if size != entry["size"] or sha != entry["sha256"]:
            return f"{name} fails its SHA-256 check (corrupt or modified)"
    return None


def check_bytes(manifest: Mapping[str, Any], data: Mapping[str, bytes]) -> str | None:
    """Like :func:`verify` for files already read into memory (``{name: content}``)."""
    import hashlib

    for name, entry in manifest["files"].items():
        if name not in data:
            return f"{name} is missing"
        content = data[name]
        if len(content) != entry["size"]:
            return f"{name} has {len(content)} bytes, manifest says {entry['size']}"
        if hashlib.sha256(content).hexdigest() != entry["sha256"]:
            return f"{name} fails its SHA-256 check (corrupt or modified)"
    return None
