# Sourced by scripts/test and scripts/demo: a project virtual environment, made on first use.
# torch is pinned to the CPU build that lies on this kind of machine; a plain `torch`
# requirement would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
TORCH_VERSION="${RUNNER_TORCH_VERSION:-2.13.0}"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# shellcheck disable=SC1091
source .venv/bin/activate
stamp=".venv/.runner-installed"
wanted="$(sha256sum pyproject.toml | cut -c1-16) torch==$TORCH_VERSION $*"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
  echo "setting up .venv (first run only) ..." >&2
  python -m pip install -q --upgrade pip >&2
  python -c "import torch" 2>/dev/null || python -m pip install -q "torch==$TORCH_VERSION" >&2
  python -m pip install -q -e ".[train,test]" >&2
  for extra in "$@"; do python -m pip install -q --no-deps "$extra" >&2; done
  echo "$wanted" > "$stamp"
fi
