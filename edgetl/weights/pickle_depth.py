"""The nesting depth and memo indices of a pickle, checked on its opcodes before anything is built.

Unpickling builds nested tuples without recursion, but hashing one as a dict key recurses in C: a
200,000-deep tuple used as a key crashes the interpreter (a segfault, not an exception), and walking
a deep result in Python ends in RecursionError. :func:`check_nesting` simulates the pickle machine's
stack with one depth number per value, so a too-deep file is refused before
:class:`pickle.Unpickler` sees it. Mutable containers changed through a memo alias may be deeper
than computed here; they cannot be dict keys, and the reader bounds its own walk over them.
Memo indices that no pickler writes are refused too: the unpickler sizes its memo table by the
largest index, so one index of 2**28 in a 1 KB file would allocate gigabytes.

>>> import io, pickle
>>> check_nesting(io.BytesIO(pickle.dumps({"a": [1, (2, 3)]})), "x.pth", max_depth=3)
>>> check_nesting(io.BytesIO(pickle.dumps([[[[1]]]])), "x.pth", max_depth=3)
Traceback (most recent call last):
...
edgetl.weights.WeightsFileError: x.pth: containers nested deeper than 3 levels; a state_dict is a flat dict of tensors, the file is corrupt or hostile
"""

from __future__ import annotations

import pickletools
from typing import Any, BinaryIO

from . import WeightsFileError

_MARK = object()
_EMPTY_CONTAINERS = {"EMPTY_LIST", "EMPTY_TUPLE", "EMPTY_DICT", "EMPTY_SET"}
_NO_STACK_EFFECT = {"PROTO", "FRAME", "READONLY_BUFFER", "PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"}


def check_nesting(stream: BinaryIO, source: str, max_depth: int) -> None:
    """Read one pickle from ``stream`` (up to its STOP) and raise if any value nests deeper than ``max_depth``."""
    stack: list[Any] = []
    memo: dict[Any, int] = {}

    def pop_mark() -> list[int]:
        items = []
        while (item := stack.pop()) is not _MARK:
            items.append(item)
        return items

    def push(depth: int) -> None:
        if depth > max_depth:
            raise WeightsFileError(
                f"{source}: containers nested deeper than {max_depth} levels; a state_dict is a flat dict of tensors, "
                "the file is corrupt or hostile"
            )
        stack.append(depth)

    for count, (op, arg, _pos) in enumerate(pickletools.genops(stream)):
        name = op.name
        if name == "STOP":
            return
        if name in ("PUT", "BINPUT", "LONG_BINPUT"):
            # The unpickler sizes its memo table by the largest index: one index of 2**28 in a 1 KB
            # file allocates gigabytes. A pickler numbers its memo entries in order, one per object.
            if not 0 <= int(arg) <= count:
                raise WeightsFileError(f"{source}: memo index {arg} after {count} opcodes; the file is corrupt or hostile")
            memo[arg] = stack[-1]
        elif name == "MEMOIZE":
            memo[len(memo)] = stack[-1]
        if name in _NO_STACK_EFFECT:
            continue
        if name == "MARK":
            stack.append(_MARK)
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            push(memo[arg])
        elif name == "POP":
            stack.pop()
        elif name == "POP_MARK":
            pop_mark()
        elif name == "DUP":
            push(stack[-1])
        elif name in _EMPTY_CONTAINERS:
            push(1)
        elif name in ("TUPLE", "LIST", "DICT", "FROZENSET", "OBJ", "INST"):
            push(max(pop_mark(), default=0) + 1)
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            push(max(stack.pop() for _ in range(int(name[-1]))) + 1)
        elif name in ("APPENDS", "SETITEMS", "ADDITEMS"):
            items = pop_mark()
            push(max(stack.pop(), max(items, default=0) + 1))
        elif name in ("APPEND", "BUILD"):
            value = stack.pop()
            push(max(stack.pop(), value + 1))
        elif name == "SETITEM":
            value, key = stack.pop(), stack.pop()
            push(max(stack.pop(), key + 1, value + 1))
        elif name in ("REDUCE", "NEWOBJ"):
            args = stack.pop()
            stack.pop()
            push(args + 1)
        elif name == "NEWOBJ_EX":
            kwargs, args = stack.pop(), stack.pop()
            stack.pop()
            push(max(args, kwargs) + 1)
        elif name == "STACK_GLOBAL":
            stack.pop(), stack.pop()
            push(0)
        elif name == "BINPERSID":
            push(stack.pop() + 1)
        else:  # every other opcode pushes one scalar (numbers, strings, None, GLOBAL, PERSID, EXT*)
            push(0)
    raise WeightsFileError(f"{source}: a pickle ends without its STOP opcode; the file is truncated")
