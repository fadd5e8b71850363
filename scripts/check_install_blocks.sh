#!/usr/bin/env bash
# Follow the install block of each host page (docs/integrations_<host>.md, the block after
# the "install block" marker), in the order the docs give, in ONE fresh virtual environment,
# and check after each block that `pip check` is clean and that `rewardagg doctor` imports
# the adapter of every host installed so far (an earlier host broken by a later block fails).
#
#   bash scripts/check_install_blocks.sh                # trl, then verl (CPU machine)
#   bash scripts/check_install_blocks.sh openrlhf       # its own venv, on a CUDA machine
#   VENV=/tmp/x KEEP=1 bash scripts/check_install_blocks.sh trl verl
#
# pip uses its configuration as is (on this project's offline machines: the local wheel
# mirror and package proxy). trl + verl took 31 minutes on this project's shared 2-core
# machine (downloads and builds included; most of it unpacking torch, Ray and verl's deps).
# CI does not run it (it installs the hosts twice more: too slow for every push); run it
# when a page's block, a pin in .ci/run or a host version changes.
set -euo pipefail
cd "$(dirname "$0")/.."
hosts=("$@")
[[ ${#hosts[@]} -eq 0 ]] && hosts=(trl verl)
venv="${VENV:-$(mktemp -d)/venv}"
export PIP_DISABLE_PIP_VERSION_CHECK=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

block() {  # the commands of the install block of docs/integrations_$1.md
  awk '/<!-- install block:/ {found=1; next}
       found && /^```bash/ {inside=1; next}
       inside && /^```/ {exit}
       inside {print}' "docs/integrations_$1.md"
}

rm -rf "$venv"
python3 -m venv "$venv"
# shellcheck disable=SC1091
source "$venv/bin/activate"
done_hosts=()
for host in "${hosts[@]}"; do
  commands="$(block "$host")"
  [[ -n $commands ]] || { echo "docs/integrations_$host.md has no install block" >&2; exit 2; }
  echo "== $host: following docs/integrations_$host.md's install block"
  echo "$commands"
  bash -euo pipefail -c "$commands"
  done_hosts+=("$host")
  echo "== pip check"
  python -m pip check
  echo "== rewardagg doctor (${done_hosts[*]})"
  args=()
  for h in "${done_hosts[@]}"; do args+=(--host "$h"); done
  rewardagg doctor "${args[@]}"
done
echo "install blocks OK: ${done_hosts[*]} (venv: $venv)"
[[ -n ${KEEP:-} ]] || rm -rf "$venv"
