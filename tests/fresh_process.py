"""Run Python code in a fresh interpreter that imports the same cnncy as the tests do."""
import os
import subprocess
import sys

import cnncy

# The folder holding the cnncy package under test (site-packages, or the checkout for an in-place
# build). Running there puts it first on sys.path, ahead of any uncompiled source tree.
CNNCY_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(cnncy.__file__)))


def run_python(code, env):
    """stdout of `python -c code` under environment `env`; raises if it fails."""
    done = subprocess.run([sys.executable, "-c", code], cwd=CNNCY_PARENT, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout
