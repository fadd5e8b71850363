"""``rewardagg doctor``: import each installed host adapter and print the fix when one fails.

For every host framework (TRL, verl, OpenRLHF) that is installed, the command imports the
rewardagg modules that import the host (the adapter itself, so what a training script
would import first) and prints one line: the host's version and ``adapter imports``, or the
error and the exact fix. Independently of the imports it checks the pairs of packages that
are known to break an adapter without ``pip check`` noticing (:data:`WATCHED`): an optional
dependency that a host declares in one of its extras with a version range, installed at a
version outside it. The case that motivated the command: a newer transformers pulls Hugging
Face's ``kernels`` 0.19; installing verl's pin later downgrades transformers to 5.10, which
declares ``kernels>=0.12.0,<0.13`` in its ``kernels`` extra only, so ``pip check`` is clean
while ``import transformers``' hub-kernel code fails with ``ValueError: Either a revision or
a version must be specified``. The fix is printed as a ``pip install`` command with the
range the installed transformers itself declares.

Exit code: 0 when every installed adapter imports and no watched pair is out of range, 1
otherwise (2 for bad usage, as every command).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata
import importlib.util
import io
import sys
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

__all__ = ["HOSTS", "WATCHED", "Finding", "Host", "check_hosts", "configure", "run"]


@dataclass(frozen=True)
class Host:
    """A host framework and the rewardagg modules that import it."""

    name: str  #: the command-line name (``--host``)
    distribution: str  #: the pip distribution name
    module: str  #: the host's top-level module (looked up without importing)
    adapter_modules: tuple[str, ...]  #: imported by the check, in order
    tested: str  #: the versions the adapter is tested on
    page: str  #: the docs page with the tested install block


HOSTS: tuple[Host, ...] = (
    Host(
        "trl",
        "trl",
        "trl",
        ("rewardagg.integrations.trl",),
        "1.12 to 1.16",
        "docs/integrations_trl.md",
    ),
    Host(
        "verl",
        "verl",
        "verl",
        ("rewardagg.integrations.verl", "rewardagg.integrations.verl._adapter"),
        "0.9.1",
        "docs/integrations_verl.md",
    ),
    Host(
        "openrlhf",
        "openrlhf",
        "openrlhf",
        ("rewardagg.integrations.openrlhf", "rewardagg.integrations.openrlhf._adapter"),
        "0.11.2",
        "docs/integrations_openrlhf.md",
    ),
)

WATCHED: tuple[tuple[str, str], ...] = (("transformers", "kernels"),)
"""``(declarer, dependency)`` pairs checked against the range the installed declarer
declares for the dependency (in any of its extras): out of range breaks an import although
``pip check`` (which ignores extras that were not requested) is clean."""

#: Modules whose pip distribution has another name, for the "No module named" fix.
_DISTRIBUTIONS = {"flash_attn": "flash-attn", "yaml": "pyyaml", "sklearn": "scikit-learn"}
#: Modules that install only on a CUDA machine: the fix says so.
_GPU_ONLY = {
    "flash_attn": "flash-attn builds only with CUDA; on a CPU machine the OpenRLHF adapter "
    "cannot be imported outside the test suite (which stubs flash_attn)",
    "vllm": "vLLM installs only with CUDA",
}


@dataclass
class Finding:
    """What the check found for one host (or one watched pair, ``host=None``)."""

    host: str | None
    ok: bool
    line: str
    fixes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# -- look-ups (module-level so tests can replace them) ---------------------------------------
def installed_version(distribution: str) -> str | None:
    """The installed version of ``distribution``, ``None`` when it is not installed."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def declared_requirements(distribution: str) -> list[str]:
    """The ``Requires-Dist`` lines of the installed ``distribution`` (empty if absent)."""
    try:
        return list(importlib.metadata.requires(distribution) or [])
    except importlib.metadata.PackageNotFoundError:
        return []


