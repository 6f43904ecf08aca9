#!/usr/bin/env bash
# A Python with PyNaCl (Ed25519 from PyPI) for tests/settlement/check.py, in a virtual environment
# under the cache directory (made once, reused). Prints CRASHFLEET_PYTHON=<its python> last.
set -euo pipefail
cache="${CRASHFLEET_CACHE_DIR:-$HOME/.cache/crashfleet}"
# Pinned: the checker is an outside implementation; its library changes only when we say so.
pynacl_version=1.6.2
env_dir="$cache/pyenv-pynacl-$pynacl_version"
if ! "$env_dir/bin/python" -c 'import nacl.signing' >/dev/null 2>&1; then
  rm -rf "$env_dir"
  python3 -m venv "$env_dir" >&2
  "$env_dir/bin/pip" install --quiet --disable-pip-version-check "pynacl==$pynacl_version" >&2
fi
echo "CRASHFLEET_PYTHON=$env_dir/bin/python"
