"""The keys that sign certification bundles: made by ``sandcheck keygen``, read by
``certify --sign-key`` and ``verify-bundle --public-key``.

Two key types only, Ed25519 and ECDSA P-256: the ones in-toto, cosign and openssl verify
alike (RSA would add a padding to agree on). A key is named by its keyid, the SHA-256 of
its public key's DER SubjectPublicKeyInfo, so the buyer gets the same name from the
public key file alone (``openssl pkey -pubin -in NAME.pub -outform DER | sha256sum``).
An ECDSA signature is DER-encoded, as securesystemslib, cosign and ``openssl dgst`` write
and read it.

The private key stays its owner's: it is read from its file only, and a file group or
others may read is refused (a key others could have copied proves nothing); its
passphrase comes from SANDCHECK_KEY_PASSPHRASE or a terminal prompt, never from the
command line, where ``ps`` and shell history would show it. Errors name the file, never
its content.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import stat
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from sandcheck.errors import UserError

KEY_TYPES = ("ed25519", "ecdsa-p256")
PASSPHRASE_ENV = "SANDCHECK_KEY_PASSPHRASE"
Ask = Callable[[str], str]
"""A prompt that reads a secret without echoing it (getpass.getpass)."""


def _kind(key: object, path: Path) -> str:
    """``ed25519`` or ``ecdsa-p256``; any other key is a UserError naming what it is."""
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)):
        return "ed25519"
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        if isinstance(key.curve, ec.SECP256R1):
            return "ecdsa-p256"
        what = f"an ECDSA key on curve {key.curve.name}"
    elif isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        what = "an RSA key"
    else:
        what = f"a {type(key).__name__.removeprefix('_')}"
    raise UserError(f"{path} is {what}: sandcheck signs with Ed25519 or ECDSA P-256 only; "
                    "make a key with `sandcheck keygen NAME [--type ecdsa-p256]`")


@dataclass(frozen=True)
class PublicKey:
    """A verifying key and the file it came from."""

    key: ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey
    source: str
    kind: str

    @property
    def keyid(self) -> str:
        der = self.key.public_bytes(ser.Encoding.DER, ser.PublicFormat.SubjectPublicKeyInfo)
        return hashlib.sha256(der).hexdigest()

    def pem(self) -> bytes:
        return self.key.public_bytes(ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo)

    def verify(self, signature: bytes, data: bytes) -> bool:
        try:
            if self.kind == "ed25519":
                self.key.verify(signature, data)
            else:
                self.key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class SigningKey:
    """A private key, loaded; its repr names the file only."""

    key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey = field(repr=False)
    source: str
    kind: str

    @property
    def public(self) -> PublicKey:
        return PublicKey(self.key.public_key(), self.source, self.kind)

    @property
    def keyid(self) -> str:
        return self.public.keyid

    def sign(self, data: bytes) -> bytes:
        if self.kind == "ed25519":
            return self.key.sign(data)
        return self.key.sign(data, ec.ECDSA(hashes.SHA256()))  # DER, as openssl writes it


def passphrase(what: str, environ: Mapping[str, str] | None = None,
               ask: Ask | None = None, interactive: bool | None = None,
               confirm: bool = False) -> bytes | None:
    """The passphrase for ``what``: SANDCHECK_KEY_PASSPHRASE when it is set, else typed at
    a terminal prompt (twice with ``confirm``); None when neither can be had. Empty means
    no passphrase."""
    environ = os.environ if environ is None else environ
    if PASSPHRASE_ENV in environ:
        return environ[PASSPHRASE_ENV].encode()
    if not (sys.stdin.isatty() if interactive is None else interactive):
        return None
    ask = ask or getpass.getpass
    typed = ask(f"passphrase for {what}: ")
    if confirm and typed and ask(f"passphrase for {what} again: ") != typed:
        raise UserError(f"the two passphrases for {what} differ: nothing was written")
    return typed.encode()


def _read_pem(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file: give the {what} `sandcheck keygen NAME` "
                        "wrote") from None
    except (IsADirectoryError, PermissionError) as exc:
        raise UserError(f"{path} cannot be read ({exc.strerror}): give the {what} "
                        "file") from None
    return data


def load_signing_key(path: Path, ask_passphrase: Callable[[str], bytes | None] = passphrase
                     ) -> SigningKey:
    """The private key in ``path`` (PEM, PKCS#8 or the traditional formats, encrypted or
    not), refused when group or others may read it."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise UserError(f"{path}: no such file: give the private key `sandcheck keygen NAME` "
                        "wrote (NAME.key)") from None
    if stat.S_ISREG(mode) and mode & 0o077:
        raise UserError(f"{path} may be read by group or others (mode "
                        f"{stat.S_IMODE(mode):04o}): a signing key must be its owner's "
                        f"alone; run `chmod 600 {path}` (and make a new key if others may "
                        "have copied it)")
    data = _read_pem(path, "private key (NAME.key)")
    if b"PRIVATE KEY-----" not in data:
        if b"PUBLIC KEY-----" in data:
            raise UserError(f"{path} is a public key: --sign-key takes the private key "
                            "(NAME.key); NAME.pub is for `verify-bundle --public-key`")
        raise UserError(f"{path} is not a PEM private key: give the NAME.key `sandcheck "
                        "keygen NAME` wrote")
    try:
        try:
            key = ser.load_pem_private_key(data, None)
        except TypeError:  # encrypted
            secret = ask_passphrase(str(path))
            if secret is None:
                raise UserError(f"{path} is encrypted and no passphrase was given: set "
                                f"{PASSPHRASE_ENV} or run in a terminal to be asked") from None
            try:
                key = ser.load_pem_private_key(data, secret)
            except ValueError:
                raise UserError(f"{path}: wrong passphrase ({PASSPHRASE_ENV} or the one "
                                "typed): give the passphrase it was made with") from None
    except (ValueError, UnsupportedAlgorithm):
        raise UserError(f"{path} holds no private key sandcheck can read (a damaged PEM or "
                        "an unsupported format): give the NAME.key `sandcheck keygen` "
                        "wrote") from None
    return SigningKey(key, str(path), _kind(key, path))


