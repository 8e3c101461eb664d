#!/usr/bin/env bash
# Creates (or reuses) the Python environment for vizkit and installs the checkout into it.
#
# The environment lives outside the checkout, in $VIZKIT_ENV_CACHE (default ~/.cache/vizkit),
# keyed on the Python version and the dependency list in pyproject.toml, so torch is downloaded
# once per dependency set, not once per clone. `.venv` in the checkout is a link to it.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
python=${PYTHON:-python3}
cache=${VIZKIT_ENV_CACHE:-$HOME/.cache/vizkit}

key=$("$python" - <<'PY'
import hashlib, sys, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
deps = sorted(project["dependencies"]) + sorted(project["optional-dependencies"]["test"])
text = "\n".join([sys.version.split()[0], *deps])
print(hashlib.sha256(text.encode()).hexdigest()[:16])
PY
)
env="$cache/venv-$key"

if [ ! -f "$env/.complete" ]; then
    echo "setup: building environment $env (first run downloads torch, several GB)" >&2
    rm -rf "$env"
    mkdir -p "$cache"
    "$python" -m venv "$env"
    "$env/bin/python" -m pip install --quiet --upgrade pip
    # Dependencies only; the checkout itself is installed below, editable, on every run.
    deps=$("$python" - <<'PY'
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
print("\n".join(project["dependencies"] + project["optional-dependencies"]["test"]))
PY
)
    mapfile -t dep_list <<<"$deps"
    "$env/bin/python" -m pip install --quiet "${dep_list[@]}"
    touch "$env/.complete"
fi

"$env/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e "$root"
ln -sfn "$env" "$root/.venv"
echo "setup: environment ready at $root/.venv" >&2
