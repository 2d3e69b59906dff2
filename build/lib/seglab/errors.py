"""User-facing errors: one line naming the file or key and the fix."""


class SeglabError(Exception):
    """An error caused by the user's input (data, config, checkpoint).

    The CLI prints ``str(err)`` as one line and exits with a non-zero status;
    tracebacks are shown only with ``--debug``.
    """


def one_line(err: BaseException) -> str:
    """The message of ``err`` as one line.

    Errors raised inside DataLoader workers are re-raised by PyTorch with the worker's
    traceback in the message; the original message is its last non-empty line.
    """
    text = str(err).strip()
    if "Original Traceback" in text:
        text = text.splitlines()[-1]
        if ": " in text:
            text = text.split(": ", 1)[1]
    return " ".join(text.split())