def load_public_key(path: Path) -> PublicKey:
    """The public key in ``path`` (PEM SubjectPublicKeyInfo, as ``keygen`` writes NAME.pub)."""
    path = Path(path)
    data = _read_pem(path, "public key (NAME.pub)")
    if b"PRIVATE KEY-----" in data:
        raise UserError(f"{path} is a private key: --public-key takes the public one "
                        "(NAME.pub); keep the private key to its owner")
    try:
        key = ser.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise UserError(f"{path} is not a PEM public key: give the NAME.pub `sandcheck "
                        "keygen NAME` wrote") from None
    return PublicKey(key, str(path), _kind(key, path))


def generate(kind: str) -> ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey:
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if kind == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    raise UserError(f"unknown key type {kind!r}: choose one of {', '.join(KEY_TYPES)}")


def _exists(path: Path) -> UserError:
    return UserError(f"{path} exists: keygen never overwrites a key; choose another NAME or "
                     "move the old one away")


def _create(path: Path, data: bytes, mode: int) -> None:
    """Write a new file that has ``mode`` from its first byte on (no window in which a
    looser umask's mode lets another user open it); an existing file is never replaced."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise _exists(path) from None
    except OSError as exc:
        raise UserError(f"{path} cannot be created ({exc.strerror})") from None
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_keypair(name: str | Path, kind: str, secret: bytes | None) -> SigningKey:
    """NAME.key (mode 0600, encrypted with ``secret`` unless it is empty or None) and
    NAME.pub; refuses when either exists, and leaves neither behind on error."""
    key_path, pub_path = Path(f"{name}.key"), Path(f"{name}.pub")
    for path in (key_path, pub_path):
        if path.exists() or path.is_symlink():
            raise _exists(path)
    private = generate(kind)
    encryption = ser.BestAvailableEncryption(secret) if secret else ser.NoEncryption()
    _create(key_path, private.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8,
                                            encryption), 0o600)
    made = SigningKey(private, str(key_path), kind)
    try:
        _create(pub_path, made.public.pem(), 0o644)
    except BaseException:
        key_path.unlink()
        raise
    return made
