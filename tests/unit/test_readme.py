"""The docs' promises: the README's first commands; the input table in docs/api.md (schema) and
the settings tables in docs/configuration.md (the settings table), generated, not restated."""

import subprocess
import sys

import pytest

from f5worker.config import settings_markdown
from f5worker.job.schema import fields_markdown
from f5worker.testing import REPO

README = (REPO / "README.md").read_text()
API = (REPO / "docs" / "api.md").read_text()


def test_first_commands_are_run_and_test():
    first_block = README.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    assert first_block[0].startswith("make run") and first_block[1].startswith("make test")


def test_input_table_matches_the_schema():
    assert fields_markdown() in API


def test_ci_runs_the_readme_test_command():
    assert "make test" in (REPO / ".ci" / "run").read_text()


def test_configuration_tables_match_the_settings_table():
    """Regenerate with `.venv/bin/python -m f5worker.config --markdown` (between the markers)."""
    doc = (REPO / "docs" / "configuration.md").read_text()
    between = doc.split("<!-- settings:begin -->\n", 1)[1].split("<!-- settings:end -->", 1)[0]
    assert between == settings_markdown() + "\n"


@pytest.mark.slow
def test_the_regenerate_command_prints_the_tables():
    printed = subprocess.run(
        [sys.executable, "-m", "f5worker.config", "--markdown"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert printed == settings_markdown() + "\n"
