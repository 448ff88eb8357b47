"""The web application's vendored front-end libraries are the ones scripts/vendor-frontend.sh pins:
every file vendor.json lists is there and not empty, each VERSION names the pinned version, every
licence is one the project accepts, and CodeMirror's import map resolves every bare import of the
vendored ES modules to a vendored file (a page needs nothing from a CDN or a bundler)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "vendor-frontend.sh"
VENDOR = ROOT / "src" / "crmflow" / "web" / "static" / "vendor"
URL_PREFIX = "/static/web/vendor/"
PERMISSIVE = {"MIT", "ISC", "0BSD", "BSD-2-Clause", "BSD-3-Clause", "Apache-2.0"}
# MPL-2.0 (file-level copyleft) is accepted for axe-core only: it is loaded by browser tests.
MPL_ALLOWED = {"axe-core"}
# The files a page loads, by library (the web templates refer to these paths).
PAGE_FILES = {
    "htmx.org": "htmx/htmx.min.js",
    "@picocss/pico": "pico/pico.min.css",
    "mermaid": "mermaid/mermaid.min.js",
    "chart.js": "chartjs/chart.umd.min.js",
    "axe-core": "axe-core/axe.min.js",
    "codemirror": "codemirror/codemirror/index.js",
    "@codemirror/lang-yaml": "codemirror/@codemirror/lang-yaml/index.js",
}
BARE_IMPORT = re.compile(r"""^\s*(?:import|export)\b[^'";]*?from\s*['"]([^'".][^'"]*)['"]""", re.M)


def script_pins() -> list[tuple[str, str, str]]:
    """(npm name, version, directory) for each line of the script's WEB_PINS array."""
    block = re.search(r"^WEB_PINS=\((.*?)^\)", SCRIPT.read_text(), re.S | re.M)
    assert block, f"{SCRIPT} has no WEB_PINS=( ... ) array"
    pins = [tuple(line.split()) for line in re.findall(r'^\s*"([^"]+)"', block.group(1), re.M)]
    assert pins and all(len(pin) == 3 for pin in pins), pins
    return [(name, version, directory) for name, version, directory in pins]


def manifest() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VENDOR / "vendor.json").read_text())
    return data


def test_the_manifest_lists_exactly_the_pinned_packages() -> None:
    listed = [(p["name"], p["version"], p["dir"]) for p in manifest()["packages"]]
    assert listed == script_pins(), "re-run scripts/vendor-frontend.sh after changing a pin"


@pytest.mark.parametrize("package", manifest()["packages"], ids=lambda p: p["name"])
def test_each_package_files_licence_and_version_are_vendored(package: dict[str, Any]) -> None:
    for name in package["files"]:
        path = VENDOR / name
        assert path.is_file(), f"{path} listed in vendor.json is missing"
        assert path.stat().st_size > 0, f"{path} is empty"
    directory = package["dir"]
    assert f"{directory}/LICENSE" in package["files"]
    version_file = VENDOR / directory / "VERSION"
    assert version_file.read_text() == f"{package['name']} {package['version']}\n"
    licence = package["licence"]
    assert licence in PERMISSIVE or (licence == "MPL-2.0" and package["name"] in MPL_ALLOWED), (
        f"{package['name']} is licensed {licence}"
    )


def test_the_files_pages_load_are_vendored() -> None:
    files = {p["name"]: p["files"] for p in manifest()["packages"]}
    for name, path in PAGE_FILES.items():
        assert path in files[name], f"{path} is not vendored for {name}"
    # mermaid's browser build is one file that defines the global a plain <script> page calls.
    assert 'globalThis["mermaid"]' in (VENDOR / "mermaid/mermaid.min.js").read_text()[-2000:]
    assert re.search(r"prefers-color-scheme:\s*dark", (VENDOR / "pico/pico.min.css").read_text())


def test_the_import_map_resolves_every_bare_import_of_the_vendored_modules() -> None:
    data = manifest()
    importmap_path = VENDOR / data["importmap"]
    imports: dict[str, str] = json.loads(importmap_path.read_text())["imports"]
    vendored = {name for p in data["packages"] for name in p["files"]}
    for specifier, url in imports.items():
        assert url.startswith(URL_PREFIX), f"{specifier} maps to {url}, outside {URL_PREFIX}"
        assert url.removeprefix(URL_PREFIX) in vendored, f"{specifier} maps to unvendored {url}"
    modules = [VENDOR / url.removeprefix(URL_PREFIX) for url in imports.values()]
    for module in modules:
        for specifier in BARE_IMPORT.findall(module.read_text()):
            assert specifier in imports, f"{module} imports {specifier!r}, absent from the map"


def test_the_recorded_csp_hash_is_the_import_maps_hash() -> None:
    data = manifest()
    digest = hashlib.sha256((VENDOR / data["importmap"]).read_bytes()).digest()
    assert data["importmap_csp_source"] == "sha256-" + base64.b64encode(digest).decode()
