#!/usr/bin/env bash
# Installed size of memristor-hil's core and of each extra: a fresh venv per variant, the wheel
# installed from dist/ (run `python -m build` first), site-packages measured with du.
# Prints a Markdown table (MB of site-packages, and the packages installed).
# Usage: bash benchmarks/install_sizes.sh [core sweep export bench-emulator arc2 test]
set -euo pipefail
cd "$(dirname "$0")/.."
wheel=$(ls dist/memristor_hil-*.whl | head -1)
variants=("$@")
[ ${#variants[@]} -gt 0 ] || variants=(core sweep export bench-emulator arc2 test)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
python3 -m venv "$scratch/empty"
base=$(du -sm "$("$scratch/empty/bin/python" -c 'import site; print(site.getsitepackages()[0])')" | cut -f1)
echo "| install | MB installed | packages |"
echo "|---|---|---|"
for v in "${variants[@]}"; do
    python3 -m venv "$scratch/$v"
    spec="$wheel"; [ "$v" = core ] || spec="$wheel[$v]"
    label="memristor-hil"; [ "$v" = core ] || label="memristor-hil[$v]"
    "$scratch/$v/bin/pip" install -q "$spec" 2>/dev/null
    site=$("$scratch/$v/bin/python" -c 'import site; print(site.getsitepackages()[0])')
    mb=$(( $(du -sm "$site" | cut -f1) - base ))
    n=$("$scratch/$v/bin/pip" list --format=freeze 2>/dev/null | grep -vc "^pip=")
    echo "| \`$label\` | $mb | $n |"
    rm -rf "$scratch/$v"
done
