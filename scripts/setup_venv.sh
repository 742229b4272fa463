#!/usr/bin/env bash
# Create the app venv (if missing) and install childguard with its CPU model stack.
# torch 2.14.1 + torchvision 0.29.1 come from the local wheel store (pip takes them from this machine's wheel store; README, "Models").
set -euo pipefail
PYTHON=${PYTHON:-python3.11}
VENV=${VENV:-.venv}
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q -U pip setuptools wheel
echo "== installing childguard (first time: torch from disk, llama-cpp-python builds ~8 min)"
# llama-cpp-python builds llama.cpp from source. Its default (GGML_NATIVE) compiles for this
# CPU, including Intel AMX where the CPU reports it; under this VM the AMX kernels die with a
# general protection fault on the first decode (seen on a Sapphire Rapids host, 2026-12-04).
# Build a portable AVX2 library instead; an existing AMX build is rebuilt below.
LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
export CMAKE_ARGS="${CMAKE_ARGS:-$LLAMA_CMAKE_ARGS}"
"$VENV/bin/python" -m pip install -q -e '.[dev,weights]'
if "$VENV/bin/python" -c "import llama_cpp, sys; sys.exit('AMX_INT8 = 1' not in llama_cpp.llama_print_system_info().decode())"; then
  echo "== rebuilding llama-cpp-python without AMX"
  llama=$("$VENV/bin/python" -m pip show llama-cpp-python | awk '/^Version:/{print $2}')
  "$VENV/bin/python" -m pip install -q --no-cache-dir --force-reinstall --no-deps "llama-cpp-python==$llama"
fi
# nudenet and rapidocr pull both opencv-python and opencv-python-headless, which install the
# same cv2 module over each other; keep only the headless one.
if "$VENV/bin/python" -m pip show -q opencv-python >/dev/null 2>&1; then
  headless=$("$VENV/bin/python" -m pip show opencv-python-headless | awk '/^Version:/{print $2}')
  "$VENV/bin/python" -m pip uninstall -q -y opencv-python
  "$VENV/bin/python" -m pip install -q --force-reinstall --no-deps "opencv-python-headless==$headless"
fi
"$VENV/bin/python" -c "import cv2, torch, torchvision, open_clip, llama_cpp; print('== venv ready: torch', torch.__version__, 'cv2', cv2.__version__)"
