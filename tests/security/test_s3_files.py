"""S3 and files (issue 17, item 6): no default S3 key, SeaweedFS reachable only through
authenticated S3, private folders and files, `clipline download` confined to its folder."""

from __future__ import annotations

import hashlib
import io
import shutil
import socket
import ssl
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from minio import Minio
from minio.error import S3Error

from clipline import cli, downloads, remote, s3_key
from clipline.download import UnsafeRecord, file_name, target, targets
from clipline.seaweed_security import (
    CA_CERT,
    CERT,
    KEY,
    S3_CONFIG_FILE,
    SECURITY_FILE,
    TLS_DIR,
    make_tls,
)
from clipline.servers import S3Server
from clipline.stack import STATE_FILE, StackOptions, StackState, down, up
from services.simulator.journal import FRAMES, JOURNAL, LOCK, Journal
from shared.contracts import AssetRef, JobRecordV1
from tests.fake_intake import API_KEY, Fake, serving
from tests.fakes import FakeClock

DEFAULT_KEYS = [("clipline", "clipline-secret"), ("minioadmin", "minioadmin"), ("admin", "admin")]
PAYLOAD = b"only through authenticated S3 " * 4096  # 120 KiB: kept in a volume, not the filer
JOB = "job_" + "b" * 32


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def stored(s3_server: S3Server) -> tuple[str, str]:
    """(bucket, key) of an object written through S3 with the server's own key."""
    client = Minio(s3_server.endpoint, access_key=s3_server.access_key,
                   secret_key=s3_server.secret_key, secure=False)  # fmt: skip
    bucket, key = f"sec-{uuid.uuid4().hex[:12]}", "t/2026/12/07/job_x/video.mp4"
    client.make_bucket(bucket)
    client.put_object(bucket, key, io.BytesIO(PAYLOAD), len(PAYLOAD))
    return bucket, key


# S3: the stack's key only ---------------------------------------------------------------------


@pytest.mark.parametrize(("access", "secret"), DEFAULT_KEYS)
def test_s3_refuses_a_default_key(
    s3_server: S3Server, stored: tuple[str, str], access: str, secret: str
) -> None:
    bucket, key = stored
    client = Minio(s3_server.endpoint, access_key=access, secret_key=secret, secure=False)
    with pytest.raises(S3Error) as refused:
        client.get_object(bucket, key)
    assert refused.value.code == "InvalidAccessKeyId"
    with pytest.raises(S3Error):
        client.put_object(bucket, "evil", io.BytesIO(b"x"), 1)


def test_s3_refuses_a_wrong_secret_and_an_unsigned_request(
    s3_server: S3Server, stored: tuple[str, str]
) -> None:
    bucket, key = stored
    wrong = Minio(s3_server.endpoint, access_key=s3_server.access_key,
                  secret_key=s3_server.secret_key + "x", secure=False)  # fmt: skip
    with pytest.raises(S3Error) as refused:
        wrong.get_object(bucket, key)
    assert refused.value.code == "SignatureDoesNotMatch"
    url = f"http://{s3_server.endpoint}/{bucket}/{key}"
    assert httpx.get(url).status_code == 403
    assert httpx.put(f"http://{s3_server.endpoint}/{bucket}/evil", content=b"x").status_code == 403
    right = Minio(s3_server.endpoint, access_key=s3_server.access_key,
                  secret_key=s3_server.secret_key, secure=False)  # fmt: skip
    with pytest.raises(S3Error, match="NoSuchKey"):
        right.stat_object(bucket, "evil")  # nothing was written


def test_the_s3_server_is_not_given_a_key_by_the_environment(s3_server: S3Server) -> None:
    """The key is in a 0600 file, not in the recorded environment; AWS_* is blanked so a
    key a shell exports adds no identity."""
    assert s3_server.proc.env == {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}
    assert s3_server.secret_key not in " ".join(s3_server.proc.argv)
    assert s3_server.secret_key not in repr(s3_server)


# SeaweedFS's own ports: nothing served or accepted without credentials --------------------------


