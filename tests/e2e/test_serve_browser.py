"""The chat page in headless Chromium (Debian's `chromium` + `chromium-driver`, driven by selenium; no browser
download): it asks for the API key, sends a Korean message, streams the reply, ignores Enter while an IME is
composing, shows markup as text, and shows a message the server's moderation refused as a refusal."""

from __future__ import annotations

import os
import shutil

import pytest
from serve_helpers import make_chat_model, serve

pytestmark = pytest.mark.slow
KEY = "sk-browser-test"
REFUSAL = "그 메시지에는 답할 수 없어요."
# Debian names the browser chromium, Ubuntu's and older packages chromium-browser.
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
INSTALL = "install it with: apt-get install -y chromium chromium-driver"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# Records every text node added to a reply and when each reply finished (performance.now() times).
RECORDER = """
window.__deltas = []; window.__done = [];
new MutationObserver((records) => {
  for (const r of records) {
    if (r.type === "attributes" && r.target.dataset.state === "done") window.__done.push(performance.now());
    for (const n of r.addedNodes) {
      if (n.nodeType === Node.TEXT_NODE && n.parentElement.classList.contains("assistant"))
        window.__deltas.push([performance.now(), n.textContent]);
    }
  }
}).observe(document.getElementById("log"), {childList: true, subtree: true, attributes: true,
                                             attributeFilter: ["data-state"]});
"""


@pytest.fixture(scope="module")
def server(tiny_llama, tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-page")
    words = root / "words.txt"
    words.write_text("바보\n", encoding="utf-8")
    with serve(make_chat_model(tiny_llama, root / "tiny-chat"), root / "server.log", "--api-key", KEY,
               "--moderation", f"words:{words}", "--moderation-message", REFUSAL) as s:
        yield s


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (CHROMIUM and CHROMEDRIVER):
        # In CI the page must be tested: a missing browser fails there; elsewhere it is a skip that says what to do.
        missing = f"chromium (or chromium-browser) or chromedriver not found on PATH; {INSTALL}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true: {missing}", pytrace=False)
        pytest.skip(missing)
    from selenium import webdriver  # a declared dev dependency: no skip when it is missing
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # selenium must never try to download a driver or browser
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    yield driver
    driver.quit()


def wait(driver, script: str, timeout: float = 60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(lambda d: d.execute_script(script))


def replies_done(driver) -> int:
    return driver.execute_script("return document.querySelectorAll('.assistant[data-state=done]').length")


def send(driver, text: str) -> None:
    from selenium.webdriver.common.keys import Keys

    box = driver.find_element("id", "input")
    box.send_keys(text)
    box.send_keys(Keys.ENTER)


def test_page_streams_a_reply_to_a_korean_message(server, browser):
    from selenium.webdriver.common.keys import Keys

    browser.get(server.url + "/")
    wait(browser, "return document.getElementById('status').textContent.includes('API 키')")
    assert browser.execute_script("return document.getElementById('settings').open")
    browser.find_element("id", "key").send_keys(KEY, Keys.TAB)  # `change` fires: the page retries /v1/models
    wait(browser, f"return document.getElementById('model').textContent === {server.model!r}")
    browser.find_element("id", "max-tokens").send_keys("16")
    browser.execute_script(RECORDER)

    message = "안녕하세요! 오늘 날씨 어때요?"
    send(browser, message)
    wait(browser, "return document.querySelector('.assistant[data-state=done]')")
    user = browser.execute_script("return [...document.querySelectorAll('.user')].map(e => e.textContent)")
    assert user == [message]
    reply = browser.execute_script("return document.querySelector('.assistant').textContent")
    deltas = browser.execute_script("return window.__deltas")
    done = browser.execute_script("return window.__done")
    assert reply and "".join(text for _, text in deltas) == reply
    assert len(deltas) >= 2, "the reply arrived in one piece: not streamed"
    assert deltas[0][0] < done[0], "text must show before the reply is complete"
    assert not browser.find_elements("css selector", ".error")


def test_enter_while_composing_does_not_send(server, browser):
    before = len(browser.find_elements("css selector", ".user"))
    box = browser.find_element("id", "input")
    box.send_keys("한")
    browser.execute_script("""
        const box = document.getElementById('input');
        box.dispatchEvent(new CompositionEvent('compositionstart', {data: '한'}));
        const enter = {key: 'Enter', bubbles: true, cancelable: true};
        box.dispatchEvent(new KeyboardEvent('keydown', {...enter, isComposing: true}));
        box.dispatchEvent(new KeyboardEvent('keydown', {...enter, keyCode: 229}));
    """)
    assert len(browser.find_elements("css selector", ".user")) == before
    assert browser.execute_script("return document.getElementById('input').value") == "한"
    browser.execute_script("document.getElementById('input').value = ''")


def test_markup_in_messages_is_shown_as_text(server, browser):
    done = replies_done(browser)
    payload = '<img src=x onerror="window.__pwned=1"><b>굵게</b>'
    send(browser, payload)
    wait(browser, f"return document.querySelectorAll('.assistant[data-state=done]').length > {done}")
    users = browser.execute_script("return [...document.querySelectorAll('.user')].map(e => e.textContent)")
    assert users[-1] == payload
    assert browser.find_elements("css selector", "#log img, #log b") == []
    assert browser.execute_script("return window.__pwned === undefined")


def test_a_flagged_message_is_shown_as_a_refusal_and_leaves_the_conversation(server, browser):
    done = replies_done(browser)
    send(browser, "이 바보야")
    wait(browser, "return document.querySelector('.assistant[data-state=refused]')")
    refused = browser.find_element("css selector", ".assistant.refused")
    assert refused.text == REFUSAL
    assert refused.value_of_css_property("font-style") == "italic"  # styled as a refusal, not as a model reply
    assert not browser.find_elements("css selector", ".error")
    assert server.stats()["moderation"]["flagged"] == 1 and server.stats()["requests"]["accepted"] == done
    # the conversation goes on without the refused message: the next turn is answered by the model
    send(browser, "안녕")
    wait(browser, f"return document.querySelectorAll('.assistant[data-state=done]').length > {done}")
    stats = server.stats()
    assert stats["moderation"] == {"checked": done + 2, "flagged": 1, "errors": 0, "allowed_on_error": 0,
                                   "categories": {"words": 1}}
    assert stats["requests"]["accepted"] == done + 1
