#!/usr/bin/env bash
# Release check: build the sdist and the wheel, validate their metadata with twine, install
# the wheel into a brand-new virtual environment (numpy is its only dependency: no torch),
# and smoke-test the import and the command line from there.
#
#   bash scripts/check_wheel.sh            # artefacts in a temp dir, removed at exit
#   KEEP_DIST=dist bash scripts/check_wheel.sh   # keep the built files in ./dist
#
# Needs `build` and `twine` in the Python that runs it (the `dev` extra); PYTHON picks the
# interpreter (default: python). The isolated build fetches hatchling, and the clean venv
# fetches numpy, from the package index.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/rewardagg-wheel.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
DIST="$WORK/dist"

echo "== build (sdist + wheel)"
"$PY" -m build --outdir "$DIST" .
ls -l "$DIST"
shopt -s nullglob
wheels=("$DIST"/rewardagg-*.whl)
sdists=("$DIST"/rewardagg-*.tar.gz)
if [[ ${#wheels[@]} -ne 1 || ${#sdists[@]} -ne 1 ]]; then
    echo "expected exactly one wheel and one sdist in $DIST" >&2
    exit 1
fi

echo "== twine check"
"$PY" -m twine check --strict "$DIST"/*

echo "== wheel contents"
"$PY" - "${wheels[0]}" <<'PYEOF'
import sys
import zipfile

names = zipfile.ZipFile(sys.argv[1]).namelist()
need = [
    "rewardagg/__init__.py",
    "rewardagg/py.typed",
    "rewardagg/cli/__init__.py",
    "rewardagg/demo/data/default_run.csv",
    "rewardagg/demo/data/neglect_run.csv",
    "rewardagg/demo/data/default_seeds.csv",
]
missing = [n for n in need if n not in names]
stray = [n for n in names if n.startswith(("tests/", "docs/", "notebooks/", "benchmarks/"))]
if missing or stray:
    sys.exit(f"wheel: missing {missing}, unexpected {stray}")
print(f"{len(names)} files; has {', '.join(need)}; no tests/docs/notebooks/benchmarks")
PYEOF

echo "== sdist contents"
# The sdist is built from the working tree: anything untracked and not ignored by git (test
# leftovers, scratch files) would ship in it. Fail on such files unless told not to.
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    "$PY" - "${sdists[0]}" "${SDIST_ALLOW_UNTRACKED:-0}" <<'PYEOF'
import subprocess
import sys
import tarfile

with tarfile.open(sys.argv[1]) as tar:
    names = {m.name.split("/", 1)[1] for m in tar.getmembers() if m.isfile() and "/" in m.name}
tracked = set(subprocess.run(["git", "ls-files"], capture_output=True, text=True,
                             check=True).stdout.splitlines())
extra = sorted(n for n in names - tracked if n != "PKG-INFO")
print(f"{len(names)} files, {len(extra)} not tracked by git")
for n in extra[:20]:
    print("  untracked:", n)
if extra and sys.argv[2] != "1":
    sys.exit("the sdist would ship files that git does not track (remove or ignore them, or "
             "set SDIST_ALLOW_UNTRACKED=1)")
PYEOF
fi

echo "== clean venv, install the wheel (numpy only)"
"$PY" -m venv "$WORK/venv"
VPY="$WORK/venv/bin/python"
"$VPY" -m pip install -q --disable-pip-version-check "${wheels[0]}"
"$VPY" -m pip list --disable-pip-version-check --format=freeze

echo "== smoke: import"
# Run from the temp dir so that ./src of this checkout cannot shadow the installed wheel.
(
    cd "$WORK"
    "$VPY" - <<'PYEOF'
import sys

import rewardagg

assert "site-packages" in rewardagg.__file__, rewardagg.__file__
heavy = sorted({"torch", "scipy", "matplotlib", "triton", "numba", "trl", "verl"} & set(sys.modules))
assert not heavy, f"import rewardagg imported {heavy}"
adv = rewardagg.softmin_advantages([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]], group_size=2)
assert adv.shape == (4,), adv
print("rewardagg", rewardagg.__version__, "from", rewardagg.__file__)
print("methods:", ", ".join(rewardagg.available_methods()))
PYEOF
    echo "== smoke: rewardagg --help"
    "$WORK/venv/bin/rewardagg" --help
    "$WORK/venv/bin/rewardagg" --version
    echo "== smoke: rewardagg demo --quick --no-plot (numpy only, from the wheel)"
    "$WORK/venv/bin/rewardagg" demo --quick --no-plot --out "$WORK/demo-quick" | tail -n 3
    test -s "$WORK/demo-quick/demo.csv"
)

if [[ -n "${KEEP_DIST:-}" ]]; then
    mkdir -p "$KEEP_DIST"
    cp "$DIST"/* "$KEEP_DIST"/
    echo "kept: $(ls "$KEEP_DIST")"
fi
echo "check_wheel: OK"
