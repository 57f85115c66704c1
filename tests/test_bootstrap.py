"""scripts/bootstrap as a user who is not root: apt-get goes through sudo, every time.

The commands it would run are stand-ins that record their arguments; nothing is installed.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENV = shutil.which("env") or "/usr/bin/env"


def _stub(path: Path, body: str) -> None:
    path.write_text(f"#!/bin/bash\n{body}\n")
    path.chmod(0o755)


def test_apt_runs_through_sudo_when_not_root(tmp_path: Path) -> None:
    tree = tmp_path / "project"
    (tree / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts/bootstrap", tree / "scripts")
    (tree / ".venv/bin").mkdir(parents=True)
    _stub(tree / ".venv/bin/python", "exit 0")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    # A user (uid 1000) without Java, Maven or promtool; uv is there, Go is not.
    _stub(bin_dir / "id", 'if [ "$1" = -u ]; then echo 1000; else echo "uid=1000"; fi')
    # sudo resets the environment (env_reset, its default), as the real one does.
    _stub(bin_dir / "sudo", f'echo "sudo $*" >> {log}; exec {ENV} -i PATH="$PATH" SUDO_USED=1 "$@"')
    _stub(
        bin_dir / "apt-get",
        f'echo "apt-get sudo=${{SUDO_USED:-0}} frontend=${{DEBIAN_FRONTEND:-}} $*" >> {log}',
    )
    _stub(bin_dir / "uv", "exit 0")
    for tool in ("dirname", "env"):
        (bin_dir / tool).symlink_to(shutil.which(tool) or f"/usr/bin/{tool}")
    run = subprocess.run(
        ["/bin/bash", str(tree / "scripts/bootstrap")],
        env={"PATH": str(bin_dir), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    calls = log.read_text().splitlines()
    apt = [line for line in calls if line.startswith("apt-get")]
    assert any("openjdk-17-jre-headless maven" in line for line in apt), calls
    assert any("prometheus" in line for line in apt), calls
    assert apt and all("sudo=1" in line for line in apt), calls
    installs = [line for line in apt if " install " in line]
    assert installs and all("frontend=noninteractive" in line for line in installs), calls
