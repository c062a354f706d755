"""The package as users install it: the wheel in a fresh venv, and the container image.

The container test builds the Dockerfile with podman on a debian:bookworm-slim base
made here with debootstrap (no registry is reachable), runs it against the simulated
API, and checks health, the non-root user and a delivered alert. Where podman or
debootstrap is missing it skips with the reason; .ci/run installs both.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import venv
from pathlib import Path

import aiohttp
import pytest

from dialwatch.simulators.dial import DialSimulator
from tests.conftest import API_KEY
from tests.servers import WebhookReceiver, free_port

REPO = Path(__file__).parent.parent
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dialwatch-tests"
BASE_IMAGE = "docker.io/library/debian:bookworm-slim"
RULES = """
channels:
  oncall: "{webhook}"
defaults:
  notify: [oncall]
rules:
  - name: wallet-low
    kind: balance_below
    threshold: "$50.00"
"""


async def run(*args: str, timeout: float = 600, env: dict[str, str] | None = None) -> str:
    """Run a command; fail the test with its output if it exits non-zero."""
    process = await asyncio.create_subprocess_exec(
        *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout)
    text = out.decode(errors="replace")
    assert process.returncode == 0, (
        f"{' '.join(args[:4])}... exited {process.returncode}:\n{text[-3000:]}"
    )
    return text


async def wait_for_health(url: str, timeout: float = 120) -> None:
    async with asyncio.timeout(timeout), aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.5)


@pytest.mark.timeout(600)
async def test_wheel_installs_in_a_fresh_venv_and_checks(
    tmp_path: Path, dial: DialSimulator, webhook: WebhookReceiver
) -> None:
    """The built wheel carries everything: installed alone, `dialwatch check` alerts."""
    await run(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)
    )
    wheel = next(tmp_path.glob("dialwatch-*.whl"))
    venv.create(tmp_path / "venv", with_pip=True)
    python = str(tmp_path / "venv" / "bin" / "python")
    await run(python, "-m", "pip", "install", "-q", str(wheel))
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.format(webhook=webhook.url))
    dial.account.balance_cents = 4000

    process = await asyncio.create_subprocess_exec(
        str(tmp_path / "venv" / "bin" / "dialwatch"), "check",
        env={"PATH": os.environ["PATH"], "DIALWATCH_API_KEY": API_KEY,
             "DIALWATCH_BASE_URL": dial.base_url, "DIALWATCH_RULES": str(rules),
             "DIALWATCH_STATE": str(tmp_path / "state.db")},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 1  # something fires
    assert (
        "dial: FIRING   warning  wallet-low: wallet balance $40.00 is below $50.00" in out.decode()
    )
    assert webhook.titles == ["[WARNING] dial / wallet-low: wallet balance $40.00 is below $50.00"]
    # The demo's simulators and rules are in the wheel too (what `pip install .` gets).
    await run(python, "-I", "-c", "import dialwatch.demo, dialwatch.simulators.mifumo")
    # So is the documented example `dialwatch init --example` prints.
    example = await run(str(tmp_path / "venv" / "bin" / "dialwatch"), "init", "--example")
    assert example == (REPO / "dialwatch" / "rules" / "example.yaml").read_text()


def _container_tools_missing() -> str | None:
    for tool in ("podman", "debootstrap", "runc"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (.ci/run installs podman, runc and debootstrap)"
    if os.geteuid() != 0:
        return "building the debootstrap base image needs root"
    return None


@pytest.mark.skipif(_container_tools_missing() is not None, reason=str(_container_tools_missing()))
@pytest.mark.timeout(1500)
async def test_container_image_builds_runs_as_non_root_and_alerts(
    tmp_path: Path, dial: DialSimulator, webhook: WebhookReceiver
) -> None:
    """podman builds the Dockerfile; the container gets healthy, checks and alerts as uid 10001."""
    # podman keeps the runroot in its database (so it must not change) and wants it short.
    podman = ["podman", "--root", str(CACHE / "podman"), "--runroot", "/tmp/dialwatch-podman",
              "--storage-driver", "vfs"]  # fmt: skip
    images = await run(*podman, "images", "--format", "{{.Repository}}:{{.Tag}}")
    if BASE_IMAGE not in images:
        rootfs = tmp_path / "rootfs"
        await run("debootstrap", "--variant=minbase", "bookworm", str(rootfs),
                  "http://deb.debian.org/debian", timeout=900)  # fmt: skip
        tarball = tmp_path / "rootfs.tar"
        await run("tar", "-C", str(rootfs), "-cf", str(tarball), ".")
        await run(*podman, "import", str(tarball), BASE_IMAGE)
    build = [*podman, "build", "--isolation", "chroot", "--pull=never", "--format", "docker"]
    # This machine's CA bundle (it trusts the egress proxy), for the build's pip only.
    candidates = [os.environ.get(name, "") for name in ("PIP_CERT", "SSL_CERT_FILE")]
    bundles = [
        c for c in [*candidates, "/etc/ssl/certs/ca-certificates.crt"] if c and Path(c).is_file()
    ]
    if bundles:
        build += ["--secret", f"id=ca,src={bundles[0]}"]
    await run(*build, "-t", "localhost/dialwatch:test", str(REPO), timeout=900)

    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.format(webhook=webhook.url))
    rules.chmod(0o644)
    port = free_port()
    dial.account.balance_cents = 4000
    name = f"dialwatch-test-{port}"
    await run(
        *podman, "run", "-d", "--name", name, "--network", "host", "--runtime", "runc",
        # As deploy/kubernetes runs it: a read-only root, writing only /data and /tmp.
        "--read-only",  # with podman's default tmpfs on /tmp, /var/tmp and /run
        "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=1000:1000",
        "-e", f"DIALWATCH_API_KEY={API_KEY}", "-e", f"DIALWATCH_BASE_URL={dial.base_url}",
        "-e", f"DIALWATCH_LISTEN=127.0.0.1:{port}", "-e", "DIALWATCH_INTERVAL=1s",
        "-v", f"{rules}:/config/rules.yaml:ro", "localhost/dialwatch:test",
    )  # fmt: skip
    try:
        await wait_for_health(f"http://127.0.0.1:{port}/healthz")
        async with asyncio.timeout(30):
            while not webhook.received:
                await asyncio.sleep(0.2)
        assert webhook.titles == [
            "[WARNING] dial / wallet-low: wallet balance $40.00 is below $50.00"
        ]
        assert (await run(*podman, "exec", name, "id", "-u")).strip() == "10001"
        # The build's CA secret was mounted for pip only: nothing of it is in the image.
        leftovers = await run(*podman, "exec", name, "sh", "-c", "ls /run/secrets; env")
        assert "ca" not in leftovers.split()
        assert "PIP_CERT" not in leftovers
        assert "ok" in await run(*podman, "exec", name, "dialwatch", "healthcheck")
        await run(*podman, "stop", "-t", "10", name)
        state = await run(*podman, "inspect", "--format", "{{.State.ExitCode}}", name)
        assert state.strip() == "0"  # SIGTERM: a clean stop
        logs = await run(*podman, "logs", name)
        assert '"event": "service.stopped"' in logs
        assert API_KEY not in logs
    finally:
        await run(*podman, "rm", "-f", name)
