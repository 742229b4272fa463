"""Label Studio as a local service: install into its own venv, start, stop, status.

Why a separate venv: Label Studio pins its own Django, DRF and many other versions; installed
next to the app they would fight over shared dependencies. It runs as its own process and we talk
to it over HTTP only, so it lives in `.venv-ls` at the repo root (or any path given).

Why these start flags: `--username/--password/--user-token` create the admin user and its API
token without a prompt; `--enable-legacy-api-token` keeps the simple `Authorization: Token ...`
header working (1.23 defaults to JWT personal access tokens); `SSRF_PROTECTION_ENABLED=false`
lets its webhooks call our service on 127.0.0.1. Credentials are generated once and kept in
`<home>/labelstudio/credentials.json` (mode 0600), so restarts keep the same user and token.

Beware: `label-studio --version` starts a server; nothing here calls it.

Usage (also behind `scripts/labelstudio.sh`):
    python -m childguard.review_bridge.lifecycle install|start|stop|status [--json]
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from childguard.errors import DependencyError
from childguard.settings import Settings

LABEL_STUDIO_VERSION = "1.23.2"
REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_VENV = REPO_ROOT / ".venv-ls"
PID_FILE = "labelstudio.pid"
LOG_FILE = "labelstudio.log"
CREDENTIALS_FILE = "credentials.json"


@dataclass(frozen=True)
class Credentials:
    """The Label Studio admin user and its legacy API token (generated once)."""

    username: str
    password: str
    token: str
    secret_key: str = ""  # Django SECRET_KEY, stable so browser sessions survive restarts

    @classmethod
    def load_or_create(cls, path: Path) -> Credentials:
        """Read `path`; create it (mode 0600) with fresh random credentials if missing."""
        if path.is_file():
            data = json.loads(path.read_text())
            return cls(username=data["username"], password=data["password"], token=data["token"],
                       secret_key=data.get("secret_key", ""))
        creds = cls(
            username="reviewer-admin@childguard.local",
            password=secrets.token_urlsafe(18),
            token=secrets.token_hex(20),  # DRF Token keys are 40 characters
            secret_key=secrets.token_urlsafe(48),
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(asdict(creds), fh)
        return creds


@dataclass(frozen=True)
class LabelStudioInstance:
    """Where one Label Studio lives: its venv, data dir, address and credentials."""

    data_dir: Path
    credentials: Credentials
    host: str = "127.0.0.1"
    port: int = 8080
    venv: Path = DEFAULT_VENV

    @classmethod
    def from_settings(cls, settings: Settings, *, venv: Path | None = None) -> LabelStudioInstance:
        data_dir = settings.home / "labelstudio"
        url = httpx.URL(settings.review.label_studio_url)
        return cls(
            data_dir=data_dir,
            credentials=Credentials.load_or_create(data_dir / CREDENTIALS_FILE),
            host=url.host or "127.0.0.1",
            port=url.port or 8080,
            venv=venv or DEFAULT_VENV,
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def executable(self) -> Path:
        return self.venv / "bin" / "label-studio"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / PID_FILE

    @property
    def log_file(self) -> Path:
        return self.data_dir / LOG_FILE

    # -- install ---------------------------------------------------------------------------
    def installed(self) -> bool:
        return self.executable.is_file()

    def install(self, python: str | None = None) -> None:
        """Create the venv and pip-install Label Studio into it (minutes, once)."""
        if self.installed():
            return
        py = python or _base_python()
        subprocess.run([py, "-m", "venv", str(self.venv)], check=True)
        subprocess.run(
            [str(self.venv / "bin" / "pip"), "install", "-q",
             f"label-studio=={LABEL_STUDIO_VERSION}"],
            check=True,
        )

    # -- start / stop ----------------------------------------------------------------------
    def command(self) -> list[str]:
        c = self.credentials
        return [
            str(self.executable), "start", "--no-browser",
            "--internal-host", self.host, "--port", str(self.port),
            "--data-dir", str(self.data_dir),
            "--username", c.username, "--password", c.password,
            "--user-token", c.token, "--enable-legacy-api-token",
        ]  # fmt: skip

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            SSRF_PROTECTION_ENABLED="false",
            LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK="true",
            LATEST_VERSION_CHECK="false",
            COLLECT_ANALYTICS="false",
            SENTRY_DSN="",
            FRONTEND_SENTRY_DSN="",
        )
        if self.credentials.secret_key:
            env["SECRET_KEY"] = self.credentials.secret_key
        # the child must not inherit the app venv
        env.pop("VIRTUAL_ENV", None)
        env.pop("PYTHONPATH", None)
        return env

    def pid(self) -> int | None:
        """The pid of a running server we started, or None."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        return pid

    def healthy(self, timeout: float = 2.0) -> bool:
        try:
            r = httpx.get(f"{self.url}/health", timeout=timeout)
        except httpx.HTTPError:
            return False
        return r.status_code == 200

    def start(self, *, wait_s: float = 240.0) -> int:
        """Start the server in the background (own session) and wait until /health answers."""
        if not self.installed():
            raise DependencyError(
                f"Label Studio is not installed at {self.venv}; run `scripts/labelstudio.sh "
                "install` (or `python -m childguard.review_bridge.lifecycle install`)"
            )
        running = self.pid()
        if running is not None and self.healthy():
            return running
        if running is None and self.healthy():
            raise DependencyError(
                f"something else already answers on {self.url}; stop it or choose another port"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_file, "ab")  # noqa: SIM115 - handed to the child
        try:
            proc = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=self.environment(), cwd=str(self.data_dir), start_new_session=True,
            )
        finally:
            log.close()
        self.pid_file.write_text(str(proc.pid))
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise DependencyError(
                    f"Label Studio exited with code {proc.returncode} during start; see "
                    f"{self.log_file}"
                )
            if self.healthy():
                return proc.pid
            time.sleep(1.0)
        self.stop()
        raise DependencyError(
            f"Label Studio did not answer {self.url}/health within {wait_s:.0f} s; see "
            f"{self.log_file}"
        )

    def stop(self, *, timeout: float = 20.0, kill: bool = False) -> bool:
        """Stop the server we started (its whole process group). True if one was running."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        sig = signal.SIGKILL if kill else signal.SIGTERM
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.2)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            while _alive(pid):
                time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)
        return True

    def status(self) -> dict[str, object]:
        return {
            "installed": self.installed(),
            "version": LABEL_STUDIO_VERSION,
            "venv": str(self.venv),
            "url": self.url,
            "pid": self.pid(),
            "healthy": self.healthy(),
            "data_dir": str(self.data_dir),
            "credentials_file": str(self.data_dir / CREDENTIALS_FILE),
            "log": str(self.log_file),
        }


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)  # reap if it is our child
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _base_python() -> str:
    """A Python to create the venv with: the interpreter behind the app venv."""
    return getattr(sys, "_base_executable", None) or sys.executable


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="labelstudio", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["install", "start", "stop", "status"])
    parser.add_argument("--venv", type=Path, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    settings = Settings.load()
    inst = LabelStudioInstance.from_settings(settings, venv=args.venv)
    try:
        if args.action == "install":
            inst.install()
            print(f"Label Studio {LABEL_STUDIO_VERSION} installed in {inst.venv}")
        elif args.action == "start":
            pid = inst.start()
            print(f"Label Studio running at {inst.url} (pid {pid}); log {inst.log_file}")
        elif args.action == "stop":
            print("stopped" if inst.stop() else "not running")
        else:
            st = inst.status()
            if args.json:
                print(json.dumps(st))
            else:
                for k, v in st.items():
                    print(f"{k}: {v}")
            return 0 if st["healthy"] else 3
    except DependencyError as exc:
        print(f"error (dependency unavailable): {exc}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
