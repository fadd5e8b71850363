"""The command lines an example's README documents, as the shell would run them.

``documented_commands(readme)`` returns each command of the README's ``bash`` blocks that
starts the example (``bash examples/.../run.sh ...`` or ``python -m rewardagg...``), with
backslash continuations joined and comments removed. ``shell_argv(command)`` runs it with
``bash`` from the repository root, ``python`` on ``PATH`` being a stub that records its
arguments, and returns what ``python`` received: exactly the words ``run.sh`` builds from
``overrides.txt`` / ``args.txt`` plus the variant, after the shell's own expansion.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def documented_commands(readme: Path) -> list[str]:
    text = readme.read_text()
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = re.sub(r"(^|\s)#.*$", "", line).strip()
            if re.match(r"(bash examples/\S+/run\.sh|python -m rewardagg\.)", line):
                if "--help" not in line:
                    out.append(line)
    return out


def shell_argv(command: str) -> list[str]:
    """What ``python`` receives when bash runs ``command`` at the repository root."""
    with tempfile.TemporaryDirectory() as tmp:
        stub = Path(tmp) / "python"
        record = Path(tmp) / "argv"
        stub.write_text(f"#!/bin/sh\nprintf '%s\\0' \"$@\" > {record}\n")
        stub.chmod(0o755)
        env = {**os.environ, "PATH": f"{tmp}{os.pathsep}{os.environ.get('PATH', '')}"}
        subprocess.run(["bash", "-c", command], cwd=ROOT, env=env, check=True, timeout=60)
        return record.read_bytes().decode().split("\0")[:-1]
