"""Signed checkpoint manifests: HMAC-SHA256 with a shared secret, or Ed25519 with a key pair.

The manifest's digests catch accidents (truncation, bit flips); someone who can write the checkpoint
directory can rebuild them after altering the weights. With a key configured, the manifest also
carries a signature over its canonical bytes, made when it is written and checked when it is read; a
checkpoint whose manifest is unsigned, signed with another key, or altered after signing is refused
(and the loader falls back to the newest checkpoint that verifies).

The key comes from the environment, so every writer and reader of a job (the trainer, every rank,
``cosanneal verify``, the framework integrations) sees the same one:

* ``COSANNEAL_CHECKPOINT_KEY``: an HMAC-SHA256 secret (at least 32 characters; e.g. the output of
  ``openssl rand -hex 32`` in a secret store).
* ``COSANNEAL_CHECKPOINT_KEY_FILE``: a file holding an Ed25519 private key (PEM, PKCS#8: signs and
  verifies), an Ed25519 public key (PEM: verifies only; a writer with it is refused), or a raw HMAC
  secret (anything else, at least 32 bytes). Ed25519 needs ``cryptography``
  (``pip install 'cosanneal[sign]'``).

Setting both is an error. The signature sits in the manifest as::

    "signature": {"alg": "hmac-sha256" | "ed25519", "key_id": "<16 hex>", "value": "<hex>"}

over the UTF-8 JSON of the manifest without it (sorted keys, ``indent=2``, a trailing newline:
:func:`cosanneal.runtime.manifest.encode_manifest`). ``key_id`` is the first 16 hex digits of the
SHA-256 of the secret (HMAC) or of the raw public key (Ed25519); it names the key in messages
without revealing it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import hmac
import os
from collections.abc import Callable, Mapping
from typing import Any

from cosanneal.errors import ConfigError

__all__ = ["KEY_ENV", "KEY_FILE_ENV", "MIN_SECRET", "ManifestKey", "from_env", "signature_problem"]

KEY_ENV = "COSANNEAL_CHECKPOINT_KEY"
KEY_FILE_ENV = "COSANNEAL_CHECKPOINT_KEY_FILE"
MIN_SECRET = 32  # bytes of an HMAC secret (256 bits, the hash's own size)


@dataclasses.dataclass(frozen=True)
class ManifestKey:
    """A key that signs and/or verifies manifests.

    Attributes:
        alg: ``"hmac-sha256"`` or ``"ed25519"``.
        key_id: first 16 hex digits of the SHA-256 of the secret or public key.
        source: where the key came from (an environment variable's name, a file), for messages.
        sign_bytes: signs bytes (``None`` for a public key, which only verifies).
        verify_bytes: ``verify_bytes(data, signature)`` is true when ``signature`` is valid.

    Example:
        >>> key = ManifestKey.hmac(b"k" * 32, source="test")
        >>> sig = key.sign(b"manifest")
        >>> key.check(b"manifest", sig), key.check(b"manifest!", sig)
        (True, False)
    """

    alg: str
    key_id: str
    source: str
    sign_bytes: Callable[[bytes], bytes] | None
    verify_bytes: Callable[[bytes, bytes], bool]

    @classmethod
    def hmac(cls, secret: bytes, *, source: str) -> ManifestKey:
        """An HMAC-SHA256 key from ``secret`` (at least :data:`MIN_SECRET` bytes)."""
        if len(secret) < MIN_SECRET:
            raise ConfigError(
                f"{source}: an HMAC secret needs at least {MIN_SECRET} bytes, got {len(secret)}; "
                "use e.g. `openssl rand -hex 32`"
            )

        def sign(data: bytes) -> bytes:
            return hmac.new(secret, data, hashlib.sha256).digest()

        def check(data: bytes, signature: bytes) -> bool:
            return hmac.compare_digest(sign(data), signature)

        return cls("hmac-sha256", hashlib.sha256(secret).hexdigest()[:16], source, sign, check)

    def sign(self, data: bytes) -> dict[str, str]:
        """The manifest's ``signature`` entry for ``data``.

        Raises:
            ConfigError: the key is a public key, which cannot sign.
        """
        if self.sign_bytes is None:
            raise ConfigError(
                f"{self.source}: an Ed25519 public key only verifies checkpoints; to write them, "
                "point it at the private key"
            )
        return {"alg": self.alg, "key_id": self.key_id, "value": self.sign_bytes(data).hex()}

    def check(self, data: bytes, signature: Mapping[str, Any]) -> bool:
        """Whether ``signature`` (a manifest's ``signature`` entry) is this key's signature of ``data``."""
        value = signature.get("value")
        if signature.get("alg") != self.alg or not isinstance(value, str):
            return False
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            return False
        return self.verify_bytes(data, raw)


def _ed25519(pem: bytes, source: str) -> ManifestKey | None:
    """An Ed25519 key from a PEM private or public key; ``None`` when ``pem`` is not PEM."""
    if b"-----BEGIN" not in pem:
        return None
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:
        raise ConfigError(
            f"{source}: an Ed25519 key needs the cryptography package: pip install 'cosanneal[sign]'"
        ) from exc
    private: Any = None
    try:
        if b"PRIVATE KEY" in pem:
            private = serialization.load_pem_private_key(pem, password=None)
            public = private.public_key()
        else:
            public = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{source}: not a readable PEM key ({exc}); use an unencrypted PKCS#8 key") from exc
    if not isinstance(public, ed25519.Ed25519PublicKey):
        raise ConfigError(
            f"{source}: the PEM key is not an Ed25519 key; make one with `openssl genpkey -algorithm ed25519`"
        )
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    def check(data: bytes, signature: bytes) -> bool:
        try:
            public.verify(signature, data)
        except InvalidSignature:
            return False
        return True

    sign = None if private is None else private.sign
    return ManifestKey("ed25519", hashlib.sha256(raw).hexdigest()[:16], source, sign, check)


def from_env(environ: Mapping[str, str] | None = None) -> ManifestKey | None:
    """The key the environment configures (module docstring), or ``None``.

    Raises:
        ConfigError: both variables set, an unreadable key file, a secret too short, a PEM key that
            is not Ed25519.

    Example:
        >>> from_env({}) is None
        True
        >>> from_env({"COSANNEAL_CHECKPOINT_KEY": "s" * 40}).alg
        'hmac-sha256'
    """
    env = os.environ if environ is None else environ
    secret, path = env.get(KEY_ENV), env.get(KEY_FILE_ENV)
    if secret and path:
        raise ConfigError(f"set one of {KEY_ENV} and {KEY_FILE_ENV}, not both")
    if secret:
        return _hmac_of(secret)
    if not path:
        return None
    try:
        stat = os.stat(path)
        version: tuple[int, ...] = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
    except OSError:
        version = ()  # _from_file raises the readable error
    return _from_file(path, version)


@functools.lru_cache(maxsize=8)
def _hmac_of(secret: str) -> ManifestKey:
    """The HMAC key of ``secret``, built once (every manifest read and write asks for it)."""
    return ManifestKey.hmac(secret.encode("utf-8"), source=KEY_ENV)


@functools.lru_cache(maxsize=8)
def _from_file(path: str, version: tuple[int, ...]) -> ManifestKey | None:
    """The key in the file at ``path``, read once per ``version`` (inode, size, mtime): a rotated file is read anew."""
    source = f"{KEY_FILE_ENV}={path}"
    try:
        with open(path, "rb") as handle:
            content = handle.read()
    except OSError as exc:
        raise ConfigError(
            f"{source}: cannot read the key file ({exc.strerror}); fix the path or its permissions"
        ) from exc
    key = _ed25519(content, source)
    return key if key is not None else ManifestKey.hmac(content.strip(), source=source)


def signature_problem(manifest: Mapping[str, Any], unsigned: bytes, key: ManifestKey | None) -> str | None:
    """Why ``manifest`` (whose unsigned canonical bytes are ``unsigned``) is refused under ``key``; ``None``: fine.

    Without a key nothing is checked (a signature is kept but cannot be verified).

    Example:
        >>> key = ManifestKey.hmac(b"k" * 32, source="test")
        >>> signature_problem({}, b"{}", key)
        'MANIFEST.json is not signed, and a checkpoint key is set (test): refused'
        >>> signature_problem({"signature": key.sign(b"{}")}, b"{}", key) is None
        True
    """
    if key is None:
        return None
    signature = manifest.get("signature")
    if not isinstance(signature, Mapping):
        return f"MANIFEST.json is not signed, and a checkpoint key is set ({key.source}): refused"
    if signature.get("alg") != key.alg or signature.get("key_id") != key.key_id:
        return (
            f"MANIFEST.json is signed with another key ({signature.get('alg')!r} key "
            f"{signature.get('key_id')!r}; this job's key is {key.alg} {key.key_id}): refused"
        )
    if not key.check(unsigned, signature):
        return "MANIFEST.json's signature does not match its content (altered after signing): refused"
    return None
