#!/usr/bin/env bash
# Install everything speedrun needs: the system libraries ffcv compiles against, torch, the package.
#   bash scripts/setup.sh            (PYTHON=python3.11 to pick the interpreter, TORCH_VERSION to pin torch)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}

# ffcv builds a C extension against OpenCV and libjpeg-turbo, found through pkg-config.
have_libs() { command -v pkg-config >/dev/null && pkg-config --exists opencv4 libturbojpeg; }
if ! have_libs; then
  if command -v apt-get >/dev/null; then
    SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
    echo "setup: installing OpenCV, libjpeg-turbo and pkg-config with apt-get (ffcv compiles against them)"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libopencv-dev libturbojpeg0-dev pkg-config >/dev/null
  fi
  if ! have_libs; then
    cat >&2 <<'MSG'
setup: ffcv needs OpenCV 4 and libjpeg-turbo visible to pkg-config, and they were not found.
  Debian/Ubuntu:  sudo apt-get install libopencv-dev libturbojpeg0-dev pkg-config
  conda:          conda install -c conda-forge opencv libjpeg-turbo pkg-config compilers
                  (then: export PKG_CONFIG_PATH=$CONDA_PREFIX/lib/pkgconfig)
  Check with:     pkg-config --exists opencv4 libturbojpeg && echo found
MSG
    exit 1
  fi
fi

# Pin torch first: an unpinned torch (asked for by ffcv or us) would pull the newest, several GB, build.
if ! "$PYTHON" -c "import torch" 2>/dev/null; then
  "$PYTHON" -m pip install -q "torch==$TORCH_VERSION"
fi
"$PYTHON" -m pip install -q -e ".[test]"
# airbench, the reference trainer, without the torchvision it asks for: it imports torchvision for one
# transform, which speedrun.reference stands in for where no torchvision build matches this torch (a CPU
# build of torch, here); with it, the tests train airbench on the CPU too.
"$PYTHON" -m pip install -q --no-deps "airbench==0.1.8"
# ffcv's own __version__ is stale (1.0.2 says 0.0.3rc1): print the installed distribution's version.
"$PYTHON" -c "import ffcv, fastargs, torch; from importlib.metadata import version; print('setup: ready, torch', torch.__version__, '| ffcv', version('ffcv'), '| cuda', torch.cuda.is_available())"
