"""Packaging: the wheel builds, installs into a fresh venv (with only its declared dependencies)
and imports there; the framework adapters import nothing of their frameworks until used."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]

CHECK = textwrap.dedent("""
    import sys
    import herald_client
    from herald_client import AsyncPublisher, Client, Publisher, verify_signature
    import herald_client.integrations
    assert "site-packages" in herald_client.__file__, herald_client.__file__
    assert not any(m.split(".")[0] in ("langchain_core", "langgraph", "agents") for m in sys.modules)
    try:
        import herald_client.integrations.langchain
    except ImportError as e:
        assert 'pip install "herald-client[langchain]"' in str(e), e
    else:
        raise AssertionError("langchain-core is not installed: the import must fail clearly")
    from herald_client.integrations import openai_agents  # its framework is imported only when run
    assert "agents" not in sys.modules
    print("ok", herald_client.__version__)
    """)


def test_wheel_installs_into_a_fresh_venv_and_imports(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            "-w",
            str(dist),
            str(PROJECT),
        ],
        check=True,
    )
    (wheel,) = dist.glob("herald_client-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for f in (
        "herald_client/__init__.py",
        "herald_client/py.typed",
        "herald_client/integrations/langchain.py",
        "herald_client/integrations/openai_agents.py",
    ):
        assert f in names, f"{f} missing from {wheel.name}"
    assert not any(n.startswith("tests/") for n in names)

    venv = tmp_path / "venv"
    # A bare venv (no pip of its own, which is slow to set up): this venv's pip installs into it.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python), "--disable-pip-version-check"]
    subprocess.run([*pip, "install", "--quiet", str(wheel)], check=True)
    out = subprocess.run([str(python), "-c", CHECK], check=True, capture_output=True, text=True, cwd=tmp_path)
    assert out.stdout.strip() == "ok 0.1.0"
