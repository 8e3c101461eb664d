#!/usr/bin/env bash
# Creates (or reuses) the Python environment for vizkit and installs the checkout into it.
#
# Two layers, so torch is downloaded once per dependency set and not once per clone, and no two
# clones ever share an installed `vizkit`:
#   $VIZKIT_ENV_CACHE/venv-<key>   the dependencies (default cache ~/.cache/vizkit), keyed on the
#                                  Python version, the dependency lists in pyproject.toml and the
#                                  torch build;
#   <checkout>/.venv               a small venv of this checkout: a .pth file puts the cached
#                                  dependencies on its path, and this checkout is installed into
#                                  it in editable mode (`.venv/bin/vizkit`, `.venv/bin/python`).
#
# Which torch: PyPI's (the default; on Linux a CUDA build, about 6 GB of environment in all), or,
# with --cpu (or VIZKIT_TORCH=cpu), torch's CPU-only build from its own index
# ($VIZKIT_TORCH_CPU_INDEX, default https://download.pytorch.org/whl/cpu), which must be reachable.
# The choice is part of the cache key and is remembered in the checkout's .venv, so a later plain
# run (e.g. .ci/run) keeps it; --pypi-torch (or VIZKIT_TORCH=pypi) goes back to PyPI's.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
python=${PYTHON:-python3}
cache=${VIZKIT_ENV_CACHE:-$HOME/.cache/vizkit}
quiet=(--quiet --quiet --disable-pip-version-check)  # errors only: a failing install still says why

usage() {
    cat <<'TEXT'
usage: bash scripts/setup.sh [--cpu | --pypi-torch]
  --cpu          torch and torchvision from torch's CPU-only index ($VIZKIT_TORCH_CPU_INDEX, default
                 https://download.pytorch.org/whl/cpu): no CUDA libraries, a much smaller environment
  --pypi-torch   torch and torchvision from PyPI like the other dependencies (the default; on Linux
                 a CUDA build, about 6 GB of environment in all)
The choice is remembered in this checkout's .venv; VIZKIT_TORCH=cpu or VIZKIT_TORCH=pypi sets it too.
TEXT
}
torch_build=${VIZKIT_TORCH:-}
for arg in "$@"; do
    case "$arg" in
        --cpu) torch_build=cpu ;;
        --pypi-torch) torch_build=pypi ;;
        -h | --help) usage; exit 0 ;;
        *) echo "setup: unknown option '$arg'" >&2; usage >&2; exit 2 ;;
    esac
done
choice_file="$root/.venv/vizkit-torch"  # the build this checkout's last setup chose
if [ -z "$torch_build" ]; then
    torch_build=$(cat "$choice_file" 2>/dev/null || echo pypi)
fi
case "$torch_build" in
    cpu | pypi) ;;
    *) echo "setup: VIZKIT_TORCH must be cpu or pypi, not '$torch_build'" >&2; exit 2 ;;
esac
cpu_index=${VIZKIT_TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
export VIZKIT_SETUP_TORCH="$torch_build" VIZKIT_SETUP_CPU_INDEX="$cpu_index"

key=$("$python" - <<'PY'
import hashlib, os, sys, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
deps = sorted(project["dependencies"]) + sorted(project["optional-dependencies"]["test"])
parts = [sys.version.split()[0], *deps]
if os.environ["VIZKIT_SETUP_TORCH"] == "cpu":  # a CPU environment is another environment
    parts.append("torch and torchvision from " + os.environ["VIZKIT_SETUP_CPU_INDEX"])
print(hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16])
PY
)
env="$cache/venv-$key"

if [ ! -f "$env/.complete" ]; then
    if [ "$torch_build" = cpu ]; then
        echo "setup: building the dependency environment $env (torch's CPU build from $cpu_index)" >&2
    else
        echo "setup: building the dependency environment $env (the first run downloads torch, several GB)" >&2
    fi
    rm -rf "$env"
    mkdir -p "$cache"
    "$python" -m venv "$env"
    "$env/bin/python" -m pip install "${quiet[@]}" --upgrade pip
    # one dependency a line, "torch SPEC" for torch and torchvision, "other SPEC" for the rest
    deps=$("$python" - <<'PY'
import re, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
for dep in project["dependencies"] + project["optional-dependencies"]["test"]:
    name = re.match(r"[A-Za-z0-9._-]+", dep).group().lower().replace("_", "-")
    print("torch" if name in ("torch", "torchvision") else "other", dep)
PY
)
    torch_deps=()
    other_deps=()
    while read -r kind dep; do
        if [ "$kind" = torch ]; then torch_deps+=("$dep"); else other_deps+=("$dep"); fi
    done <<<"$deps"
    if [ "$torch_build" = cpu ]; then
        "$env/bin/python" -m pip install "${quiet[@]}" --index-url "$cpu_index" "${torch_deps[@]}" || {
            echo "setup: could not install torch's CPU build from $cpu_index (is it reachable from here?" \
                "without --cpu, torch comes from PyPI)" >&2
            exit 1
        }
        "$env/bin/python" -m pip install "${quiet[@]}" "${other_deps[@]}"  # they find torch installed
    else
        "$env/bin/python" -m pip install "${quiet[@]}" "${torch_deps[@]}" "${other_deps[@]}"
    fi
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
echo "$torch_build" >"$choice_file"
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
echo "setup: environment ready at $root/.venv (dependencies from $env; torch: $torch_build build)" >&2
