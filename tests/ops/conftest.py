"""Real servers for the operations tests, installed and started by the tests themselves.

- ``postgres``: a PostgreSQL server from Debian's ``postgresql`` package (apt-installed when
  ``initdb`` is missing), in a temporary data directory on a free loopback port, run as the
  ``postgres`` user when the tests run as root, password authentication; stopped at the end.
- ``s3_server``: moto's S3-compatible server on a free loopback port, with a bucket.
- ``chromium``: Debian's ``chromium`` binary (apt-installed when missing).

An install that cannot finish (no registry, not root) skips the dependent tests with the
reason instead of hanging: every subprocess has a timeout.
"""

from __future__ import annotations

import glob
import logging
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from .ops_data import free_port

APT_TIMEOUT_S = 300
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


def apt_install(*packages: str) -> str | None:
    """Install Debian packages; returns None on success or the reason it could not."""
    if shutil.which("apt-get") is None:
        return "apt-get is not available; install " + " ".join(packages) + " yourself"
    if os.geteuid() != 0:
        return "not root; install " + " ".join(packages) + " with apt-get (sudo) first"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
    deadline = time.monotonic() + APT_TIMEOUT_S
    for step in (None, ["apt-get", "update", "-q"]):
        try:
            if step:
                subprocess.run(step, env=env, capture_output=True, check=True,
                               timeout=max(10.0, deadline - time.monotonic()))
            subprocess.run(cmd, env=env, capture_output=True, check=True,
                           timeout=max(10.0, deadline - time.monotonic()))
            return None
        except subprocess.TimeoutExpired:
            return f"apt-get timed out after {APT_TIMEOUT_S}s installing {' '.join(packages)}"
        except subprocess.CalledProcessError as exc:
            reason = (exc.stderr or b"").decode(errors="replace").strip().splitlines()[-1:]
    return f"apt-get could not install {' '.join(packages)}: {' '.join(reason)}"


# --- PostgreSQL ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    user: str
    password: str
    db_name: str

    @property
    def env(self) -> dict[str, str]:
        """The variables deploy/dagster.postgres.yaml reads."""
        return {"DAGSTER_PG_HOST": self.host, "DAGSTER_PG_PORT": str(self.port),
                "DAGSTER_PG_USER": self.user, "DAGSTER_PG_PASSWORD": self.password,
                "DAGSTER_PG_DB": self.db_name}

    @contextmanager
    def cursor(self, autocommit: bool = True):
        """A cursor on a fresh connection, closed afterwards."""
        import psycopg2

        conn = psycopg2.connect(host=self.host, port=self.port, user=self.user,
                                password=self.password, dbname=self.db_name, connect_timeout=10)
        conn.autocommit = autocommit
        try:
            with conn.cursor() as cur:
                yield cur
        finally:
            conn.close()


def postgres_bindir() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if found:
        return os.path.dirname(found[-1])
    initdb = shutil.which("initdb")
    return os.path.dirname(os.path.realpath(initdb)) if initdb else None


def _as_postgres_user(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    if shutil.which("runuser"):
        return ["runuser", "-u", "postgres", "--", *cmd]
    return ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(cmd)]


@pytest.fixture(scope="session")
def postgres():
    bindir = postgres_bindir()
    if bindir is None:
        reason = apt_install("postgresql")
        bindir = postgres_bindir()
        if bindir is None:
            pytest.skip(f"PostgreSQL is not installed: {reason}")
    base = Path(tempfile.mkdtemp(prefix="geoscout-pg-"))
    data, sock, log = base / "data", base / "sock", base / "server.log"
    sock.mkdir()
    password = secrets.token_hex(16)
    (base / "pw").write_text(password)
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
        for p in (sock, base / "pw"):
            shutil.chown(p, "postgres")
    port = free_port()
    run = {"capture_output": True, "text": True, "timeout": 120}
    subprocess.run(_as_postgres_user(
        [f"{bindir}/initdb", "-D", str(data), "-U", "geoscout", f"--pwfile={base / 'pw'}",
         "-A", "scram-sha-256", "-E", "UTF8", "--no-sync"]), check=True, **run)
    opts = (f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={sock} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
    started = subprocess.run(_as_postgres_user(
        [f"{bindir}/pg_ctl", "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o", opts,
         "start"]), check=False, **run)
    if started.returncode != 0:
        text = log.read_text() if log.exists() else started.stderr
        shutil.rmtree(base, ignore_errors=True)
        pytest.fail(f"PostgreSQL did not start: {text[-2000:]}")
    server = Postgres("127.0.0.1", port, "geoscout", password, "postgres")
    try:
        with server.cursor() as cur:
            cur.execute("CREATE DATABASE dagster_ops_test")
        yield Postgres("127.0.0.1", port, "geoscout", password, "dagster_ops_test")
    finally:
        subprocess.run(_as_postgres_user(
            [f"{bindir}/pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop"]), check=False,
            **run)
        shutil.rmtree(base, ignore_errors=True)


# --- S3-compatible server --------------------------------------------------------------------

# moto accepts any credentials; clients read them from the environment as in production.
S3_ENV = {"AWS_ACCESS_KEY_ID": "geoscout-test", "AWS_SECRET_ACCESS_KEY": "not-a-secret",
          "AWS_DEFAULT_REGION": "us-east-1"}


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    bucket: str


@pytest.fixture(scope="session")
def s3_server():
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        import boto3

        boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
                     aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
                     region_name=S3_ENV["AWS_DEFAULT_REGION"]).create_bucket(Bucket="geoscout-ops")
        yield S3Server(endpoint, "geoscout-ops")
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """Credentials and endpoint in the environment, as a deployment sets them; per test."""
    for key, value in S3_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server.endpoint_url)
    return s3_server


# --- Chromium --------------------------------------------------------------------------------

def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="session")
def chromium():
    path = chromium_path()
    if path is None:
        reason = apt_install("chromium", "fonts-dejavu-core")
        path = chromium_path()
        if path is None:
            pytest.skip(f"Chromium is not installed: {reason}")
    return path


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
