"""Push an image archive to a registry through the OCI distribution API.

The archive is the OCI image layout sandcheck writes for the probe (and for its own
registry image): index.json names the manifest, blobs/ holds everything. Blobs go first
(skipped when the registry has them: a HEAD), each as one monolithic upload (POST, then PUT
with the digest), then the manifest by tag, byte for byte, so its digest on the registry
is the archive's. The registry's own digest header is checked against it.

Auth follows the registry's challenge: Basic with the docker config's credentials, or a
Bearer token fetched from the realm it names (with those credentials when there are any).
Plain HTTP only for loopback registries or when asked (``insecure``).
"""

from __future__ import annotations

import base64
import json
import re
import tarfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sandcheck.errors import ComponentError, UserError
from sandcheck.oci.credentials import Credentials, credentials_for
from sandcheck.oci.reference import Target, is_loopback
from sandcheck.timeouts import TIMEOUTS

MANIFEST_TYPES = ("application/vnd.oci.image.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v2+json")


class PushError(ComponentError):
    """The registry refused or broke a push."""


@dataclass
class Pushed:
    target: Target
    digest: str
    blobs_uploaded: list[str] = field(default_factory=list)
    blobs_present: list[str] = field(default_factory=list)

    @property
    def reference(self) -> str:
        return str(self.target)


