"""Prints each new mail that the local SES (moto_server) accepted, one line each: recipient,
subject and the link it carries, so a person running `make run` can click through.

moto keeps every sent message, readable at GET /moto-api/data.json under ses -> Message (with
body, destinations, source and subject). The tests read the mailbox the same way
(tests/lib.rs, `mailbox`). Usage: mailbox.py MOTO_PORT [--once]
"""

import json
import re
import sys
import time
import urllib.error
import urllib.request

LINK = re.compile(r"https?://\S+?#(?:verify|reset)=[A-Za-z0-9_-]+")


def messages(port: int) -> list[dict]:
    url = f"http://127.0.0.1:{port}/moto-api/data.json"
    with urllib.request.urlopen(url, timeout=5) as resp:
        data = json.load(resp)
    return data.get("ses", {}).get("Message", [])


def line(message: dict) -> str:
    to = ", ".join(message.get("destinations", {}).get("ToAddresses", []))
    link = LINK.search(message.get("body", ""))
    return f"mail to {to}: {message.get('subject', '')} -> {link.group(0) if link else '(no link)'}"


def main() -> None:
    port = int(sys.argv[1])
    once = "--once" in sys.argv[2:]
    seen: set[str] = set()
    while True:
        try:
            for m in messages(port):
                if m.get("id") not in seen:
                    seen.add(m.get("id"))
                    print(line(m), flush=True)
        except (urllib.error.URLError, OSError, ValueError):
            pass  # moto is starting or stopping
        if once:
            return
        time.sleep(1)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
