"""The storyboard studio at `/`: server-rendered pages and the static files they use.
(Filled in by issue 10, part 2.)"""

from __future__ import annotations

from starlette.routing import BaseRoute

ROUTES: list[BaseRoute] = []
