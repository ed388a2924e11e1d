"""Opens the monitor's dashboard in headless Chromium and prints, as one JSON line, what a person
would read on it.

    python3 tests/browser/check_dashboard.py DASHBOARD_URL TOKEN SCREENSHOT_PATH [null-system]

Drives Debian's Chromium (`apt-get install chromium`) through the Python `playwright` package;
no `playwright install` is needed (`.ci/install` installs both). When the page asks for a token
(its data endpoints answered 401), the token is typed into the page's own token form. The script
waits for the page's first successful refresh (`body[data-loaded="1"]`), reads the stable
element ids, records every dialog (`alert`, ...) the page opens, every console error and
uncaught exception, then saves a 1280x900 screenshot. It asserts nothing itself:
tests/dashboard.rs compares what it read with the monitor's own JSON.

With `null-system`, the `current_system` figures of every `/metrics` answer reach the page as
`null` (a platform that cannot give them, or a monitor's first CPU sample), to read how the page
shows an unknown figure. It prints (on stderr) how long the page took to show one refresh, as
the page measured it with `performance.now()`.
"""

import json
import os
import shutil
import sys

# Failure guards only, never expectations: a loaded machine is slow.
TIMEOUT_MS = 60_000


def chromium_path():
    """Debian's Chromium: the binary itself, else the launcher script, else whatever is on PATH."""
    override = os.environ.get("CHROMIUM")
    if override:
        return override
    for candidate in ("/usr/lib/chromium/chromium", "/usr/bin/chromium"):
        if os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    sys.exit("Chromium not found (looked for /usr/lib/chromium/chromium, /usr/bin/chromium): run bash .ci/install")


def apply_ms(attribute):
    """The page's own measure of its last refresh, in milliseconds; None if it has none."""
    try:
        return float(attribute)
    except (TypeError, ValueError):
        return None


def main():
    if len(sys.argv) not in (4, 5) or sys.argv[4:] not in ([], ["null-system"]):
        sys.exit("usage: check_dashboard.py DASHBOARD_URL TOKEN SCREENSHOT_PATH [null-system]")
    url, token, screenshot = sys.argv[1:4]
    null_system = sys.argv[4:] == ["null-system"]
    try:
        from playwright.sync_api import sync_playwright
    except ModuleNotFoundError:
        sys.exit("ModuleNotFoundError: the Python package playwright is missing: run bash .ci/install")

    dialogs = []
    console_errors = []
    page_errors = []
    failed_responses = []
    phase = {"token_entered": False}

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium_path(),
            headless=True,
            # CI runs as root, where Chromium's sandbox cannot start.
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900}, color_scheme="light")
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)

            def on_dialog(dialog):
                dialogs.append({"type": dialog.type, "message": dialog.message})
                dialog.dismiss()

            def on_console(msg):
                if msg.type == "error":
                    console_errors.append(
                        {"text": msg.text, "url": msg.location.get("url", ""), "after_token": phase["token_entered"]}
                    )

            def on_response(response):
                if response.status >= 400:
                    failed_responses.append(
                        {"url": response.url, "status": response.status, "after_token": phase["token_entered"]}
                    )

            page.on("dialog", on_dialog)
            page.on("console", on_console)
            page.on("response", on_response)
            page.on("pageerror", lambda exc: page_errors.append(str(exc)))

            def unknown_system(route):
                response = route.fetch()
                try:
                    body = response.json()
                    system = body["data"]["current_system"]
                    body["data"]["current_system"] = {k: None for k in system}
                except (ValueError, KeyError, TypeError):
                    # Not a metrics answer (a 401): as it came.
                    route.fulfill(response=response)
                    return
                route.fulfill(response=response, json=body)

            if null_system:
                # `metrics` only, not `metrics/history` nor `metrics/prometheus`.
                page.route(lambda u: u.split("?")[0].endswith("/metrics"), unknown_system)

            response = page.goto(url, wait_until="load")
            page_status = response.status if response else None

            # Either the data loaded (no token needed) or the page asks for the token.
            page.wait_for_selector('body[data-loaded="1"], body[data-auth="required"]')
            token_prompt = page.get_attribute("body", "data-auth") == "required"
            # What the health tables show before the token: `/health` answers without it, with
            # statuses and rates only.
            before_token = {
                key: page.locator("#" + key).inner_text().strip()
                for key in ("budgets", "anomalies", "triggers")
            }
            if token_prompt:
                form = page.locator("#auth")
                form.wait_for(state="visible")
                field = form.locator('input[type="password"]')
                field.fill(token)
                phase["token_entered"] = True
                field.press("Enter")
            page.wait_for_selector('body[data-loaded="1"]')

            def text(selector):
                return page.locator(selector).inner_text().strip()

            # The time-to-first-token chart's tooltips, one per 10 s slot; then the default
            # range again, for the screenshot.
            page.select_option("#range", "five_minutes")
            ttft_tips = (
                page.locator("#charts figure").first.locator("rect.hover title").all_text_contents()
            )
            page.select_option("#range", "one_hour")

            result = {
                "page_status": page_status,
                "token_prompt": token_prompt,
                "before_token": before_token,
                "after_token": {
                    key: page.locator("#" + key).inner_text().strip()
                    for key in ("budgets", "anomalies", "triggers")
                },
                "auth": page.get_attribute("body", "data-auth"),
                "status": text("#status"),
                "requests_5min": text("#requests-5min"),
                "ttft_p95": text("#ttft-p95"),
                "streaming_5min": text("#streaming-5min"),
                "error_messages": page.locator("#errors .error-message").all_inner_texts(),
                # An `<img>` planted in an error message must stay text, never become an element.
                "injected_images": page.locator("#errors img").count(),
                "providers": page.locator("#providers tbody tr td.name").all_inner_texts(),
                # Each row of the provider and model table, cell by cell.
                "model_rows": page.locator("#provider-models tbody tr").evaluate_all(
                    "rows => rows.map(r => Array.from(r.cells, c => c.innerText.trim()))"
                ),
                "system": {
                    key: text("#sys-" + key) for key in ("cpu", "mem", "mem-pct", "threads", "fds")
                },
                "apply_ms": apply_ms(page.get_attribute("body", "data-apply-ms")),
                "anomalies": page.locator("#anomalies tbody tr").all_inner_texts(),
                "users_header": page.locator("#users thead th").all_inner_texts(),
                "charts": page.locator("#charts svg").count(),
                "ttft_tips": ttft_tips,
                "notice": text("#notice"),
                "refreshes": int(page.get_attribute("body", "data-refreshes") or "0"),
                "token_in_url": token in page.url,
            }
            # Let a stray timer or a late render open its dialog, if it would.
            page.wait_for_timeout(500)
            page.screenshot(path=screenshot, full_page=False)
            result["dialogs"] = dialogs
            result["console_errors"] = console_errors
            result["page_errors"] = page_errors
            result["failed_responses"] = failed_responses
        finally:
            browser.close()
    print(f"the page showed one refresh in {result['apply_ms']} ms", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
