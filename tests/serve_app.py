"""Serves the test app in a process of its own: ``python -m tests.serve_app --port N``."""

import argparse

import uvicorn

from tests.app import make_app

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(make_app(), host="127.0.0.1", port=args.port, log_level="warning", lifespan="off")
