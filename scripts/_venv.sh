# Sourced by the other scripts: make sure .venv exists at the repo root with torch and wibergian.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import torch, wibergian" 2>/dev/null; then
    echo "[wibergian] creating $VENV (torch==2.13.0 CPU, then the package)" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q "torch==2.13.0"
    "$VENV/bin/pip" install -q -e "$ROOT[test]"
fi
export PATH="$VENV/bin:$PATH"
