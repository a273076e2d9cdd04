"""Bad input to the castor executable: each case must exit non-zero with exactly one
line on stderr, "castor: error: rank 0: ...", naming the file or option at fault."""
import os
import shutil

import h5py
import numpy as np

from castor_testing import check, finish, prep, run, tempdir

with tempdir() as tmp:
    text = os.path.join(tmp, "tiny.txt")
    with open(text, "w") as f:
        for i in range(200):
            f.write(f"In the beginning was verse number {i}, and it was good.\n\n")
    good = prep(text, os.path.join(tmp, "good"), tokenizer="byte")
    shard = os.path.join(good, "shard-00000.h5")
    base = ["train", "--data.train", shard, "--model.d_model", "32", "--model.n_layers", "1",
            "--model.n_heads", "2", "--model.max_seq_len", "32", "--train.seq_len", "16",
            "--train.steps", "2", "--train.micro_batch", "2"]

    def expect_error(name, args, *needles):
        p = run(args, check=False)
        lines = [l for l in p.stderr.splitlines() if l.strip()]
        ok = p.returncode != 0 and len(lines) == 1 and lines[0].startswith("castor: error: rank 0: ")
        ok = ok and all(n in lines[0] for n in needles)
        check(ok, f"{name}: exit {p.returncode}, stderr {lines!r}")

    # The good configuration trains (the baseline the bad cases are edits of).
    p = run(base, check=False)
    check(p.returncode == 0 and "done: 2 steps" in p.stdout, f"baseline trains: {p.stderr.strip()}")

    # Under mpirun: one rank trains; a layout that does not fit is refused before any work.
    import subprocess
    from castor_testing import castor_bin
    mpi_env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMP_NUM_THREADS="1")
    p = subprocess.run(["mpirun", "--oversubscribe", "-np", "1", castor_bin()] + base, capture_output=True,
                       text=True, env=mpi_env, timeout=120)
    check(p.returncode == 0 and "done: 2 steps" in p.stdout, f"trains under mpirun -np 1: {p.stderr.strip()[-300:]}")
    p = subprocess.run(["mpirun", "--oversubscribe", "-np", "2", castor_bin()] + base + ["--parallel.dp", "3"],
                       capture_output=True, text=True, env=mpi_env, timeout=120)
    check(p.returncode != 0 and "castor: error: rank" in p.stderr and "dp=3" in p.stderr and "2" in p.stderr,
          f"mpirun -np 2 with --parallel.dp 3 is refused naming the layout (exit {p.returncode}): "
          f"{p.stderr.strip()[:300]}")
    # Invalid tensor/expert-parallel layouts: one line per rank naming the option, before any work.
    moe = ["--model.moe_experts", "4", "--model.moe_top_k", "2"]
    layouts = [
        ("tp not dividing the heads", 4, ["--parallel.tp", "4", "--model.vocab_size", "384"],
         "--parallel.tp 4 does not divide --model.n_heads (2)"),
        ("tp not dividing the vocabulary", 2, ["--parallel.tp", "2"],
         "--parallel.tp 2 does not divide the vocabulary (257 rows): pad it, e.g. --model.vocab_size 384"),
        ("sequence parallelism with rows not splitting", 2,
         ["--parallel.tp", "2", "--model.vocab_size", "384", "--parallel.sequence_parallel", "true",
          "--train.micro_batch", "1", "--train.seq_len", "15"], "does not divide the 15 token rows"),
        ("ep not dividing the experts", 3, ["--parallel.ep", "3"] + moe,
         "--parallel.ep 3 does not divide --model.moe_experts (4)"),
        ("ep not dividing dp", 2, ["--parallel.ep", "4"] + moe, "ep must divide dp"),
        ("ep on a dense model", 2, ["--parallel.ep", "2"], "--parallel.ep 2 needs an MoE model"),
    ]
    for name, ranks, extra, needle in layouts:
        p = subprocess.run(["mpirun", "--oversubscribe", "-np", str(ranks), castor_bin()] + base + extra,
                           capture_output=True, text=True, env=mpi_env, timeout=120)
        lines = [l for l in p.stderr.splitlines() if l.startswith("castor: error: rank")]
        check(p.returncode != 0 and len(lines) >= 1 and all(needle in l for l in lines),
              f"{name} is refused (exit {p.returncode}): {p.stderr.strip()[:300]}")

    expect_error("negative lr", base + ["--optim.lr=-0.001"], "--optim.lr must be positive")
    expect_error("heads not dividing d_model", base + ["--model.n_heads", "3"],
                 "--model.n_heads (3) must divide --model.d_model (32)")
    expect_error("seq_len above max positions", base + ["--train.seq_len", "64"],
                 "--train.seq_len (64) exceeds --model.max_seq_len (32)")
    expect_error("unknown option", base + ["--train.bogus", "1"], "train.bogus")
    expect_error("bad value type", base + ["--train.steps", "ten"], "train.steps")
    expect_error("unknown family", base + ["--model.family", "bert"], "--model.family", "bert")
    expect_error("missing config", base + ["--config", os.path.join(tmp, "nope.ini")], "nope.ini")
    ini = os.path.join(tmp, "bad.ini")
    with open(ini, "w") as f:
        f.write("[model]\nd_modle = 64\n")
    expect_error("unknown key in config", base + ["--config", ini], "bad.ini", "d_modle")
    expect_error("missing data", base + ["--data.train", os.path.join(tmp, "missing.h5")], "missing.h5")
    expect_error("vocab too small", base + ["--model.vocab_size", "100"], "--model.vocab_size (100)")

    garbage = os.path.join(tmp, "garbage.h5")
    with open(garbage, "w") as f:
        f.write("this is not an HDF5 file\n" * 100)
    expect_error("not HDF5", base + ["--data.train", garbage], "garbage.h5")

    truncated = os.path.join(tmp, "truncated.h5")
    with open(shard, "rb") as f:
        data = f.read()
    with open(truncated, "wb") as f:
        f.write(data[: len(data) // 2])
    expect_error("truncated shard", base + ["--data.train", truncated], "truncated.h5")

    empty = os.path.join(tmp, "empty.h5")
    open(empty, "w").close()
    expect_error("empty file", base + ["--data.train", empty], "empty.h5")

    wrong_schema = os.path.join(tmp, "schema2.h5")
    shutil.copy(shard, wrong_schema)
    with h5py.File(wrong_schema, "r+") as f:
        f.attrs["schema_version"] = np.bytes_("2.0")
    expect_error("unknown schema major", base + ["--data.train", wrong_schema], "schema2.h5", "2.0")

    bad_ids = os.path.join(tmp, "bad_ids.h5")
    shutil.copy(shard, bad_ids)
    with h5py.File(bad_ids, "r+") as f:
        tokens = f["text/tokens"]
        tokens[3] = 300  # byte tokenizer: vocab 257
    # verify reads every token; training checks the ids of each window it reads.
    expect_error("verify: token id >= vocab", ["data", "verify", bad_ids],
                 "bad_ids.h5: dataset /text/tokens: id 300 >= vocab_size 257 at index 3")
    with h5py.File(bad_ids, "r+") as f:
        f["text/tokens"][:] = 300
    expect_error("train: token id >= vocab", base + ["--data.train", bad_ids], "bad_ids.h5", "300")

    wrong_format = os.path.join(tmp, "other.h5")
    with h5py.File(wrong_format, "w", libver="v110") as f:
        f.create_dataset("x", data=np.arange(10))
    expect_error("HDF5 but not a shard", base + ["--data.train", wrong_format], "other.h5")

    expect_error("unknown command", ["frobnicate"], "unknown command 'frobnicate'")
    expect_error("unknown prep pipeline", ["prep", "video"], "unknown prep pipeline 'video'")
    expect_error("prep missing input", ["prep", "text", "--input", os.path.join(tmp, "no.txt"), "--out", tmp],
                 "no.txt")
    expect_error("unknown tokenizer", ["prep", "text", "--tokenizer", "sentencepiece", "--input", text,
                                       "--out", os.path.join(tmp, "x")], "sentencepiece")
    expect_error("resume without out_dir", base + ["--train.resume"], "--train.resume")
    expect_error("unknown device", base + ["--train.device", "tpu"], "--train.device tpu")
    expect_error("bf16 on the cpu backend", base + ["--train.precision", "bf16"],
                 "--train.precision bf16 needs --train.device cuda")
    if shutil.which("nvidia-smi") is None:  # a machine without a GPU (or a build without CUDA)
        expect_error("cuda without a device", base + ["--train.device", "cuda"], "CUDA")

    # A model without an image adapter refuses shards with images.
    fm = "/usr/share/datasets/fashion-mnist/t10k-"
    classes = os.path.join(os.environ["CASTOR_SOURCE_DIR"], "data", "fashion-mnist", "classes.txt")
    run(["prep", "images", "--idx-images", fm + "images-idx3-ubyte.gz", "--idx-labels", fm + "labels-idx1-ubyte.gz",
         "--class-names", classes, "--limit", "50", "--tokenizer", "byte", "--out", os.path.join(tmp, "img"),
         "--quiet"])
    expect_error("train on image shards", base + ["--data.train", os.path.join(tmp, "img")],
                 "shard-00000.h5: has 50 images, but this model takes no image input")
    # Adapters and MoE settings that cannot work with the data or at all (28x28 grey images).
    img = base + ["--data.train", os.path.join(tmp, "img")]
    expect_error("patch not dividing the images", img + ["--model.image_patch", "5"],
                 "shard-00000.h5: image 0 is 28x28, not a multiple of the patch size 5")
    expect_error("patch grid larger than the table", img + ["--model.image_patch", "7", "--model.image_grid", "2"],
                 "span up to 4 patches", "--model.image_grid (2)")
    expect_error("channels differ", img + ["--model.image_patch", "7", "--model.image_channels", "3"],
                 "images have 1 channels but --model.image_channels is 3")
    expect_error("top-k above experts", base + ["--model.moe_experts", "2", "--model.moe_top_k", "3"],
                 "--model.moe_top_k (3) must be between 1 and --model.moe_experts (2)")
    expect_error("negative capacity", base + ["--model.moe_experts", "2", "--model.moe_capacity", "-1"],
                 "--model.moe_capacity (-1)")
    expect_error("moe_every above layers", base + ["--model.moe_experts", "2", "--model.moe_every", "2"],
                 "--model.moe_every (2)")
    expect_error("distill without teacher", base + ["--loss.distill", "1"], "--loss.distill needs --loss.teacher")
    expect_error("negative loss weight", base + ["--loss.contrastive=-1"], "--loss.contrastive must be >= 0")
    expect_error("mask ratio 1", base + ["--loss.mask_ratio", "1"], "--loss.mask_ratio must be in [0, 1)")
    # A teacher whose vocabulary differs, and fine-tuning from a checkpoint of another shape.
    other = os.path.join(tmp, "other_vocab")
    run(base + ["--model.vocab_size", "300", "--train.out_dir", other])
    teacher = os.path.join(other, "step_00000002.h5")
    expect_error("teacher vocabulary differs", base + ["--loss.distill", "1", "--loss.teacher", teacher],
                 "step_00000002.h5: teacher vocabulary 300 differs from the model's")
    expect_error("init_from another shape", base + ["--model.vocab_size", "300", "--model.d_model", "64",
                                                    "--train.init_from", teacher],
                 "step_00000002.h5: checkpoint has --model.d_model = 32 but the run has 64")
    expect_error("resume and init_from", base + ["--train.out_dir", other, "--train.resume", "--train.init_from",
                                                 teacher], "--train.init_from")

    for cmd in (["--help"], ["train", "--help"], ["prep", "text", "--help"], ["prep", "images", "--help"],
                ["prep", "audio", "--help"], ["prep", "mix", "--help"], ["prep", "--help"], ["data", "--help"],
                ["data", "inspect", "--help"], ["data", "verify", "--help"], ["tokenize", "--help"]):
        p = run(cmd, check=False)
        check(p.returncode == 0 and "Usage" in p.stdout, f"castor {' '.join(cmd)} prints usage")
    p = run(["train", "--help"], check=False)
    check("--optim.lr" in p.stdout and "0.0006" in p.stdout or "6e-04" in p.stdout,
          "train --help shows options with defaults")

finish()