def _answers(base: str, bucket: str, key: str) -> list[tuple[str, httpx.Response]]:
    """An unauthenticated client's tries at reading, writing and deleting data on one of
    SeaweedFS's HTTP ports (filer paths, master API, volume file ids); none may succeed."""
    status = httpx.get(f"{base}/status", timeout=5)  # a volume server lists its volumes
    volumes = [v["Id"] for v in status.json().get("Volumes", [])] if status.is_success else []
    fids = [f"{vid},{n:x}{'0' * 8}" for vid in [*volumes, 1, 2, 3] for n in (1, 2, 3)]
    reads = [f"/buckets/{bucket}/{key}", f"/buckets/{bucket}/", "/buckets/", "/dir/assign",
             "/dir/lookup?volumeId=1", "/vol/grow?count=1", *(f"/{f}" for f in fids)]  # fmt: skip
    tries: list[tuple[str, httpx.Response]] = []
    with httpx.Client(base_url=base, timeout=5) as http:
        tries += [(f"GET {path}", http.get(path)) for path in reads]
        for path in [f"/buckets/{bucket}/evil.txt", "/submit", f"/{fids[0]}"]:
            tries.append((f"PUT {path}", http.put(path, content=b"evil")))
            tries.append((f"POST {path}", http.post(path, files={"file": ("e", b"evil")})))
        for path in [f"/col/delete?collection={bucket}", f"/buckets/{bucket}/{key}"]:
            tries.append((f"DELETE {path}", http.delete(path)))
            tries.append((f"GET {path}", http.get(path)))
    return tries


@pytest.mark.parametrize("role", ["filer", "master", "volume", "admin"])
def test_seaweedfs_ports_refuse_unauthenticated_reads_and_writes(
    s3_server: S3Server, stored: tuple[str, str], role: str
) -> None:
    bucket, key = stored
    tries = _answers(f"http://127.0.0.1:{s3_server.ports[role]}", bucket, key)
    served = [(what, r.status_code, r.text[:80]) for what, r in tries if r.is_success]
    assert served == [], f"{role} answered without credentials: {served}"
    assert not any(PAYLOAD[:64] in r.content for _, r in tries)
    # Nothing was written or deleted: the object is whole, and no "evil" object appeared.
    client = Minio(s3_server.endpoint, access_key=s3_server.access_key,
                   secret_key=s3_server.secret_key, secure=False)  # fmt: skip
    assert client.get_object(bucket, key).read() == PAYLOAD
    assert [o.object_name for o in client.list_objects(bucket, recursive=True)] == [key]


def test_volume_server_demands_a_token(s3_server: S3Server) -> None:
    """The volume port's refusal is the JWT check (401), not a missing file id (404)."""
    with httpx.Client(base_url=f"http://127.0.0.1:{s3_server.ports['volume']}") as http:
        assert http.get("/1,0100000000").status_code == 401
        assert http.post("/1,0100000000", files={"file": ("e", b"x")}).status_code == 401


