"""S4: a fresh process imports the backend, initializes, runs one 1-task workflow and exits.

Usage: python s4_child.py BACKEND_MODULE DATABASE_URL
"""

import asyncio
import sys

cl = __import__(sys.argv[1])


@cl.task("s4_only")
def only(ctx):
    return {"done": True}


async def main() -> None:
    executor = cl.UnifiedExecutor()
    await executor.initialize(sys.argv[2])
    result = await executor.execute(cl.Workflow("s4", ["s4_only"]))
    assert result["status"] == "Completed", result["error"]
    await executor.shutdown()


asyncio.run(main())
