#!/usr/bin/env bash
# RVPO on GSM8K with verl 0.9.1 (its default v1 trainer), Qwen2.5-0.5B-Instruct, one GPU.
# Run from the repository root:  bash examples/verl_qwen2.5_gsm8k_rvpo/run.sh [overrides...]
# See README.md in this folder for what it needs.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mapfile -t overrides < <(grep -v -e '^\s*#' -e '^\s*$' "$here/overrides.txt")
exec python -m rewardagg.integrations.verl "${overrides[@]}" "$@"
