#!/bin/bash
# The GPU checks of the scale work in one run, sized for ~10 min of device time: the CUDA test
# suite (every kernel's float64 reference, on the GPU), chapter 3's single GT pass against the
# GPU floor (twice: the first run writes the 23 GiB synthetic GT), and the per-stage profile.
#
#   bash benchmarks/device_check.sh [OUTDIR]          (from the repository root; OUTDIR: $OUT or /tmp/device-check)
#
# The machine needs a CUDA build of torch; wheels of anything else it lacks (mrcfile, POT, cvxpy,
# starfile …) can be put in .whl/ and are installed without dependencies into /tmp/site.
set -o pipefail
out=${1:-${OUT:-/tmp/device-check}}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/device.txt"
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD HETBOOK_DEVICE=cuda HETBOOK_QUIET=1 PYTHONUNBUFFERED=1
python3 -c "import mrcfile, ot, pandas, torch; assert torch.cuda.is_available(); print('torch', torch.__version__, torch.cuda.get_device_name())" \
  || { echo "missing packages or no CUDA: see above"; exit 1; }
timeout 300 python3 -m pytest -q -m "not slow" tests --ignore tests/test_notebooks.py -p no:cacheprovider -rf 2>&1 \
  | tee "$out/tests.log" | grep -v "^\.\+" | tail -40
for run in 1 2; do
  timeout 150 python3 benchmarks/bench_scale.py --n-gt 3000 --box 128 --fused-only --no-subspace --keep \
    --dir /tmp/hetbook-scale-gpu 2>&1 | tee -a "$out/bench_scale.log"
done
timeout 60 python3 benchmarks/profile_fused.py --n-gt 256 --box 128 --dir /tmp/hetbook-profile-gpu 2>&1 | tee "$out/profile.log"
