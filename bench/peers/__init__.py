"""The peers pgqueue is compared with, each run from its own venv under `bench/.peers/`.

`runner_<name>.py` files run inside that venv (they import only the peer and the stdlib);
`<name>.py` files are their counterparts on our side: how to start them, and the SQL that turns
their tables into the same figures as ours.
"""
