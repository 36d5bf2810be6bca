"""`python -m app`: the service's command line (serving by default); see app/cli.py."""
from app.cli import run

run()
