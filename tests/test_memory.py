"""cnncy._memory: glibc malloc tuning at import, and the ways a process opts out."""
import os
import sys

import pytest

from cnncy._memory import malloc_tuned
from fresh_process import run_python

CHECK = "import cnncy, cnncy._memory as m; print(m.malloc_tuned())"


def tuned_in_fresh_process(**env_changes):
    env = dict(os.environ, **env_changes)
    return run_python(CHECK, env).strip() == "True"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_import_tunes_malloc_on_linux():
    assert malloc_tuned()


@pytest.mark.parametrize("variable, value", [("CNNCY_MALLOC_TUNING", "0"),
                                             ("MALLOC_MMAP_THRESHOLD_", "131072"),
                                             ("MALLOC_TRIM_THRESHOLD_", "131072")])
def test_a_process_can_keep_its_own_malloc_settings(variable, value):
    assert not tuned_in_fresh_process(**{variable: value})
