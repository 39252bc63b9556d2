"""Run one page's python blocks in order, in this fresh interpreter (see docs_blocks.py).

Usage: ``python _exec_page.py BLOCKS.json``, where the JSON holds the Markdown
file's path, the page's name and its blocks (fence line, code).  Each block is
compiled with the file's path as its file name and padded to its real line
numbers, so a traceback points into the Markdown file.  Top-level ``await``
is allowed; such blocks run on one event loop shared by the page.  On the
first failure the block is named on stderr and the exit status is 1.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import json
import sys
import traceback
from pathlib import Path
from typing import Any


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    namespace: dict[str, Any] = {"__name__": "__main__", "__file__": spec["file"]}
    loop: asyncio.AbstractEventLoop | None = None
    try:
        for block in spec["blocks"]:
            source = "\n" * block["line"] + block["code"]  # the code starts after the fence
            try:
                code = compile(
                    source,
                    spec["file"],
                    "exec",
                    flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
                    dont_inherit=True,
                )
                if code.co_flags & inspect.CO_COROUTINE:
                    if loop is None:
                        loop = asyncio.new_event_loop()
                        asyncio.set_event_loop(loop)
                    loop.run_until_complete(eval(code, namespace))  # noqa: S307
                else:
                    exec(code, namespace)  # noqa: S102
            except BaseException:
                print(
                    f"\n{spec['page']}: the python block at line {block['line']} failed:",
                    file=sys.stderr,
                )
                traceback.print_exc()
                return 1
            sys.stdout.flush()
    finally:
        if loop is not None:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
    print(f"{spec['page']}: {len(spec['blocks'])} python blocks ran")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
