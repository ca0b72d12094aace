# Sourced by scripts/test and scripts/demo: a project virtual environment, made on first use.
# torch is pinned to the CPU build that lies on this kind of machine; a plain `torch`
# requirement would pull a multi-GB CUDA build.
#
# .venv/.runner-installed records what is installed: the first two words say which pyproject.toml
# and torch the environment was made for (a change to either sets it up again); every further word is
# an extra package one of the scripts asked for (the demo's model). An extra is added once and kept,
# so the demo and the tests, run one after the other, never set up each other's environment again.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
TORCH_VERSION="${RUNNER_TORCH_VERSION:-2.13.0}"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# shellcheck disable=SC1091
source .venv/bin/activate
stamp=".venv/.runner-installed"
wanted="$(sha256sum pyproject.toml | cut -c1-16) torch==$TORCH_VERSION"
recorded=()
if [ -f "$stamp" ]; then
  read -r -a recorded <<<"$(tr '\n' ' ' <"$stamp")"
fi
if [ "${recorded[*]:0:2}" != "$wanted" ]; then
  echo "setting up .venv (first run only) ..." >&2
  python -m pip install -q --upgrade pip >&2
  python -c "import torch" 2>/dev/null || python -m pip install -q "torch==$TORCH_VERSION" >&2
  python -m pip install -q -e ".[train,test]" >&2
  echo "$wanted" > "$stamp"
  recorded=("$wanted")
fi
for extra in "$@"; do
  if [[ " ${recorded[*]:2} " != *" $extra "* ]]; then
    echo "adding $extra to .venv ..." >&2
    python -m pip install -q --no-deps "$extra" >&2
    echo "$extra" >> "$stamp"
  fi
done
