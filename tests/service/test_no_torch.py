"""The service must import and run without torch (its image stays slim)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_service_imports_without_torch() -> None:
    # A None entry in sys.modules makes any `import torch` raise ImportError.
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import pkgutil, importlib, service\n"
        "for m in pkgutil.walk_packages(service.__path__, 'service.'):\n"
        "    importlib.import_module(m.name)\n"
        "print('ok')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_runtime_dependencies_exclude_torch() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = project["dependencies"] + project["optional-dependencies"]["cpu"]
    runtime += project["optional-dependencies"]["gpu"]
    assert not [d for d in runtime if d.lower().startswith("torch")]
    # An open torch range pulls a multi-GB CUDA build on a CPU machine: training pins it.
    assert "torch==2.13.0" in project["optional-dependencies"]["train"]
