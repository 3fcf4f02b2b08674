"""Signed certification bundles: ``sandcheck keygen``, ``certify --sign-key``,
``verify-bundle --public-key``, ``merge-bundles --sign-key``.

Pure tests over bundles made from made-up results (helpers.shard), signed the way certify
signs them (certify.finish). The signed bundle verifies with sandcheck, with the in-toto
library, with a DSSE verifier written from the spec here and with openssl (the README's
commands, run as written); each way of tampering with it fails with its own line.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from helpers import shard

from sandcheck.catalog import Catalog
from sandcheck.cli import certify
from sandcheck.cli.main import main
from sandcheck.errors import UserError
from sandcheck.reports.attestation import PAYLOAD_TYPE, PREDICATE_TYPE, sign_bundle
from sandcheck.reports.bundle import (
    ATTESTATION,
    CERTIFICATION,
    finish_bundle,
    stamp_run,
    verify_bundle,
    write_manifest,
)
from sandcheck.reports.results import Results
from sandcheck.reports.signing import (
    PASSPHRASE_ENV,
    SigningKey,
    load_public_key,
    load_signing_key,
    passphrase,
    write_keypair,
)

ROOT = Path(__file__).resolve().parent.parent
STARTED = "2026-11-03T10:00:00Z"
CATALOG = Catalog.load().digest()


def keypair(where: Path, name: str = "vendor", kind: str = "ed25519") -> SigningKey:
    return write_keypair(where / name, kind, None)


def signed_bundle(path: Path, key: SigningKey, nodes=("n1", "n2"), uid="uid-1",
                  selector="pool=a") -> Path:
    """A bundle whose last node fails its runc and runsc cells, signed by ``key``."""
    shard(path, list(nodes), selector, uid=uid, failing=nodes[-1])
    assert certify.finish(path, 0, STARTED, CATALOG, key) == 1  # the verdict is fail
    return path


@pytest.fixture(params=["ed25519", "ecdsa-p256"])
def key(request, tmp_path) -> SigningKey:
    return keypair(tmp_path, kind=request.param)


@pytest.fixture
def bundle(tmp_path, key) -> Path:
    return signed_bundle(tmp_path / "cert", key)


def verify_signed(bundle: Path, pub: Path | str, capsys) -> tuple[int, list[str]]:
    capsys.readouterr()  # what came before
    code = main(["verify-bundle", str(bundle), "--public-key", str(pub)])
    return code, capsys.readouterr().out.splitlines()


def envelope(bundle: Path) -> dict:
    return json.loads((bundle / ATTESTATION).read_text())


def statement(bundle: Path) -> dict:
    return json.loads(base64.b64decode(envelope(bundle)["payload"]))


# -- the signed bundle -----------------------------------------------------------------------


def test_certify_signs_the_bundle_and_it_verifies(bundle, key, capsys):
    code, out = verify_signed(bundle, f"{key.source[:-4]}.pub", capsys)
    assert code == 0, out
    assert out[0] == f"sandcheck: signature good: signed by key {key.keyid} ({key.kind})"
    assert out[1] == ("sandcheck: certified: fail for runtime classes runc, runsc on 2 "
                      "node(s) (n1, n2): 2 fail, 2 pass; failing n2 × runc, n2 × runsc")
    assert f"run {STARTED} to 20" in out[2] and "uid uid-1" in out[2]
    assert f"catalog sha256 {CATALOG}" in out[3]
    assert out[4] == "sandcheck: all 7 files of the bundle are the signed ones"
    assert verify_bundle(bundle) == []  # the attestation is no file "added after the run"


def test_the_statement_names_every_file_and_the_certification(bundle):
    env = envelope(bundle)
    assert env["payloadType"] == PAYLOAD_TYPE == "application/vnd.in-toto+json"
    assert len((bundle / ATTESTATION).read_text().splitlines()) == 1  # JSON lines
    stmt = statement(bundle)
    assert stmt["_type"] == "https://in-toto.io/Statement/v1"
    assert stmt["predicateType"] == PREDICATE_TYPE == "https://sandcheck.dev/certification/v1"
    names = [s["name"] for s in stmt["subject"]]
    assert names == sorted(["SHA256SUMS", "certification.json", "cluster.json", "junit.xml",
                            "report.html", "results.json", "summary.md"])
    pred = stmt["predicate"]
    assert set(pred) == {"verdict", "cells", "selection", "runtimes", "sandcheck_version",
                         "catalog_sha256", "cluster", "started", "finished"}
    assert pred["verdict"] == "fail" and pred["selection"] == certify.SELECTION
    assert {"node": "n2", "runtime_class": "runsc", "verdict": "fail",
            "failing_checks": ["isolation.kernel_identity"]} in pred["cells"]
    assert pred["runtimes"] == ["runc", "runsc"] and pred["catalog_sha256"] == CATALOG
    assert pred["cluster"]["cluster_uid"] == "uid-1"
    assert sorted(pred["cluster"]["node_fingerprints"]) == ["n1", "n2"]
    assert pred["started"] == STARTED and pred["finished"] >= STARTED
    env = Results.read(bundle / "results.json").environment
    assert (env["run_started"], env["catalog_sha256"]) == (STARTED, CATALOG)


def test_nothing_of_the_private_key_leaves_its_file(bundle, key, capsys):
    secret = key.key.private_bytes(serialization.Encoding.Raw if key.kind == "ed25519" else
                                   serialization.Encoding.DER,
                                   serialization.PrivateFormat.Raw if key.kind == "ed25519"
                                   else serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption())
    pem = Path(key.source).read_bytes()
    for path in bundle.rglob("*"):
        data = path.read_bytes()
        assert b"PRIVATE KEY" not in data and secret not in data and pem not in data
    assert "PRIVATE" not in repr(key)
    assert "PRIVATE" not in capsys.readouterr().out


def test_without_a_public_key_origin_is_said_to_be_unchecked(bundle, tmp_path, capsys):
    assert main(["verify-bundle", str(bundle)]) == 0
    out = capsys.readouterr().out
    assert "bundle intact; certification fail" in out
    assert "origin not checked" in out and f"carries a signed attestation ({ATTESTATION})" in out
    plain = shard(tmp_path / "plain", ["n1"], "pool=a")
    assert main(["verify-bundle", str(plain)]) == 0
    assert "origin not checked" in (out := capsys.readouterr().out)
    assert "the bundle is not signed" in out


def test_an_unsigned_bundle_with_a_public_key_is_refused(tmp_path, key, capsys):
    plain = shard(tmp_path / "plain", ["n1"], "pool=a")
    code, out = verify_signed(plain, f"{key.source[:-4]}.pub", capsys)
    assert code == 1
    assert out == [f"sandcheck: NOT SIGNED {plain} holds no {ATTESTATION}: it is not signed, "
                   "so its origin cannot be checked (`sandcheck certify --sign-key KEY` "
                   "signs a bundle)"]


# -- tampering: each way fails with its own line ----------------------------------------------


def _flip_results(bundle: Path) -> None:
    """n2's failed checks passed, certification.json recomputed, SHA256SUMS re-made."""
    data = json.loads((bundle / "results.json").read_text())
    for check in data["checks"]:
        if check["node"] == "n2":
            check["status"], check["message"] = "passed", ""
    (bundle / "results.json").write_text(json.dumps(data))
    finish_bundle(bundle, certify.SELECTION)


