"""The package's public surface: documented names, lazy imports, version, command line."""

from __future__ import annotations

import subprocess
import sys

import pytest

import cortex

DOCUMENTED_PUBLIC_NAMES = {"Engine", "Fleet", "SamplingParams", "translate", "__version__"}


def test_all_matches_the_documented_public_names():
    assert set(cortex.__all__) == DOCUMENTED_PUBLIC_NAMES
    for name in cortex.__all__:
        assert getattr(cortex, name) is not None


def test_unknown_attribute_raises_attribute_error():
    with pytest.raises(AttributeError, match="NotAThing"):
        cortex.NotAThing  # noqa: B018


def test_dir_lists_the_public_names():
    assert set(dir(cortex)) >= DOCUMENTED_PUBLIC_NAMES


def _imported_modules_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_import_cortex_does_not_import_torch():
    modules = _imported_modules_after("import cortex")
    assert "torch" not in modules


def test_gateway_side_imports_do_not_import_torch():
    modules = _imported_modules_after("import cortex; cortex.translate; cortex.Fleet; import cortex.cli")
    assert "torch" not in modules


def test_sampling_params_do_not_import_torch():
    modules = _imported_modules_after("import cortex; cortex.SamplingParams(max_tokens=4)")
    assert "torch" not in modules


def test_version_command():
    out = subprocess.run(
        [sys.executable, "-m", "cortex.cli", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"cortex {cortex.__version__}"
