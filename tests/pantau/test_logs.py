"""Logs people can read: short tracebacks without locals, JSON on request, access lines kept."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import logging, sys
from pantau import logs
logs.configure("INFO", json=sys.argv[1] == "json")
log = logs.get_logger("demo")

def deep(n):
    secret_local = "x" * 5000
    if n == 0:
        raise ValueError("boom")
    deep(n - 1)

try:
    deep(30)
except ValueError:
    log.exception("it failed", sensor="fg-welang-1")
logging.getLogger("uvicorn.access").info(
    '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", "/sensors", "1.1", 200
)
logging.getLogger("paho").info("chatter")
"""


def _run(mode: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stderr


def test_text_logs_show_a_plain_traceback_without_locals() -> None:
    text = _run("text")
    assert "it failed" in text and "sensor=fg-welang-1" in text
    assert "ValueError: boom" in text
    assert "secret_local" not in text and "xxxxx" not in text
    # One line per frame and its source: 32 frames, not pages of locals.
    assert len(text.splitlines()) < 100
    assert 'GET /sensors HTTP/1.1" 200' in text
    assert "chatter" not in text


def test_json_logs_are_one_object_per_line() -> None:
    lines = _run("json").splitlines()
    records = [json.loads(line) for line in lines]
    failed, access = records
    assert failed["event"] == "it failed" and failed["level"] == "error"
    assert failed["sensor"] == "fg-welang-1"
    assert failed["exception"].endswith("ValueError: boom")
    assert "secret_local" not in failed["exception"]
    assert access["event"].endswith('"GET /sensors HTTP/1.1" 200')