def _flip_certification(bundle: Path) -> None:
    cert = json.loads((bundle / CERTIFICATION).read_text())
    for cell in cert["cells"]:
        cell["verdict"], cell["failing_checks"] = "pass", []
    cert["verdict"] = "pass"
    (bundle / CERTIFICATION).write_text(json.dumps(cert))
    write_manifest(bundle)


def _edit_payload(bundle: Path) -> None:
    env = envelope(bundle)
    stmt = json.loads(base64.b64decode(env["payload"]))
    stmt["predicate"]["verdict"] = "pass"
    env["payload"] = base64.b64encode(json.dumps(stmt).encode()).decode()
    (bundle / ATTESTATION).write_text(json.dumps(env))


def _alter_signature(bundle: Path) -> None:
    env = envelope(bundle)
    sig = bytearray(base64.b64decode(env["signatures"][0]["sig"]))
    sig[-1] ^= 1
    env["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    (bundle / ATTESTATION).write_text(json.dumps(env))


def _remake_after_change(bundle: Path) -> None:
    (bundle / "summary.md").write_text("all green\n")
    write_manifest(bundle)


TAMPERING = {
    "b: SHA256SUMS re-made after a change": (
        _remake_after_change,
        "SHA256SUMS: re-made after summary.md changed: they match SHA256SUMS, but not the "
        "signed attestation"),
    "c: a file added": (
        lambda b: (b / "extra.txt").write_text("x"),
        "extra.txt: added after signing (in the bundle, not a subject of the attestation)"),
    "d: a file removed": (
        lambda b: (b / "summary.md").unlink(),
        "summary.md: removed after signing (a subject of the attestation, missing from the "
        "bundle)"),
    "e: a file changed": (
        lambda b: (b / "report.html").write_text("<p>all green</p>"),
        "report.html: changed after signing (SHA-256 differs from the attestation's "
        "subject)"),
    "f: a verdict flipped in results.json": (
        _flip_results,
        "verdict of n2 × runc: the signed attestation says fail (isolation.kernel_identity), "
        "the bundle's results.json gives pass and its certification.json says pass: changed "
        "after signing"),
    "f: a verdict flipped in certification.json": (
        _flip_certification,
        "verdict of n2 × runc: the signed attestation says fail (isolation.kernel_identity), "
        "the bundle's results.json gives fail (isolation.kernel_identity) and its "
        "certification.json says pass: changed after signing"),
    "h: payload edited without re-signing": (
        _edit_payload, "attestation.intoto.jsonl: the signature does not verify with {pub}: "
                       "the payload or the signature was altered after signing"),
    "h: signature altered": (
        _alter_signature, "attestation.intoto.jsonl: the signature does not verify with "
                          "{pub}: the payload or the signature was altered after signing"),
}


@pytest.mark.parametrize("case", TAMPERING)
def test_each_tampering_fails_with_its_own_line(bundle, key, case, capsys):
    tamper, line = TAMPERING[case]
    pub = f"{key.source[:-4]}.pub"
    tamper(bundle)
    code, out = verify_signed(bundle, pub, capsys)
    assert (code, out) == (1, ["sandcheck: TAMPERED " + line.format(pub=pub)])


def test_a_signed_by_another_key(bundle, key, tmp_path, capsys):
    other = keypair(tmp_path, "intruder")
    _remake_after_change(bundle)
    sign_bundle(bundle, other)  # re-signed after the change, by a key of their own
    pub = f"{key.source[:-4]}.pub"
    code, out = verify_signed(bundle, pub, capsys)
    assert (code, out) == (1, [f"sandcheck: TAMPERED {ATTESTATION}: signed by another key "
                               f"(keyid {other.keyid}), not by {pub} (keyid {key.keyid})"])


@pytest.mark.parametrize("other", [{"uid": "uid-2"}, {"nodes": ("n3", "n4"),
                                                       "selector": "pool=b"}])
def test_g_an_envelope_taken_from_another_bundle(bundle, key, tmp_path, other, capsys):
    elsewhere = signed_bundle(tmp_path / "other", key, **other)
    shutil.copy(elsewhere / ATTESTATION, bundle / ATTESTATION)
    code, out = verify_signed(bundle, f"{key.source[:-4]}.pub", capsys)
    assert code == 1 and len(out) == 1, out
    assert out[0].startswith(f"sandcheck: TAMPERED {ATTESTATION}: the attestation of another "
                             "bundle: it certifies cluster ")
    assert "this bundle is cluster uid-1 (nodes n1, n2), run started " + STARTED in out[0]


def test_the_signer_re_signing_after_a_change_makes_a_bundle_that_verifies(bundle, key,
                                                                           capsys):
    """The attestation vouches for the bundle as its signer last signed it."""
    _remake_after_change(bundle)
    sign_bundle(bundle, key)
    assert verify_signed(bundle, f"{key.source[:-4]}.pub", capsys)[0] == 0


def test_an_attestation_that_is_no_envelope_is_refused(bundle, key, capsys):
    (bundle / ATTESTATION).write_text('{"payload": "not base64!"}\n')
    code, out = verify_signed(bundle, f"{key.source[:-4]}.pub", capsys)
    assert (code, out) == (1, [f"sandcheck: TAMPERED {ATTESTATION}: not a DSSE envelope "
                               "(payloadType, payload, signatures)"])


# -- independent verifiers: in-toto, the DSSE spec, openssl -----------------------------------


def test_the_in_toto_library_verifies_the_envelope(bundle, key):
    from in_toto.models.metadata import Envelope, Metadata
    from securesystemslib.exceptions import VerificationError
    from securesystemslib.signer import SSlibKey

    public = serialization.load_pem_public_key(Path(f"{key.source[:-4]}.pub").read_bytes())
    verifier = SSlibKey.from_crypto(public, keyid=key.keyid)
    loaded = Metadata.load(bundle / ATTESTATION)
    assert isinstance(loaded, Envelope)
    assert list(loaded.verify([verifier], 1)) == [key.keyid]
    stmt = json.loads(loaded.payload)
    assert stmt["predicateType"] == PREDICATE_TYPE
    _edit_payload(bundle)
    with pytest.raises(VerificationError):
        Metadata.load(bundle / ATTESTATION).verify([verifier], 1)


def _spec_pae(payload_type: str, payload: bytes) -> bytes:
    """PAE as the DSSE protocol document writes it: "DSSEv1" SP LEN(type) SP type SP
    LEN(body) SP body, lengths as ASCII decimals of byte counts."""
    t = payload_type.encode("utf-8")
    return b" ".join([b"DSSEv1", str(len(t)).encode(), t, str(len(payload)).encode(),
                      payload])


def test_a_dsse_verifier_from_the_spec_verifies_it(bundle, key):
    env = envelope(bundle)
    payload = base64.b64decode(env["payload"])
    data = _spec_pae(env["payloadType"], payload)
    public = serialization.load_pem_public_key(Path(f"{key.source[:-4]}.pub").read_bytes())
    der = public.public_bytes(serialization.Encoding.DER,
                              serialization.PublicFormat.SubjectPublicKeyInfo)
    [sig] = env["signatures"]
    assert sig["keyid"] == hashlib.sha256(der).hexdigest()
    raw = base64.b64decode(sig["sig"])
    if isinstance(public, ed25519.Ed25519PublicKey):
        public.verify(raw, data)  # raises on a bad signature
    else:
        assert raw[0] == 0x30  # an ASN.1 SEQUENCE: DER, not r||s
        public.verify(raw, data, ec.ECDSA(hashes.SHA256()))
    for s in json.loads(payload)["subject"]:
        assert hashlib.sha256((bundle / s["name"]).read_bytes()).hexdigest() \
            == s["digest"]["sha256"]


def test_openssl_verifies_the_pae_bytes(bundle, key, tmp_path):
    env = envelope(bundle)
    (tmp_path / "pae.bin").write_bytes(_spec_pae(env["payloadType"],
                                                 base64.b64decode(env["payload"])))
    (tmp_path / "sig.bin").write_bytes(base64.b64decode(env["signatures"][0]["sig"]))
    pub = f"{key.source[:-4]}.pub"
    command = (["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", pub, "-rawin", "-in",
                "pae.bin", "-sigfile", "sig.bin"] if key.kind == "ed25519" else
               ["openssl", "dgst", "-sha256", "-verify", pub, "-signature", "sig.bin",
                "pae.bin"])
    proc = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and "Verified" in proc.stdout + proc.stderr, proc
    (tmp_path / "pae.bin").write_bytes(b"x" + (tmp_path / "pae.bin").read_bytes())
    assert subprocess.run(command, cwd=tmp_path, capture_output=True,
                          timeout=30).returncode != 0


def readme_buyer_commands() -> str:
    section = (ROOT / "README.md").read_text().split("\n## Signed certification", 1)[1]
    blocks = re.findall(r"```sh\n(.*?)```", section.split("\n## ", 1)[0], re.S)
    return next(b for b in blocks if "openssl pkeyutl" in b)


def test_the_readme_buyer_check_works_as_written(bundle, key, tmp_path):
    """The README's commands, run by bash in a directory holding cert/ and vendor.pub: an
    ECDSA key takes the commented openssl line instead of the Ed25519 one."""
    script = readme_buyer_commands()
    if key.kind == "ecdsa-p256":
        script = re.sub(r"^(openssl pkeyutl .*)$", r"# \1", script, flags=re.M)
        script = re.sub(r"^# (openssl dgst .*)$", r"\1", script, flags=re.M)
    assert bundle == tmp_path / "cert" and Path(key.source) == tmp_path / "vendor.key"

    def run():
        return subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path,
                              capture_output=True, text=True, timeout=60)

    proc = run()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Verified" in proc.stdout + proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "fail"  # the signed verdict
    (bundle / "summary.md").write_text("all green\n")
    assert run().returncode != 0  # a changed file
    (bundle / "summary.md").unlink()
    assert run().returncode != 0  # a removed file
    (bundle / "summary.md").write_text("all green\n")
    _flip_certification(bundle)
    assert run().returncode != 0  # a re-made manifest does not help
    _edit_payload(bundle)
    assert run().returncode != 0  # the signature


