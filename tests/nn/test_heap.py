"""fxsnn.nn._heap: the glibc malloc tuning of spike mode is applied once, and can be switched off."""

import platform
import subprocess
import sys

CODE = """
import torch, fxsnn
from fxsnn.nn import _heap
from fxsnn.nn import TimeExpand
assert _heap._STATE is None
TimeExpand(2, 'rate')(torch.zeros(1, 3))
assert _heap._STATE is None  # rate mode leaves malloc alone
TimeExpand(2, 'spike')(torch.zeros(1, 3))
print(_heap._STATE)
"""


def _run(env_value):
    import os

    env = dict(os.environ)
    if env_value is not None:
        env["FXSNN_KEEP_BUFFERS"] = env_value
    return subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True, check=True)


def test_spike_mode_tunes_malloc_once_and_the_switch_turns_it_off():
    on = _run(None).stdout.strip().splitlines()[-1]
    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert on == str(glibc)  # a no-op off glibc
    assert _run("0").stdout.strip().splitlines()[-1] == "False"
