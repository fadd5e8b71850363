#!/usr/bin/env bash
# RVPO on GSM8K with OpenRLHF 0.11.2, Qwen2.5-0.5B-Instruct, one GPU (colocated).
# Run from the repository root:  bash examples/openrlhf_qwen2.5_gsm8k_rvpo/run.sh [flags...]
# See README.md in this folder for what it needs.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
args=()
while read -r -a words; do
  [[ ${#words[@]} -eq 0 || ${words[0]} == \#* ]] && continue
  args+=("${words[@]}")
done < "$here/args.txt"
exec python -m rewardagg.integrations.openrlhf "${args[@]}" "$@"
