"""Regenerate the CS console's screenshots in docs/img from a running server.

    python docs/console_screenshots.py http://127.0.0.1:8000 [--key-file FILE] [--account ID]

The key (when the server has keys) is read from a file, never from the command line. Uses
Debian's chromium (/usr/bin/chromium) through Playwright; nothing is downloaded.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from playwright.sync_api import sync_playwright

OUT = Path(__file__).resolve().parent / "img"
CHROMIUM = "/usr/bin/chromium"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--key-file", type=Path, help="a file holding an API key of the server")
    parser.add_argument("--account", help="the account page to show [default: the fastest riser]")
    parser.add_argument("--width", type=int, default=1280)
    args = parser.parse_args()
    base = args.url.rstrip("/")
    OUT.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM)
        page = browser.new_page(viewport={"width": args.width, "height": 900})
        page.goto(f"{base}/ui")
        if args.key_file and "/ui/login" in page.url:
            page.get_by_label("API key").fill(args.key_file.read_text().strip())
            page.get_by_role("button", name="Log in").click()
            page.wait_for_url(f"{base}/ui")
        suffix = "" if args.width == 1280 else f"-{args.width}"
        page.screenshot(path=OUT / f"console-portfolio{suffix}.png", full_page=True)
        page.goto(f"{base}/ui/accounts")
        page.screenshot(path=OUT / f"console-worklist{suffix}.png")  # the top of the list
        if not args.account:  # the fastest riser: an account with history to chart
            page.goto(f"{base}/ui/accounts?sort=risk_change")
        account = args.account or page.locator("table.worklist tbody th a").first.inner_text()
        page.goto(f"{base}/ui/accounts/{account}")
        page.screenshot(path=OUT / f"console-account{suffix}.png", full_page=True)
        browser.close()


if __name__ == "__main__":
    main()
