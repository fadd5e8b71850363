"""Draw docs/_static/variance_penalty.png (README and docs/math.md).

One 17-reward row (seeded): left, the SoftMin against kappa between the mean and the min,
with the variance-penalty approximation mean - (kappa/2) var and the convergence radius;
right, the truncation errors of the cumulant series with their measured and expected
slopes (rewardagg.taylor.verify_expansion). Prints the verify_expansion table.

    python docs/figures/variance_penalty.py [output.png]
"""

from __future__ import annotations

import pathlib
import sys

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

from rewardagg import taylor

DEFAULT_OUT = pathlib.Path(__file__).resolve().parents[1] / "_static" / "variance_penalty.png"


def main(out: pathlib.Path = DEFAULT_OUT) -> None:
    z = np.random.default_rng(0).standard_normal(17)
    result = taylor.verify_expansion(z)
    print(result)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    taylor.plot_softmin(z, ax=axes[0])
    taylor.plot_expansion(result, ax=axes[1])
    fig.tight_layout()
    fig.savefig(out, dpi=110, metadata={"Software": None})
    print(f"wrote {out}")


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT)
