"""Shared helpers for the Python tests: locating the castor binary, running it, and
making small real shards from the King James Bible (or a bundled fallback text)."""
import glob
import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_tool(env_var, target):
    """A test-only executable: $env_var if set, else the newest build*/tests/<target>."""
    env = os.environ.get(env_var)
    if env:
        if not os.access(env, os.X_OK):
            sys.exit(f"{env_var}={env} is not an executable file")
        return env
    found = sorted(glob.glob(os.path.join(REPO, "build*", "tests", target)), key=os.path.getmtime, reverse=True)
    found = [f for f in found if os.access(f, os.X_OK)]
    if not found:
        sys.exit(f"{target} not found: set {env_var} or build it (cmake --build build --target {target})")
    return found[0]


def castor_bin():
    path = os.environ.get("CASTOR_BIN") or os.path.join(REPO, "build", "bin", "castor")
    if not os.path.exists(path):
        sys.exit(f"castor binary not found at {path} (build first or set CASTOR_BIN)")
    return path


def run(args, check=True, env=None, timeout=900, ranks=None):
    """Runs castor with args, under `mpirun -np ranks` when ranks is given; returns
    CompletedProcess (text mode)."""
    full_env = dict(os.environ)
    full_env.setdefault("OMP_NUM_THREADS", "1")
    cmd = [castor_bin()] + list(args)
    if ranks is not None:
        full_env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
        cmd = ["mpirun", "--oversubscribe", "-np", str(ranks)] + cmd
    if env:
        full_env.update(env)
    p = subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=timeout)
    if check and p.returncode != 0:
        sys.exit(f"castor {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def kjv_text(out_dir):
    """Writes train.txt / val.txt of the KJV with scripts/kjv.sh; returns their paths."""
    subprocess.run(["bash", os.path.join(REPO, "scripts", "kjv.sh"), out_dir], check=True,
                   capture_output=True)
    return os.path.join(out_dir, "train.txt"), os.path.join(out_dir, "val.txt")


def prep(text_path, out_dir, tokenizer="gpt2", extra=()):
    run(["prep", "text", "--tokenizer", tokenizer, "--input", text_path, "--out", out_dir, "--quiet",
         *extra])
    return out_dir


def tempdir():
    return tempfile.TemporaryDirectory(prefix="castor-test-")


failures = []


def check(cond, message):
    """Records a failure (printed at the end) instead of stopping at the first."""
    print(("ok   " if cond else "FAIL ") + message)
    if not cond:
        failures.append(message)


def finish():
    if failures:
        print(f"{len(failures)} failed")
        sys.exit(1)
    print("all passed")
