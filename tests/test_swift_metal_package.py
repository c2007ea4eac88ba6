"""The Metal host target inside the Swift package: `[backends.swift] metal = true` plus
`[backends.metal] out` = the Swift package folder gives one SwiftPM package with both
libraries; on Linux the Metal target compiles to nothing (`#if canImport(Metal)`)."""
from __future__ import annotations

import subprocess

from gradforge import cli

from conftest import copy_example, require_tool


def test_swift_package_with_the_metal_target_builds(tmp_path):
    swift = require_tool("swift")
    project = copy_example("trend", tmp_path)
    folder = project.parent
    text = project.read_text().replace('precision = "float64"', 'precision = "float32"')
    text = text.replace("[backends.swift]", '[backends.swift]\nmetal = true\n\n'
                        '[backends.metal]\nout = "build/swift/Trend"')
    project.write_text(text)
    assert cli.main(["build", str(project), "--backend", "swift", "--backend", "metal"]) == 0
    package = folder / "build" / "swift" / "Trend"
    manifest = (package / "Package.swift").read_text()
    assert '.library(name: "TrendMetal", targets: ["TrendMetal"])' in manifest
    assert (package / "Sources" / "TrendMetal" / "TrendMetalTrainer.swift").exists()
    assert (package / ".gradforge-swift.manifest").exists()
    assert (package / ".gradforge-metal.manifest").exists()
    # rebuilding one backend must not delete the other's files (separate manifests)
    assert cli.main(["build", str(project), "--backend", "swift"]) == 0
    assert (package / "Sources" / "TrendMetal" / "TrendMetalTrainer.swift").exists()
    result = subprocess.run([swift, "build", "--package-path", str(package),
                             "--scratch-path", str(tmp_path / "scratch"),
                             "--product", "TrendMetal"],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