def _challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="...",service="..."`` -> ("bearer", {realm:..., service:...})."""
    scheme, _, rest = header.strip().partition(" ")
    params = dict(re.findall(r'(\w+)="([^"]*)"', rest))
    return scheme.lower(), params


class Registry:
    """A session with one registry: its base URL and whatever auth it asked for."""

    def __init__(self, host: str, insecure: bool = False,
                 credentials: Credentials | None = None):
        self.host = host
        self.scheme = "http" if insecure or is_loopback(host) else "https"
        self.base = f"{self.scheme}://{host}"
        self.credentials = credentials
        self.authorization: str | None = None

    def request(self, method: str, url: str, body: bytes | IO[bytes] | None = None,
                headers: dict[str, str] | None = None, scope: str = "",
                length: int | None = None) -> tuple[int, dict[str, str], bytes]:
        """One call; on a 401 authenticate as challenged and retry once (a file body is
        rewound)."""
        for attempt in (1, 2):
            hdrs = dict(headers or {})
            if self.authorization:
                hdrs["Authorization"] = self.authorization
            if length is not None:
                hdrs["Content-Length"] = str(length)
            req = urllib.request.Request(url if "://" in url else self.base + url,
                                         data=body, method=method, headers=hdrs)
            try:
                with urllib.request.urlopen(req, timeout=TIMEOUTS.image_import) as resp:
                    return resp.status, {k.lower(): v for k, v in resp.headers.items()}, \
                        resp.read()
            except urllib.error.HTTPError as exc:
                answer = exc.read()
                if exc.code == 401 and attempt == 1:
                    self._authenticate(exc.headers.get("WWW-Authenticate", ""), scope)
                    if hasattr(body, "seek"):
                        body.seek(0)  # type: ignore[union-attr]
                    continue
                return exc.code, {k.lower(): v for k, v in exc.headers.items()}, answer
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                raise PushError(f"registry {self.base} unreachable: {reason}") from None
        raise AssertionError("unreachable")

    def _authenticate(self, header: str, scope: str) -> None:
        scheme, params = _challenge(header)
        creds = self.credentials
        if scheme == "basic":
            if creds is None:
                raise UserError(f"registry {self.host} wants a login: run `docker login "
                                f"{self.host}` (push-image reads the docker config)")
            token = base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
            self.authorization = f"Basic {token}"
        elif scheme == "bearer" and params.get("realm"):
            query = {"service": params.get("service", ""), "scope": scope}
            url = f"{params['realm']}?{urllib.parse.urlencode(query)}"
            req = urllib.request.Request(url)
            if creds is not None:
                basic = base64.b64encode(f"{creds.username}:{creds.password}".encode())
                req.add_header("Authorization", f"Basic {basic.decode()}")
            try:
                with urllib.request.urlopen(req, timeout=TIMEOUTS.api_call) as resp:
                    answer = json.loads(resp.read())
            except urllib.error.HTTPError as exc:
                hint = (f"run `docker login {self.host}`" if creds is None
                        else f"the credentials from {creds.source} were refused")
                raise UserError(f"registry {self.host}: token service {params['realm']} "
                                f"answered {exc.code}: {hint}") from None
            self.authorization = f"Bearer {answer.get('token') or answer.get('access_token')}"
        else:
            raise PushError(f"registry {self.host} asks for auth {header!r}, which "
                            "push-image does not speak")


class Layout:
    """The OCI image layout inside an image archive (tar), read in place."""

    def __init__(self, archive: Path):
        self.archive = archive
        self.tar = tarfile.open(archive)
        index = json.loads(self.read("index.json"))
        manifests = [m for m in index.get("manifests", []) if m.get("mediaType")
                     in MANIFEST_TYPES]
        if not manifests:
            raise UserError(f"{archive}: index.json names no image manifest; give an OCI "
                            "image archive (sandcheck's probe image is one)")
        self.manifest_desc = manifests[0]
        self.manifest = self.read_blob(self.manifest_desc["digest"])

    def read(self, name: str) -> bytes:
        member = self.tar.extractfile(name)
        if member is None:
            raise UserError(f"{self.archive}: {name} missing: not an OCI image archive")
        return member.read()

    def read_blob(self, digest: str) -> bytes:
        return self.read(_blob_path(digest))

    def open_blob(self, digest: str) -> tuple[IO[bytes], int]:
        name = _blob_path(digest)
        member = self.tar.getmember(name)
        fh = self.tar.extractfile(member)
        assert fh is not None
        return fh, member.size

    def blobs(self) -> list[str]:
        parsed = json.loads(self.manifest)
        return [parsed["config"]["digest"], *(layer["digest"] for layer in parsed["layers"])]

    def close(self) -> None:
        self.tar.close()


def _blob_path(digest: str) -> str:
    algo, _, hexpart = digest.partition(":")
    return f"blobs/{algo}/{hexpart}"


def push_archive(archive: Path, target: Target, insecure: bool = False,
                 credentials: Credentials | None = None,
                 progress: Callable[[str], None] = lambda _: None) -> Pushed:
    """Push the image in ``archive`` to ``target`` (its tag is required)."""
    if target.tag is None:
        raise UserError(f"{target}: give a tag to push to")
    if credentials is None:
        credentials = credentials_for(target.host)
    session = Registry(target.host, insecure, credentials)
    repo, scope = target.repository, f"repository:{target.repository}:pull,push"
    layout = Layout(archive)
    try:
        pushed = Pushed(target, layout.manifest_desc["digest"])
        status, _, body = session.request("GET", "/v2/", scope=scope)
        if status not in (200, 401):
            raise PushError(f"{session.base}/v2/ answered {status}: not an OCI registry? "
                            f"{body[:200]!r}")
        for digest in layout.blobs():
            status, _, _ = session.request("HEAD", f"/v2/{repo}/blobs/{digest}", scope=scope)
            if status == 200:
                pushed.blobs_present.append(digest)
                continue
            _upload(session, layout, repo, digest, scope)
            pushed.blobs_uploaded.append(digest)
            progress(f"push {target}: blob {digest[:19]} uploaded")
        status, headers, body = session.request(
            "PUT", f"/v2/{repo}/manifests/{target.tag}", layout.manifest,
            {"Content-Type": layout.manifest_desc["mediaType"]}, scope)
        if status not in (200, 201):
            raise PushError(f"registry refused the manifest of {target}: {status} "
                            f"{_errors(body)}")
        got = headers.get("docker-content-digest")
        if got and got != pushed.digest:
            raise PushError(f"registry stored the manifest of {target} as {got}, not "
                            f"{pushed.digest}: it rewrote the manifest")
        return pushed
    finally:
        layout.close()


def _upload(session: Registry, layout: Layout, repo: str, digest: str, scope: str) -> None:
    status, headers, body = session.request("POST", f"/v2/{repo}/blobs/uploads/",
                                            b"", scope=scope, length=0)
    if status != 202 or "location" not in headers:
        raise PushError(f"registry refused to start an upload to {repo}: {status} "
                        f"{_errors(body)}")
    location = urllib.parse.urljoin(session.base + "/", headers["location"])
    sep = "&" if "?" in location else "?"
    fh, size = layout.open_blob(digest)
    status, _, body = session.request(
        "PUT", f"{location}{sep}digest={urllib.parse.quote(digest)}", fh,
        {"Content-Type": "application/octet-stream"}, scope, length=size)
    if status != 201:
        raise PushError(f"registry refused blob {digest} of {repo}: {status} {_errors(body)}")


def _errors(body: bytes) -> str:
    try:
        errors: list[dict[str, Any]] = json.loads(body).get("errors") or []
        return "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors)
    except (ValueError, AttributeError):
        return body[:300].decode(errors="replace")
