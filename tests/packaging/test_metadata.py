"""What memhp declares about itself: the license text matches the declared
Apache-2.0, and the project URLs agree with the runbook base the alerts, the
dashboards and the report use (memhp/thresholds.yaml, runbooks.base_url).
test_wheel.py checks that the built wheel carries both."""

from __future__ import annotations

import tomllib
from pathlib import Path

from memhp.thresholds import runbook_base

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
# Debian's copy of the license text (base-files, on every Debian system), as published by the ASF.
DEBIAN_APACHE = Path("/usr/share/common-licenses/Apache-2.0")


def test_license_file_is_the_full_apache_2_0_text():
    assert DEBIAN_APACHE.exists(), "Debian's base-files provides the reference text"
    text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert text == DEBIAN_APACHE.read_text(encoding="utf-8")
    assert "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    assert PYPROJECT["project"]["license-files"] == ["LICENSE"]


def test_project_urls_name_the_repository_and_the_configured_runbooks():
    urls = PYPROJECT["project"]["urls"]
    assert {"Homepage", "Documentation", "Repository", "Issues", "Runbooks"} <= set(urls)
    assert all(u.startswith("https://") for u in urls.values())
    assert urls["Runbooks"] == runbook_base()
    assert runbook_base().startswith(urls["Repository"] + "/")


def test_the_report_links_findings_to_the_configured_base():
    """`memhp report` without --runbook-url links where the alerts do."""
    from memhp.report import cli

    assert runbook_base() == cli.RUNBOOK_BASE
