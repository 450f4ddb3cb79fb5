"""cnncy's OpenMP wait policy: a short spin by default, the user's own setting when given."""
import os

from fresh_process import run_python

PROBE = "import os, cnncy; print(os.environ.get('GOMP_SPINCOUNT'), os.environ.get('OMP_WAIT_POLICY'))"


def run_probe(**overrides):
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    env.update(overrides)
    return run_python(PROBE, env).split()


def test_short_spin_by_default():
    assert run_probe() == ["3000", "None"]


def test_users_wait_policy_is_left_alone():
    assert run_probe(OMP_WAIT_POLICY="active") == ["None", "active"]
    assert run_probe(GOMP_SPINCOUNT="5") == ["5", "None"]
