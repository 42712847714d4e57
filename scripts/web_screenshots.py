"""Take the web page's screenshots in docs/web/ (the README shows them): a server with
a web listener on loopback, in a temporary directory, and two people in a headless
Chromium (the system's, as the tests use it).

    PYTHONPATH=. .venv/bin/python scripts/web_screenshots.py [--out docs/web]

It starts one server process and ends it by its PID; nothing else is touched.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import Page, expect, sync_playwright

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.e2e.browser import chromium_path  # noqa: E402
from tests.harness import write_credentials  # noqa: E402
from twisted_chat.launch import free_port, twistd_command  # noqa: E402


def start_server(workdir: Path, web_port: int) -> subprocess.Popen[str]:
    write_credentials(workdir / "credentials.txt")
    argv = twistd_command(
        workdir / "credentials.txt",
        "--port",
        f"tcp:{free_port()}:interface=127.0.0.1",
        "--web",
        f"tcp:{web_port}:interface=127.0.0.1",
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    server = subprocess.Popen(argv, cwd=workdir, env=env, stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    for line in server.stdout:
        if "web page listening on" in line:
            return server
    raise RuntimeError("the server ended before listening")


def log_in(page: Page, url: str, name: str, password: str) -> None:
    page.goto(url)
    page.get_by_label("Username").fill(name)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("button", name="Log out")).to_be_visible()


def say(page: Page, text: str) -> None:
    box = page.get_by_label("Message")
    box.fill(text)
    box.press("Enter")
    expect(box).to_have_value("")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "web")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    web_port = free_port()
    url = f"http://127.0.0.1:{web_port}/"
    with tempfile.TemporaryDirectory(prefix="chat-shots-") as folder:
        workdir = Path(folder)
        server = start_server(workdir, web_port)
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=chromium_path(),
                    args=["--no-sandbox"],
                    env={"HOME": str(workdir)},
                )
                desktop = {"viewport": {"width": 1100, "height": 680}}
                yoda = browser.new_context(**desktop).new_page()
                yoda.goto(url)
                yoda.get_by_label("Username").fill("yoda")
                yoda.screenshot(path=args.out / "login.png")
                log_in(yoda, url, "yoda", "wise@!man")
                hans = browser.new_context(**desktop).new_page()
                log_in(hans, url, "hans", "falcon*solo")
                for page in (yoda, hans):
                    say(page, "/join #jedi")
                say(hans, "Anyone up for a run to Kessel?")
                say(yoda, "Patience you must have, my young smuggler.")
                say(hans, "Twelve parsecs. I'll make it in less.")
                yoda.get_by_role("list", name="Online").get_by_role("button", name="hans").click()
                say(yoda, "Hans, a word about your <img src=x onerror=alert(1)> tricks.")
                conversations = hans.get_by_role("list", name="Conversations")
                conversations.get_by_role("button", name=re.compile("^yoda")).click()
                say(hans, "Never tell me the odds.")
                yoda.wait_for_timeout(300)
                yoda.screenshot(path=args.out / "conversation.png")
                hans.get_by_role("list", name="Conversations").get_by_role(
                    "button", name=re.compile("^#jedi")
                ).click()
                hans.wait_for_timeout(300)
                hans.screenshot(path=args.out / "room.png")
                narrow = browser.new_context(
                    viewport={"width": 320, "height": 640}, color_scheme="dark"
                ).new_page()
                log_in(narrow, url, "leia", "$blasterpistol$")
                say(narrow, "/join #jedi")
                say(narrow, "Someone has to save our skins.")
                narrow.wait_for_timeout(300)
                narrow.screenshot(path=args.out / "narrow-dark.png")
                browser.close()
        finally:
            server.terminate()
            server.wait(timeout=30)
    for name in sorted(p.name for p in args.out.glob("*.png")):
        print(args.out / name)


if __name__ == "__main__":
    main()
