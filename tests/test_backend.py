"""The allocator setting of helpers.core.backend: large temporaries are reused, not page-faulted anew."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROBE = """
import resource, torch
import helpers.core.backend as b
x = torch.ones(2 ** 24)  # 64 MiB, above glibc's largest default mmap threshold (32 MiB)
for _ in range(3):
    (x * 2).sum()  # warm up: the heap grows once
counts = []
for _ in range(3):  # the steady state: the fewest faults of three batches (the heap may still grow once)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        (x * 2).sum()  # one 64 MiB temporary, allocated and freed
    counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(b.MALLOC_TUNED, min(counts))
"""


def _faults(env_value):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("HETBOOK_MALLOC", None)
    if env_value:
        env["HETBOOK_MALLOC"] = env_value
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True, cwd=ROOT)
    tuned, faults = out.stdout.split()
    return tuned == "True", int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_large_temporaries_are_reused_not_refaulted():
    """Batches of 20 temporaries of 64 MiB: glibc's defaults map and fault in ~16,000 fresh pages
    for each (≥ 300,000 per batch); with hetbook's setting the freed block is reused (≈ no faults
    once the heap has grown)."""
    tuned, faults = _faults(None)
    system, faults_system = _faults("system")
    assert tuned and not system
    assert faults_system > 20 * 15000  # the default really re-faults each temporary
    assert faults < 0.05 * faults_system


def test_progress_bars_go_to_the_runners_terminal(tmp_path, monkeypatch, capsys):
    """Inside a chapter run by helpers.pipeline.run, HETBOOK_PROGRESS names a file: bars are drawn there
    (not into the notebook), and the runner's follower copies them to its stderr as they grow."""
    import io

    from helpers.core import backend
    from helpers.pipeline.run import _follow

    log = tmp_path / "bars"
    log.write_text("")
    monkeypatch.delenv("HETBOOK_QUIET", raising=False)
    monkeypatch.setenv("HETBOOK_PROGRESS", str(log))
    out = io.StringIO()
    stop = _follow(log, out, interval=0.01)
    # the text bar, never tqdm.auto's: in a kernel that is the notebook widget, which ignores file=
    monkeypatch.setattr(backend, "tqdm", lambda *a, **k: pytest.fail("tqdm.auto used inside a runner's chapter"))
    bar = backend.progress(range(7), desc="GT chunks on Dask", mininterval=0)
    assert type(bar).__module__ == "tqdm.std"
    for _ in bar:
        pass
    stop()
    assert "GT chunks on Dask" in log.read_text() and "7/7" in log.read_text()
    assert "7/7" in out.getvalue() and "7/7" not in capsys.readouterr().err


def test_a_chapter_run_prints_no_kernel_noise(tmp_path, capfd):
    """The runner's kernels talk over IPC sockets: no '[IPKernelApp] WARNING | Kernel is running
    over TCP without encryption' line per chapter on the terminal (issue 34)."""
    from helpers.pipeline import run

    nb = tmp_path / "99_probe.py"
    nb.write_text('# %% tags=["parameters"]\nx = 1\n\n# %%\ny = x + 1\n')
    out = run.run_notebook(nb, {"common": {}, "notebooks": {}}, tmp_path / "out")
    assert out.is_file()
    err = capfd.readouterr().err
    assert "running over TCP" not in err and "IPKernelApp" not in err, err[-300:]


def test_the_runner_never_interrupts_a_kernel_it_shuts_down():
    """jupyter_client sends SIGINT before every shutdown; a chapter's kernel, idle by then, once
    answered with "[IPKernelApp] ERROR | KeyboardInterrupt caught in kernel." on the terminal."""
    import asyncio

    from helpers.pipeline.schedule import ipc_kernel_manager

    km = ipc_kernel_manager({})()
    km.shutting_down = True
    asyncio.run(km._async_interrupt_kernel())    # no signal: nothing to send it through
    km.shutting_down = False
    with pytest.raises(Exception):                # not shutting down: a real interrupt (no kernel here)
        asyncio.run(km._async_interrupt_kernel())