# gRPC ports (HTTP port + 10000): mutual TLS with the stack's own CA ---------------------------

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def speaks_grpc(port: int, context: ssl.SSLContext | None) -> bool:
    """True when the port answers an HTTP/2 preface with its SETTINGS frame (what a gRPC
    server does for a client it accepts), over TLS with `context`, or plain when None."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            sock = raw if context is None else context.wrap_socket(raw)
            sock.sendall(H2_PREFACE)
            sock.settimeout(5)
            answer = sock.recv(64)
    except (OSError, ssl.SSLError):
        return False
    return len(answer) >= 9 and answer[3] == 0x04  # frame type 4: SETTINGS


def tls_context(cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the server's identity is not what is tested here
    context.set_alpn_protocols(["h2"])
    if cert is not None:
        context.load_cert_chain(cert, key)
    return context


GRPC_ROLES = ["master", "volume", "filer", "s3", "admin"]


@pytest.mark.parametrize("role", GRPC_ROLES)
def test_grpc_ports_refuse_a_client_without_the_stacks_certificate(
    s3_server: S3Server, tmp_path: Path, role: str
) -> None:
    port = s3_server.ports[role] + 10000
    other = make_tls(tmp_path / "other", shutil.which("openssl") or "openssl")
    assert not speaks_grpc(port, None), "plaintext gRPC accepted"
    assert not speaks_grpc(port, tls_context()), "TLS without a client certificate accepted"
    assert not speaks_grpc(port, tls_context(other / CERT, other / KEY)), "another CA accepted"


@pytest.mark.parametrize("role", GRPC_ROLES)
def test_grpc_ports_answer_the_stacks_own_certificate(s3_server: S3Server, role: str) -> None:
    """The control for the refusals above: the same probe succeeds with the right key."""
    assert s3_server.proc.cwd is not None
    tls = s3_server.proc.cwd / TLS_DIR
    assert speaks_grpc(s3_server.ports[role] + 10000, tls_context(tls / CERT, tls / KEY))


# Files: folders 0700, secrets and prompts 0600 -------------------------------------------------


def test_seaweedfs_data_folder_and_secret_files_are_private(s3_server: S3Server) -> None:
    assert s3_server.proc.cwd is not None
    data = s3_server.proc.cwd
    assert mode(data) == 0o700
    for name in (SECURITY_FILE, S3_CONFIG_FILE):
        assert mode(data / name) == 0o600, name
    assert mode(data / TLS_DIR) == 0o700
    assert sorted(p.name for p in (data / TLS_DIR).iterdir()) == sorted([CA_CERT, CERT, KEY])
    for file in (data / TLS_DIR).iterdir():  # the CA's key is gone: no more certificates
        assert mode(file) == 0o600, file
    assert s3_server.secret_key in (data / S3_CONFIG_FILE).read_text()


def test_stack_key_is_random_kept_and_private(tmp_path: Path) -> None:
    first = s3_key.for_stack(tmp_path)
    assert mode(tmp_path / s3_key.FILE) == 0o600
    assert s3_key.for_stack(tmp_path) == first  # kept across starts
    assert s3_key.for_stack(tmp_path / "other") != first  # per stack
    assert first[0] not in {k for k, _ in DEFAULT_KEYS}
    assert len(first[1]) >= 32


def test_simulator_journal_and_frames_are_private(tmp_path: Path) -> None:
    directory = tmp_path / "sim-state"
    directory.mkdir(mode=0o755)
    (directory / JOURNAL).write_bytes(b"")
    (directory / JOURNAL).chmod(0o644)  # left by an older simulator
    journal, _ = Journal.open(directory, max_jobs=10, clock=FakeClock())
    try:
        assert mode(directory) == 0o700
        assert mode(directory / FRAMES) == 0o700
        assert mode(directory / JOURNAL) == 0o600
        assert mode(directory / LOCK) == 0o600
    finally:
        journal.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackState]:
    home = tmp_path_factory.mktemp("stack") / "home"
    try:
        yield up(home, StackOptions(webhooks=False))
    finally:
        assert down(home) == []


def test_after_up_the_stack_folders_are_0700_and_its_secret_files_0600(stack: StackState) -> None:
    home = Path(stack.home)
    for folder in (home, home / "logs", home / "nats", home / "s3", home / "sim-state",
                   home / "sim-assets"):  # fmt: skip
        assert mode(folder) == 0o700, folder
    for file in (home / STATE_FILE, home / s3_key.FILE, home / "admin-token",
                 home / "s3" / SECURITY_FILE, home / "s3" / S3_CONFIG_FILE,
                 home / "s3" / TLS_DIR / KEY,
                 home / "sim-state" / JOURNAL, home / "sim-state" / LOCK):  # fmt: skip
        assert mode(file) == 0o600, file
    assert (stack.s3_access_key, stack.s3_secret_key) == s3_key.read(home)
    assert (stack.s3_access_key, stack.s3_secret_key) not in DEFAULT_KEYS


# `clipline download`: names only from validated ids, always inside DIR ------------------------


def asset(key: str = "t/2026/12/07/j/video.mp4") -> AssetRef:
    return AssetRef(
        variant="video", bucket="clipline-assets", key=key, size_bytes=4,
        sha256=hashlib.sha256(b"data").hexdigest(), content_type="video/mp4",
    )  # fmt: skip


@pytest.mark.parametrize(
    "job_id",
    ["../x", "/etc/passwd", "/tmp/x", "job_" + "b" * 31 + "/", f"../{JOB}", f"{JOB}/../../x",
     "job_" + "B" * 32, "", ".", "..", f"{JOB}\n"],
)  # fmt: skip
def test_a_bad_job_id_is_refused(tmp_path: Path, job_id: str) -> None:
    with pytest.raises(UnsafeRecord, match="not a valid job id"):
        target(tmp_path, job_id, asset())


@pytest.mark.parametrize("variant", ["../video", "/video", "video/..", "audio", ""])
def test_a_bad_variant_is_refused(tmp_path: Path, variant: str) -> None:
    with pytest.raises(UnsafeRecord, match="variant"):
        file_name(JOB, variant, "k/video.mp4")


@pytest.mark.parametrize("key", ["k/v.mp4:x", "k/v.m p4", "k/v.mp4\n", "k/v.<x>", "k/v.a\\b"])
def test_a_strange_extension_is_refused(key: str) -> None:
    with pytest.raises(UnsafeRecord, match="extension"):
        file_name(JOB, "video", key)


def test_a_good_name_lands_inside_the_folder(tmp_path: Path) -> None:
    path = target(tmp_path / "a" / ".." / "out", JOB, asset())
    assert path == (tmp_path / "out").resolve() / f"{JOB}-video.mp4"


def test_a_planted_symlink_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / f"{JOB}-video.mp4").symlink_to(tmp_path / "elsewhere.mp4")
    with pytest.raises(UnsafeRecord, match="not inside"):
        target(out, JOB, asset())


def record(job_id: str, assets: list[AssetRef]) -> dict[str, Any]:
    return {
        "job_id": job_id, "tenant": "acme", "status": "completed",
        "spec": {"model": "sora-2", "size": "1280x720", "seconds": 4, "prompt": "p"},
        "idempotency_key": "k", "request_hash": "h",
        "assets": [a.model_dump() for a in assets],
    }  # fmt: skip


def test_a_record_of_another_job_is_refused(tmp_path: Path) -> None:
    other = JobRecordV1.model_validate(record("job_" + "c" * 32, [asset()]))
    with pytest.raises(UnsafeRecord, match="not the asked job"):
        targets(other, JOB, other.assets, tmp_path)


@pytest.mark.parametrize(
    ("job_id", "key"),
    [("../x", "k/video.mp4"), ("/tmp/clipline-escape-x", "k/video.mp4"),
     (f"../{JOB}", "k/video.mp4"), (JOB, "k/video.mp4:x")],
)  # fmt: skip
def test_download_cli_refuses_a_traversing_record_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    job_id: str, key: str,
) -> None:  # fmt: skip
    """The intake (or whatever answers on its port) returns a record naming `job_id` and an
    object `key`: exit 1, a clear line, no file anywhere, S3 never asked."""
    fake = Fake(records=[record(job_id, [asset(key=key)])], job_id=JOB)

    def no_s3(_: object) -> None:
        raise AssertionError("S3 must not be asked for a refused record")

    monkeypatch.setattr(downloads, "s3_client", no_s3)
    out = tmp_path / "out"
    with serving(fake) as url:
        local = remote.Target(url, API_KEY, "test", local=tmp_path)  # as the local stack
        monkeypatch.setattr(downloads, "target", lambda *_: local)
        code = cli.main(["--home", str(tmp_path), "download", JOB, "--variant", "video",
                         "-o", str(out)])  # fmt: skip
    assert code == 1
    assert f"job {JOB}: refused, nothing written" in capsys.readouterr().err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    assert not Path("/tmp/clipline-escape-x-video.mp4").exists()


def test_download_cli_refuses_a_bad_job_id_argument_and_a_malformed_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["--home", str(tmp_path), "download", "../x", "-o", str(tmp_path)]) == 3
    assert "is not a job id" in capsys.readouterr().err

    fake = Fake(records=[{"job_id": JOB}], job_id=JOB)
    with serving(fake) as url:
        monkeypatch.setattr(downloads, "target", lambda *_: remote.Target(url, API_KEY, "test"))
        code = cli.main(["--home", str(tmp_path), "download", JOB, "-o", str(tmp_path / "out")])
    assert code == 1
    assert "not a job record" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
