"""Run ``python -m seglab ARGS`` in forked children of one process that imported the
heavy libraries once.

A fresh ``python -m seglab`` spends 5-7 s importing torch, torchvision, Lightning and
torchmetrics before it does anything; the test suite runs the CLI about forty times.
This server imports them once, then for each request forks a child, which sets the
working directory, environment, ``sys.argv`` and standard streams as a fresh process
would have them, runs the ``seglab`` module as ``__main__`` and exits with the code a
fresh interpreter would (``SystemExit``, or 1 and the traceback), after the atexit
handlers. Nothing in the parent runs a thread pool before forking: it only imports.

Protocol, one JSON object per line: the client writes ``{"args", "cwd", "env", "stdout",
"stderr"}``; the server answers ``{"pid": N}`` when the child starts and ``{"rc": N}``
when it ends (negative: killed by that signal).
"""

from __future__ import annotations

import atexit
import importlib
import json
import os
import runpy
import sys

PRELOAD = (
    "numpy",
    "cv2",
    "torch",
    "torchvision",
    "lightning.pytorch",
    "torchmetrics",
    "segmentation_models_pytorch",
    "timm",
    "skimage.segmentation",
    "pycocotools.coco",
    "seglab.cli",
    "seglab.training.train",
    "seglab.evaluation.evaluate",
    "seglab.inference.predictor",
)


def child(req: dict) -> None:
    """Become the CLI process of ``req``; never returns."""
    null = os.open(os.devnull, os.O_RDONLY)
    out = os.open(req["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    err = os.open(req["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    for fd, target in ((null, 0), (out, 1), (err, 2)):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(req["cwd"])
    os.environ.clear()
    os.environ.update(req["env"])
    sys.argv = ["seglab", *req["args"]]  # run_module puts the module's path in argv[0]
    try:
        runpy.run_module("seglab", run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as e:  # what the interpreter makes of it
        if e.code is None or isinstance(e.code, int):
            code = e.code or 0
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except BaseException:
        sys.excepthook(*sys.exc_info())
        code = 1
    # Exit as multiprocessing's children do: atexit handlers and flushed streams, but no
    # module teardown, which takes ~2 s with torch loaded and changes nothing on disk.
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main() -> None:
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    reply = sys.stdout
    print(json.dumps({"ready": True}), file=reply, flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            child(req)
        print(json.dumps({"pid": pid}), file=reply, flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"rc": os.waitstatus_to_exitcode(status)}), file=reply, flush=True)


if __name__ == "__main__":
    main()
