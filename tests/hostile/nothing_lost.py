"""What the hostile-input tests share: a command run as its user runs it (a program of
megatron_redi.commands in this process, through its ``main`` and the one entry wrapper; a script of
the checkout's tools/ in a process of its own), and a snapshot of what lies on disk, to show that a
refused command lost nothing and left nothing that looks finished."""

import hashlib
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def script(name: str, timeout: float = 60):
    """tools/NAME.py, a script of this checkout, as a ``main``: it runs in a process of its own and
    its output is passed on (a refusal comes in seconds; ``timeout`` stops one that went to work)."""

    def main(argv) -> int:
        done = subprocess.run([sys.executable, os.path.join(ROOT, "tools", f"{name}.py"), *argv], capture_output=True,
                              text=True, timeout=timeout)
        sys.stdout.write(done.stdout)
        sys.stderr.write(done.stderr)
        return done.returncode

    return main


def refused(main, *args, capsys) -> str:
    """Run ``main(args)``; it must exit 2 with one line on stderr, which is returned (argparse's
    own refusals, of an option's value, come after its usage line, as every CLI's do)."""
    capsys.readouterr()
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:  # argparse
        code = e.code
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert code == 2 and ": error: argument " in err, err
        return err
    err = capsys.readouterr().err.strip()
    assert code == 2, f"exit {code}, stderr: {err}"
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def snapshot(*paths) -> dict:
    """Every file under ``paths``: its content's digest (hidden temporaries included)."""
    out = {}
    for top in map(str, paths):
        files = [top] if os.path.isfile(top) else [os.path.join(d, f) for d, _, names in os.walk(top) for f in names]
        for path in files:
            with open(path, "rb") as f:
                out[path] = hashlib.sha256(f.read()).hexdigest()
    return out