# -- keys: keygen, permissions, passphrases, bad input ----------------------------------------


def test_keygen_writes_a_private_key_only_its_owner_reads(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    old = os.umask(0)  # a loose umask must not loosen the key's mode
    try:
        assert main(["keygen", "ci", "--no-passphrase"]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat("ci.key").st_mode) == 0o600
    assert stat.S_IMODE(os.stat("ci.pub").st_mode) == 0o644
    out = capsys.readouterr().out
    keyid = load_public_key(Path("ci.pub")).keyid
    assert f"keyid {keyid}" in out and "NOT encrypted" in out
    assert load_signing_key(Path("ci.key")).kind == "ed25519"
    der = subprocess.run(["openssl", "pkey", "-pubin", "-in", "ci.pub", "-outform", "DER"],
                         capture_output=True, check=True, timeout=30).stdout
    assert hashlib.sha256(der).hexdigest() == keyid  # the README's recipe
    assert main(["keygen", "ec", "--type", "ecdsa-p256", "--no-passphrase"]) == 0
    assert load_signing_key(Path("ec.key")).kind == "ecdsa-p256"


def test_keygen_never_overwrites(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("ci.pub").write_text("mine\n")
    assert main(["keygen", "ci", "--no-passphrase"]) == 2
    assert capsys.readouterr().err.strip() == (
        "sandcheck: error: ci.pub exists: keygen never overwrites a key; choose another NAME "
        "or move the old one away")
    assert not Path("ci.key").exists() and Path("ci.pub").read_text() == "mine\n"


def test_keygen_without_a_passphrase_source_asks_for_a_decision(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    assert main(["keygen", "ci"]) == 2
    assert "set SANDCHECK_KEY_PASSPHRASE, run in a terminal to be asked, or give " \
           "--no-passphrase" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_passphrase_encrypted_key(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(PASSPHRASE_ENV, "correct horse")
    assert main(["keygen", "enc"]) == 0
    assert "encrypted" in capsys.readouterr().out
    assert Path("enc.key").read_text().startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert load_signing_key(Path("enc.key")).kind == "ed25519"
    # openssl reads it with the same passphrase
    subprocess.run(["openssl", "pkey", "-in", "enc.key", "-passin", f"env:{PASSPHRASE_ENV}",
                    "-noout"], check=True, timeout=30)
    monkeypatch.setenv(PASSPHRASE_ENV, "wrong")
    with pytest.raises(UserError, match=r"enc.key: wrong passphrase \(SANDCHECK_KEY_PASS"):
        load_signing_key(Path("enc.key"))
    monkeypatch.delenv(PASSPHRASE_ENV)
    with pytest.raises(UserError, match="is encrypted and no passphrase was given"):
        load_signing_key(Path("enc.key"), lambda what: None)
    typed = load_signing_key(Path("enc.key"), lambda what: b"correct horse")
    shard(tmp_path / "cert", ["n1"], "pool=a")
    assert certify.finish(tmp_path / "cert", 0, STARTED, CATALOG, typed) == 0
    assert main(["verify-bundle", "cert", "--public-key", "enc.pub"]) == 0


def test_the_passphrase_comes_from_the_environment_or_a_prompt():
    assert passphrase("k", environ={PASSPHRASE_ENV: "s"}, interactive=True) == b"s"
    assert passphrase("k", environ={}, interactive=False) is None
    answers = iter(["one", "two"])
    with pytest.raises(UserError, match="the two passphrases for k differ"):
        passphrase("k", environ={}, ask=lambda _: next(answers), interactive=True,
                   confirm=True)
    assert passphrase("k", environ={}, ask=lambda _: "", interactive=True,
                      confirm=True) == b""  # empty: an unencrypted key


def _pem(private) -> bytes:
    return private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())


@pytest.mark.parametrize("content, mode, message", [
    (None, 0o600, "no such file: give the private key `sandcheck keygen NAME` wrote"),
    (b"not a key\n", 0o600, "is not a PEM private key"),
    (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", 0o600,
     "holds no private key sandcheck can read"),
    ("pub", 0o600, "is a public key: --sign-key takes the private key"),
    ("rsa", 0o600, "is an RSA key: sandcheck signs with Ed25519 or ECDSA P-256 only"),
    ("p384", 0o600, "is an ECDSA key on curve secp384r1"),
    ("ed25519", 0o644, r"may be read by group or others \(mode 0644\).*run `chmod 600 "),
    ("ed25519", 0o640, r"\(mode 0640\).*`chmod 600 "),
])
def test_a_signing_key_that_cannot_be_used_is_refused_in_one_line(tmp_path, content, mode,
                                                                  message):
    path = tmp_path / "k.key"
    made = {"rsa": lambda: _pem(rsa.generate_private_key(public_exponent=65537,
                                                         key_size=2048)),
            "p384": lambda: _pem(ec.generate_private_key(ec.SECP384R1())),
            "ed25519": lambda: _pem(ed25519.Ed25519PrivateKey.generate()),
            "pub": lambda: ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)}
    if content is not None:
        path.write_bytes(made[content]() if isinstance(content, str) else content)
        path.chmod(mode)
    with pytest.raises(UserError, match=message) as caught:
        load_signing_key(path)
    assert "\n" not in str(caught.value) and "BEGIN" not in str(caught.value)


def test_a_public_key_that_cannot_be_used_is_refused(tmp_path, key, capsys):
    bundle = signed_bundle(tmp_path / "cert", key)
    capsys.readouterr()
    for name, content, message in [
            ("missing.pub", None, "missing.pub: no such file: give the public key (NAME.pub)"),
            ("priv.pub", Path(key.source).read_bytes(), "priv.pub is a private key: "
                                                        "--public-key takes the public one"),
            ("junk.pub", b"junk", "junk.pub is not a PEM public key")]:
        if content is not None:
            (tmp_path / name).write_bytes(content)
        assert main(["verify-bundle", str(bundle), "--public-key", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and message in err[0], err


def test_certify_refuses_a_bad_key_before_it_runs(tmp_path, capsys):
    key = keypair(tmp_path, "k")
    os.chmod(key.source, 0o644)
    bundle = tmp_path / "new"
    assert certify.certify(["--bundle", str(bundle), "--sign-key", key.source]) == 2
    assert "`chmod 600 " in capsys.readouterr().err
    assert not bundle.exists()  # no run started
    os.chmod(key.source, 0o600)
    (bundle / "sub").mkdir(parents=True)
    inside = keypair(bundle / "sub", "k")
    with pytest.raises(UserError, match="is inside the bundle"):
        certify.load_signer(Path(inside.source), bundle)


# -- merged bundles and run times ----------------------------------------------------------


def test_a_merged_bundle_is_signed_anew_and_carries_no_input_attestation(tmp_path, key,
                                                                           capsys):
    a = signed_bundle(tmp_path / "a", key, nodes=("n1",), selector="pool=a")
    b = signed_bundle(tmp_path / "b", key, nodes=("n2",), selector="pool=b")
    out = tmp_path / "merged"
    assert main(["merge-bundles", str(out), str(a), str(b), "--sign-key", key.source]) == 1
    capsys.readouterr()
    code, lines = verify_signed(out, f"{key.source[:-4]}.pub", capsys)
    assert code == 0, lines
    pred = statement(out)["predicate"]
    assert sorted({c["node"] for c in pred["cells"]}) == ["n1", "n2"]
    assert pred["started"] == STARTED and pred["catalog_sha256"] == CATALOG
    unsigned = tmp_path / "unsigned"
    assert main(["merge-bundles", str(unsigned), str(a), str(b)]) == 1
    assert not (unsigned / ATTESTATION).exists()


def test_shards_judged_by_other_catalogs_do_not_merge(tmp_path):
    from sandcheck.reports.merge import merge_bundles

    a = shard(tmp_path / "a", ["n1"], "pool=a")
    b = shard(tmp_path / "b", ["n2"], "pool=b")
    for path, digest in ((a, "1" * 64), (b, "2" * 64)):
        stamp_run(path, STARTED, STARTED, digest)
        finish_bundle(path, certify.SELECTION)
    with pytest.raises(UserError, match="differ in catalog"):
        merge_bundles(tmp_path / "m", [a, b])


def test_a_resumed_run_started_with_its_first_session(tmp_path):
    path = shard(tmp_path / "r", ["n1"], "pool=a")
    results = Results.read(path / "results.json")
    results.environment["resumed"] = {"earlier_sessions": [
        {"started": "2026-11-03T09:00:00+0100", "pid": 1}, {"started": "garbled"}]}
    results.write(path / "results.json")
    stamp_run(path, STARTED, "2026-11-03T11:00:00Z", CATALOG)
    env = Results.read(path / "results.json").environment
    assert (env["run_started"], env["run_finished"]) == ("2026-11-03T08:00:00Z",
                                                         "2026-11-03T11:00:00Z")
