#!/usr/bin/env bash
# Installs everything vlalign needs into a virtual environment: the Debian packages the
# ffcv build links against and the SLURM cluster that tests/test_slurm.py brings up, then the
# Python packages from pyproject.toml.
set -euo pipefail
venv="${1:-.venv}"
system_packages=(libopencv-dev libturbojpeg0-dev pkg-config
    # A one-node SLURM cluster with accounting (sacct, and the executor plugin's job status).
    slurm-wlm munge slurmdbd mariadb-server)

missing=()
for pkg in "${system_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        echo "setup: installing system packages: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "setup: missing system packages; run this, then run setup again:" >&2
        echo "    sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
fi

[[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
"${pip[@]}" install -q --upgrade pip wheel setuptools
# torch and numpy first: ffcv's C extension is built against them without build isolation.
"${pip[@]}" install -q "torch>=2.4" "torchvision>=0.19" "numpy>=2.0" numba
"${pip[@]}" install -q --no-build-isolation ffcv==1.0.2
"${pip[@]}" install -q -e ".[dev]"
"$venv/bin/python" -c "import ffcv, torch, timm, mlflow, snakemake; print('setup: ok, torch', torch.__version__)"
