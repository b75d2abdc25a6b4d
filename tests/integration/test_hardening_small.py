"""Issue 9 hardening, over real sockets: a NUL inside a string is invalid_value, naming the
field."""
import http.client
import json
import socket
import subprocess
import threading
import time

from harness import BIN, Response, Server, expect_error, run
from receiver import Receiver

RECV = Receiver()
FAST = ["--ca-file", RECV.ca, "--allow-net", "127.0.0.0/8", "--retry-schedule", "0",
        "--timeout", "2s", "--connect-timeout", "1s"]


def test_nul_in_a_string_is_invalid_value(srv):
    c = srv.client()
    body = ('{"labID": "%s", "events": ["bill.created"], "protocol": "https",'
            ' "endpoint": "https://hooks.example/a\\u0000b"}' % c["lab"])
    expect_error(srv.post("/client/events/subscribe", raw=body, token=c["token"]), 400,
                 "invalid_value", "endpoint")
    body = ('{"labID": "%s", "events": ["bill.created\\u0000"], "protocol": "https",'
            ' "endpoint": "https://hooks.example/a"}' % c["lab"])
    expect_error(srv.post("/client/events/subscribe", raw=body, token=c["token"]), 400,
                 "invalid_value", "events[0]")
    # Still not JSON: a raw control character.
    expect_error(srv.post("/client/events/subscribe", raw='{"labID": "a\x00b"}',
                          token=c["token"]), 400, "invalid_json")


if __name__ == "__main__":
    try:
        run([test_nul_in_a_string_is_invalid_value], server_args=FAST)
    finally:
        RECV.close()
