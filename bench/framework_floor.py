"""The framework's floor: a bare flask-restx app on waitress, with nothing of the feature store in it.

    .venv/bin/python -m bench.framework_floor --port 8123 --workers 2 --threads 2
    .venv/bin/python -m bench.framework_floor --in-process 20000   # the app's own CPU per call, no server

It answers POST /v1.0/lookup by parsing the JSON body and returning one precomputed feature row from a
dict: what a server that had every entity's features materialized in memory would do at the least, on
the framework the service is built on (Flask + flask-restx on waitress, `WORKERS` processes on one port
with SO_REUSEPORT, `THREADS` threads each — the service's own shape). `python -m bench.workers --floor`
drives it with the same clients and bodies as `extract/realtime`, in the same run, so the requests/s a
request path could reach at best on this machine stand beside ours and the peer's.
The same app runs on granian (a Rust HTTP server; `bash bench/install_granian.sh`) as
`granian --interface wsgi bench.framework_floor:app`. Stops on SIGTERM (the parent's children too).
`--in-process N` instead calls the WSGI app N times in this process (no server, no socket) and prints the
CPU time per call: the framework's cost alone, which bounds the requests/s of any server on this machine
at (cores ÷ that).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import signal
import socket
import statistics
import sys
import time

from flask import Flask, request
from flask_restx import Api, Resource
from waitress import serve

FEATURES = {"quote_type": "pet", "is_mobile": True, "minutes_to_bind": 1.4, "paid_by_amex": False,
            "is_paid": True}


def make_app() -> Flask:
    app = Flask(__name__)
    api = Api(app, prefix="/v1.0", doc=False)

    @api.route("/lookup")
    class Lookup(Resource):
        def post(self) -> dict:
            body = request.get_json()
            return {"index_value": body["index_value"], "features": [{"user_id": body["index_value"], **FEATURES}]}

    @api.route("/health")
    class Health(Resource):
        def get(self) -> dict:
            return {"status": "ok"}

    return app


app = make_app()  # for `granian --interface wsgi bench.framework_floor:app`


def bound_socket(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)
    return sock


def cpu_per_call(calls: int, rounds: int = 5) -> dict[str, float]:
    """CPU microseconds per POST /v1.0/lookup through the WSGI app (median of `rounds`), and the bound
    it sets on requests/s per core."""
    body = json.dumps({"query_id": "q", "etl_id": "e", "index_key": "user_id", "index_value": "u1"}).encode()

    def call() -> None:
        environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/v1.0/lookup", "SERVER_NAME": "127.0.0.1",
                   "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http",
                   "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(body)),
                   "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr, "wsgi.multithread": True,
                   "wsgi.multiprocess": True, "wsgi.run_once": False}
        b"".join(app(environ, lambda status, headers, exc_info=None: None))

    for _ in range(1000):
        call()
    per_call = []
    for _ in range(rounds):
        began = time.process_time()
        for _ in range(calls):
            call()
        per_call.append((time.process_time() - began) / calls)
    median = statistics.median(per_call)
    return {"cpu_us_per_call": round(median * 1e6, 1), "calls_per_second_per_core": round(1 / median)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int)
    parser.add_argument("--in-process", type=int, metavar="N", help="time N calls in process instead of serving")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if args.in_process:
        print(json.dumps(cpu_per_call(args.in_process)))
        return 0
    if args.port is None:
        parser.error("--port is needed to serve")
    children = []
    for _ in range(args.workers - 1):
        pid = os.fork()
        if pid == 0:
            children = []  # a child stops only itself
            break
        children.append(pid)

    def stop(*_: object) -> None:
        for child in children:
            os.kill(child, signal.SIGTERM)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    serve(make_app(), sockets=[bound_socket(args.port)], threads=args.threads, _quiet=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
