"""A feature repo as code: `plan` and `apply` a folder of queries, ETLs and feature sets kept in git.

    config.py          featurestore.toml: read and check everything before asking the service
    service_client.py  the client plus the plan endpoints (query/plan, extract/plan)
    plan.py            per object: create (+), change (~), unchanged (=), error (!), not checked (?)
    apply.py           carry out a plan's changes, in dependency order
    cli.py             `python -m app plan|apply` (arguments in app/cli.py)

The service stays the judge: the plan asks it (nothing is saved) rather than
re-implementing its checks, so `plan` fails exactly where `apply` would.
"""