def module_found(module: str) -> bool:
    """Whether ``module`` can be imported from here (looked up, not imported)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def import_module(name: str) -> object:
    """``importlib.import_module`` (a seam for the tests)."""
    return importlib.import_module(name)


# -- the checks ----------------------------------------------------------------------------
def _declared_range(declarer: str, dependency: str) -> str | None:
    """The version range ``declarer`` declares for ``dependency`` (e.g. ``>=0.12.0,<0.13``),
    from any of its requirement lines, ``None`` when it declares none."""
    try:
        from packaging.requirements import InvalidRequirement, Requirement
        from packaging.utils import canonicalize_name
    except ImportError:  # packaging comes with every host; without one there is no pair
        return None
    wanted = canonicalize_name(dependency)
    for line in declared_requirements(declarer):
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        if canonicalize_name(req.name) == wanted and str(req.specifier):
            return str(req.specifier)
    return None


def check_pairs(pairs: Iterable[tuple[str, str]] = WATCHED) -> list[Finding]:
    """One failed :class:`Finding` per watched pair whose installed dependency falls outside
    the range the installed declarer declares for it."""
    try:
        from packaging.specifiers import SpecifierSet
    except ImportError:  # packaging comes with every host; without one there is no pair
        return []
    out = []
    for declarer, dependency in pairs:
        have_declarer, have_dep = installed_version(declarer), installed_version(dependency)
        if have_declarer is None or have_dep is None:
            continue
        spec = _declared_range(declarer, dependency)
        if spec is None or SpecifierSet(spec).contains(have_dep, prereleases=True):
            continue
        out.append(
            Finding(
                host=None,
                ok=False,
                line=f"{dependency} {have_dep} is installed, but {declarer} {have_declarer} "
                f"declares {dependency}{spec} (pip check does not see it: it is an optional "
                f"dependency of {declarer})",
                fixes=[
                    f'python -m pip install "{dependency}{spec}"',
                    f"or, if nothing else needs it: python -m pip uninstall -y {dependency}",
                ],
            )
        )
    return out


def _fixes_for(host: Host, err: BaseException, pair_fixes: list[str]) -> list[str]:
    """The fix for an adapter import that raised ``err``."""
    if isinstance(err, ModuleNotFoundError) and err.name:
        top = err.name.split(".")[0]
        if top in _GPU_ONLY:
            return [_GPU_ONLY[top]]
        dist = _DISTRIBUTIONS.get(top, top.replace("_", "-"))
        return [f"python -m pip install {dist}  (then run rewardagg doctor again)"]
    if pair_fixes:  # e.g. kernels out of transformers' range: its import error is opaque
        return pair_fixes
    if isinstance(err, ImportError) and "pip install" in str(err):
        return ["the message above says how (the adapter's version check)"]
    return [
        f"follow the install block of {host.page} in a fresh virtual environment "
        f"(tested: {host.name} {host.tested})"
    ]


def check_host(host: Host, pair_findings: Sequence[Finding] = ()) -> Finding:
    """Import ``host``'s adapter modules; a :class:`Finding` with the version and the fix."""
    if not module_found(host.module):
        return Finding(host.name, True, f"{host.name}: not installed (see {host.page})")
    version = installed_version(host.distribution) or "?"
    caught: list[warnings.WarningMessage] = []
    stderr = io.StringIO()
    try:
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stderr(stderr):
            warnings.simplefilter("always")
            for name in host.adapter_modules:
                import_module(name)
    except Exception as err:  # any import-time failure is what the check is for
        message = str(err).strip().splitlines()[-1] if str(err).strip() else ""
        fixes = _fixes_for(host, err, [f for p in pair_findings for f in p.fixes])
        return Finding(
            host.name,
            False,
            f"{host.name} {version}: adapter import failed: {type(err).__name__}: {message}",
            fixes=fixes,
        )
    notes = sorted(
        {str(w.message).splitlines()[0] for w in caught if "rewardagg" in str(w.message)}
    )
    return Finding(
        host.name,
        True,
        f"{host.name} {version}: adapter imports (tested: {host.tested})",
        notes=notes,
    )


def check_hosts(names: Sequence[str] | None = None) -> list[Finding]:
    """The watched pairs, then one :class:`Finding` per host (all, or those ``names``)."""
    pairs = check_pairs()
    hosts = [h for h in HOSTS if names is None or h.name in names]
    return [*pairs, *(check_host(h, pairs) for h in hosts)]


def report(findings: Sequence[Finding], write: Callable[[str], object]) -> None:
    for f in findings:
        write(("ok    " if f.ok else "FAIL  ") + f.line)
        for note in f.notes:
            write(f"      note: {note}")
        for fix in f.fixes:
            write(f"      fix: {fix}")


# -- the command ---------------------------------------------------------------------------
DESCRIPTION = """\
Import each installed host adapter (TRL, verl, OpenRLHF) and print, for each, its version
and "adapter imports", or the error and the exact command that fixes it. Also checks the
optional dependencies that break an adapter without pip check noticing (Hugging Face's
kernels package outside the range the installed transformers declares: transformers < 5.11
with kernels >= 0.13). Exit code 0 when everything imports, 1 otherwise. Importing a host
takes seconds (torch, transformers).
"""


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--host",
        action="append",
        choices=[h.name for h in HOSTS],
        default=None,
        help="check only this host (repeatable; default: every installed one)",
    )


def run(args: argparse.Namespace) -> int:
    from rewardagg._version import __version__

    print(f"rewardagg {__version__} (Python {sys.version.split()[0]})")
    findings = check_hosts(args.host)
    report(findings, print)
    failed = [f for f in findings if not f.ok]
    print("all installed adapters import" if not failed else f"{len(failed)} problem(s) found")
    return 1 if failed else 0
