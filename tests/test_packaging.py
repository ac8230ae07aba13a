"""Packaging: the wheel maps the top-level folders into autolr.*; import autolr stays light."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_autolr_is_light() -> None:
    code = (
        "import sys, autolr, autolr.searchers, autolr.predictors, autolr.integrations\n"
        "import autolr.stn, autolr.federated\n"
        "heavy = ['ray', 'optuna', 'lightning', 'pytorch_lightning', 'transformers',\n"
        "         'openai', 'anthropic', 'httpx', 'requests', 'matplotlib', 'sklearn']\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize(
    ("module", "framework", "extra"),
    [
        ("autolr.integrations.ray", "ray", "ray"),
        ("autolr.integrations.optuna", "optuna", "optuna"),
        ("autolr.integrations.lightning", "lightning", "lightning"),
        ("autolr.integrations.transformers", "transformers", "transformers"),
        ("autolr.integrations.flower", "flwr", "flower"),
    ],
)
def test_integration_without_its_framework_names_the_extra(
    module: str, framework: str, extra: str
) -> None:
    # Simulate a machine without the framework: a None entry in sys.modules blocks the import.
    code = (
        "import sys\n"
        f"sys.modules[{framework!r}] = None\n"
        "try:\n"
        f"    import {module}\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert f'pip install "autolr[{extra}]"' in out.stdout, out.stdout + out.stderr


def test_llm_searcher_without_openai_names_the_extra() -> None:
    # openai loads only when a client is built (import autolr.searchers stays light).
    code = (
        "import sys\n"
        "sys.modules['openai'] = None\n"
        "from autolr.searchers import LLMSearcher, Param\n"
        "try:\n"
        "    LLMSearcher([Param('lr', 1e-4, 1.0, log=True)], base_url='http://127.0.0.1:9/v1',"
        " model='m')\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert 'pip install "autolr[llm]"' in out.stdout, out.stdout + out.stderr


def test_missing_extra_names_it() -> None:
    from autolr.integrations import require

    with pytest.raises(ImportError, match=r'pip install "autolr\[nothere\]"'):
        require("autolr_no_such_module", "nothere")


@pytest.mark.slow
def test_wheel_contains_mapped_packages(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("autolr", "searchers", "predictors", "integrations", "benchmarks"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    dist = tmp_path / "dist"
    built = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist)],
        cwd=src,
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (wheel,) = dist.glob("autolr-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for required in (
        "autolr/__init__.py",
        "autolr/py.typed",
        "autolr/searchers/__init__.py",
        "autolr/predictors/__init__.py",
        "autolr/integrations/__init__.py",
        "autolr/bench/__init__.py",
        "autolr/stn/__init__.py",
        "autolr/federated/__init__.py",
        "autolr/federated/data/digits.npz",  # the simulator's bundled data
    ):
        assert required in names
    assert not any(
        n.startswith(("searchers/", "predictors/", "integrations/", "benchmarks/")) for n in names
    )
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    # Import from the unpacked wheel (ahead of the editable install on sys.path).
    code = (
        "import autolr, autolr.searchers, autolr.predictors, autolr.integrations\n"
        "for m in (autolr, autolr.searchers, autolr.predictors, autolr.integrations):\n"
        "    print(m.__file__)\n"
        "print(autolr.AutoLRS.__name__, autolr.searchers.GPSearcher.__name__,\n"
        "      autolr.predictors.ExponentialPredictor.__name__)\n"
        "import autolr.federated as fed\n"
        "print(fed.load_digits()[0].shape)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
    )
    files = out.stdout.strip().splitlines()[:4]
    assert all(f.startswith(str(site)) for f in files), files


def test_editable_install_maps_packages() -> None:
    import autolr.integrations
    import autolr.predictors
    import autolr.searchers

    assert Path(autolr.searchers.__file__).parent == ROOT / "searchers"
    assert Path(autolr.predictors.__file__).parent == ROOT / "predictors"
    assert Path(autolr.integrations.__file__).parent == ROOT / "integrations"


def test_console_script_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "autolr", "demo", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--device" in out.stdout
