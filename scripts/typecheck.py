"""Run mypy on the ``distil`` package as it installs, straight from the source folders, and on scripts/*.py.

The stages live in top-level folders (build/, cli/, ...) that install as ``distil.build``,
``distil.cli``, ... via setuptools' package-dir; mypy cannot follow the editable-install import
hook, so this lays out the same mapping as symlinks under .setuptools-build/typecheck and checks it.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import tomllib
from mypy import api

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    tree = ROOT / ".setuptools-build" / "typecheck"
    shutil.rmtree(tree, ignore_errors=True)
    for package, folder in sorted(mapping.items()):
        link = tree.joinpath(*package.split("."))
        link.parent.mkdir(parents=True, exist_ok=True)
        if package == "distil":
            link.mkdir(exist_ok=True)
            for item in (ROOT / folder).iterdir():
                (link / item.name).symlink_to(item)
        else:
            link.symlink_to(ROOT / folder, target_is_directory=True)
    os.environ["MYPYPATH"] = str(tree)
    config = ["--config-file", str(ROOT / "pyproject.toml"), *sys.argv[1:]]
    # The package, then the benchmark scripts against it (mypy takes a package or files, not both).
    scripts = [str(path) for path in sorted((ROOT / "scripts").glob("*.py"))]
    status = 0
    for target in (["-p", "distil"], scripts):
        stdout, stderr, code = api.run(config + target)
        sys.stdout.write(stdout.replace(f"{tree.relative_to(ROOT)}/", ""))
        sys.stderr.write(stderr)
        status = status or code
    return status


if __name__ == "__main__":
    raise SystemExit(main())
