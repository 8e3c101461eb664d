#!/usr/bin/env bash
# Creates (or reuses) the Python environment for vizkit and installs the checkout into it.
#
# Two layers, so torch is downloaded once per dependency set and not once per clone, and no two
# clones ever share an installed `vizkit`:
#   $VIZKIT_ENV_CACHE/venv-<key>   the dependencies (default cache ~/.cache/vizkit), keyed on the
#                                  Python version and the dependency lists in pyproject.toml;
#   <checkout>/.venv               a small venv of this checkout: a .pth file puts the cached
#                                  dependencies on its path, and this checkout is installed into
#                                  it in editable mode (`.venv/bin/vizkit`, `.venv/bin/python`).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
python=${PYTHON:-python3}
cache=${VIZKIT_ENV_CACHE:-$HOME/.cache/vizkit}
quiet=(--quiet --quiet --disable-pip-version-check)  # errors only: a failing install still says why

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
    echo "setup: building the dependency environment $env (the first run downloads torch, several GB)" >&2
    rm -rf "$env"
    mkdir -p "$cache"
    "$python" -m venv "$env"
    "$env/bin/python" -m pip install "${quiet[@]}" --upgrade pip
    deps=$("$python" - <<'PY'
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
print("\n".join(project["dependencies"] + project["optional-dependencies"]["test"]))
PY
)
    mapfile -t dep_list <<<"$deps"
    "$env/bin/python" -m pip install "${quiet[@]}" "${dep_list[@]}"
    touch "$env/.complete"
fi
# An older setup installed checkouts into the shared environment itself: take that out, or that
# checkout would shadow this one's plugins.
if "$env/bin/python" -m pip show --quiet vizkit >/dev/null 2>&1; then
    "$env/bin/python" -m pip uninstall "${quiet[@]}" --yes vizkit
fi

# The checkout's own venv (a leftover link to a shared environment is replaced).
if [ -L "$root/.venv" ] || [ ! -x "$root/.venv/bin/python" ]; then
    rm -rf "$root/.venv"
    "$python" -m venv --without-pip "$root/.venv"
fi
site_of() { "$1" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }
own_site=$(site_of "$root/.venv/bin/python")
printf 'import site; site.addsitedir(%s)\n' "'$(site_of "$env/bin/python")'" >"$own_site/_vizkit_dependencies.pth"
# pip and the checkout's editable install, with the cached environment's pip and setuptools
"$root/.venv/bin/python" -m pip install "${quiet[@]}" --no-deps --no-build-isolation -e "$root"
# the dependencies' command-line tools: ruff is a binary; the others run as modules of this venv's
# Python (their own scripts would start the cached environment's Python, which lacks this checkout)
ln -sfn "$env/bin/ruff" "$root/.venv/bin/ruff"
for tool in mypy:mypy pytest:pytest pip:pip torchrun:torch.distributed.run; do
    printf '#!/usr/bin/env bash\nexec "%s" -m %s "$@"\n' "$root/.venv/bin/python" "${tool#*:}" >"$root/.venv/bin/${tool%%:*}"
    chmod +x "$root/.venv/bin/${tool%%:*}"
done
echo "setup: environment ready at $root/.venv (dependencies from $env)" >&2
