"""The Python side of the TypeScript example (clients/typescript/examples/generate-route.ts).

Its route handler enqueues one `app.shot_brief` job per shot through SQL, in the transaction
that inserts the app's own rows; this registry runs them:

    DATABASE_URL=... python -m pgqueue.worker examples.shot_briefs:registry --queue app

A brief is what the app shows of a shot before its image exists: its first words and length.
"""

from __future__ import annotations

from typing import Any

from pgqueue import JobContext, Registry

KIND = "app.shot_brief"
BRIEF_WORDS = 8  # words of the description a brief keeps

registry = Registry()


@registry.handler(KIND)
async def shot_brief(ctx: JobContext) -> dict[str, Any]:
    words = str(ctx.payload["description"]).split()
    return {
        "shot_number": ctx.payload["shot_number"],
        "brief": " ".join(words[:BRIEF_WORDS]) + (" ..." if len(words) > BRIEF_WORDS else ""),
        "words": len(words),
    }
