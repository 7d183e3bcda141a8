"""Static checks of every Python file in the repository: no undefined name, unused import or
shadowed definition (pyflakes). Tools and examples run only by hand or on a GPU machine are
covered too: a name error there would otherwise surface hours into a study."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_pyflakes_finds_nothing():
    done = subprocess.run([sys.executable, "-m", "pyflakes", "megatron_redi", "tools", "tests", "examples", "setup.py"],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0 and not done.stdout, done.stdout + done.stderr


def test_pyflakes_would_see_an_undefined_name(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    return plateau\n")
    done = subprocess.run([sys.executable, "-m", "pyflakes", str(bad)], capture_output=True, text=True)
    assert done.returncode != 0 and "undefined name 'plateau'" in done.stdout
