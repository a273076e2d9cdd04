"""One failing rank stops the whole data-parallel job, loudly and quickly:
- a rank killed with SIGKILL: mpirun ends the job, non-zero, within 60 s;
- a rank frozen with SIGSTOP (a hang): the other rank's gradient all-reduce times out
  after --parallel.timeout, it prints "castor: error: rank R: MPI all_reduce timed out ...
  group dp (rank R of 2, N bytes)" and aborts the job, non-zero, well within 60 s."""
import os
import re
import signal
import subprocess
import time

from castor_testing import castor_bin, check, finish, prep, tempdir

ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMP_NUM_THREADS="1")


def castor_children(mpirun_pid):
    out = subprocess.run(["ps", "-eo", "pid,ppid,comm"], capture_output=True, text=True).stdout.split("\n")[1:]
    rows = [line.split() for line in out if line.strip()]
    return sorted(int(p) for p, pp, comm in rows if int(pp) == mpirun_pid and comm == "castor")


def run_and_break(data, sig, extra):
    args = ["mpirun", "--oversubscribe", "-np", "2", castor_bin(), "train", "--data.train", data,
            "--model.d_model", "64", "--model.n_layers", "2", "--model.n_heads", "2", "--model.max_seq_len", "32",
            "--train.seq_len", "32", "--train.steps", "1000000", "--train.micro_batch", "4",
            "--train.log_every", "10"] + extra
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    first = p.stdout.readline()
    while first and not first.startswith("step"):
        first = p.stdout.readline()
    children = castor_children(p.pid)
    if len(children) != 2:
        p.kill()
        check(False, f"found the two ranks ({children})")
        return None, None, ""
    t0 = time.time()
    os.kill(children[1], sig)
    try:
        _, err = p.communicate(timeout=60)
        elapsed = time.time() - t0
    except subprocess.TimeoutExpired:
        p.kill()
        for c in children:
            try:
                os.kill(c, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return None, 60.0, ""
    return p.returncode, elapsed, err


with tempdir() as tmp:
    text = os.path.join(tmp, "t.txt")
    with open(text, "w") as f:
        for i in range(200):
            f.write(f"Line {i} of a small corpus for a job that will not finish.\n\n")
    data = prep(text, os.path.join(tmp, "d"), tokenizer="byte")

    rc, elapsed, _ = run_and_break(data, signal.SIGKILL, [])
    check(rc is not None and rc != 0 and elapsed < 60,
          f"kill -9 of one rank ends the job: exit {rc} after {elapsed:.1f} s")

    rc, elapsed, err = run_and_break(data, signal.SIGSTOP, ["--parallel.timeout", "3"])
    lines = [l for l in err.splitlines() if l.startswith("castor: error:")]
    check(rc is not None and rc != 0 and elapsed < 60,
          f"a frozen rank: the job aborts after the collective timeout: exit {rc} after {elapsed:.1f} s")
    check(any(re.match(r"castor: error: rank (\d): MPI all_reduce timed out after 3 s on group dp \(rank \1 of 2, "
                       r"\d+ bytes\)", l) for l in lines),
          f"the error names operation, group, rank and bytes: {lines}")
finish()
