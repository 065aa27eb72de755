"""Instructions as byte tokens: the one encoding of a task string that stores, policies, artifacts and the robot share.

An instruction is its UTF-8 bytes, one token per byte (token id = byte value, 1..255), padded with 0 to
the length shape_meta gives its key (`instruction: {type: text, shape: [L]}`). Byte tokens need no
vocabulary file, so a policy trained without pretrained weights, an exported artifact and the robot
computer all read the same tokens; a pretrained text encoder turns them back into the string for its own
tokenizer (`instruction_texts`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PAD = 0
LENGTH_STEP = 16  # an inferred token length is the longest instruction rounded up to this
MIN_LENGTH = 96  # room for other tasks' instructions at evaluation: LIBERO's longest is 88 bytes


def instruction_tokens(texts: Sequence[str], length: int) -> np.ndarray:
    """(N, length) uint8 byte tokens of `texts`, zero-padded; an empty instruction, a NUL byte or one longer
    than `length` bytes is a ValueError that names it."""
    tokens = np.full((len(texts), length), PAD, dtype=np.uint8)
    for row, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"instruction {text!r} is not a non-empty string")
        raw = text.encode("utf-8")
        if b"\0" in raw:
            raise ValueError(f"instruction {text!r} holds a NUL byte, which is the padding token")
        if len(raw) > length:
            raise ValueError(f"instruction {text!r} is {len(raw)} bytes, longer than the {length} the policy's "
                             "text key holds: shorten it, or train with a longer shape (shape_meta obs "
                             "`instruction: {type: text, shape: [L]}`)")
        tokens[row, : len(raw)] = np.frombuffer(raw, dtype=np.uint8)
    return tokens


def instruction_texts(tokens: np.ndarray) -> list[str]:
    """The strings behind (N, L) byte tokens (the inverse of instruction_tokens)."""
    rows = np.asarray(tokens).reshape(-1, np.shape(tokens)[-1]).astype(np.uint8)
    return [bytes(row[row != PAD]).decode("utf-8", errors="replace") for row in rows]


def token_length(texts: Sequence[str]) -> int:
    """A text key's length for these instructions: the longest in bytes, rounded up to a multiple of 16, and at
    least MIN_LENGTH, so that a policy trained on a few tasks can still be told a longer instruction."""
    longest = max((len(t.encode("utf-8")) for t in texts), default=0)
    return max(MIN_LENGTH, -(-longest // LENGTH_STEP) * LENGTH_STEP)


def untrained_instruction(text: str, known: Sequence[str] | None) -> str | None:
    """Why `text` may not be followed, when the training instructions `known` do not include it (None if they
    do, or are not known)."""
    if not known or text in known:
        return None
    return f"instruction {text!r} is not one of the training data's ({'; '.join(known)}); the policy may not follow it"
