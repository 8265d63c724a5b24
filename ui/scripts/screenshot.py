"""Make docs/ui.png: the page with real results, in headless Chromium.

    bge-siglip demo                                  # trains a small model on generated coloured shapes
    python ui/scripts/screenshot.py --model bge-siglip-demo/model --folder bge-siglip-demo/data/images

The demo's model finds its shapes by text in English and German; the page indexes the demo's images (in a
throwaway cache folder), drops ``--image`` (default: the folder's first blue circle) into the page, types
``--query`` and sets the slider to ``--weight`` (the image's share): a composed query, "this picture, but striped".
Then it saves the window. Re-run it when the page's look changes.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bge_siglip_ui.app import UIState, create_app
from bge_siglip_ui.command import UIOptions
from bge_siglip_ui.testing import chromium, running


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--folder", required=True)
    parser.add_argument("--query", default="Streifen")
    parser.add_argument("--image", type=Path, help="the image to search with (default: the first *blue_circle*)")
    parser.add_argument("--weight", type=float, default=0.3, help="the image's share of the composed query")
    parser.add_argument("--out", type=Path, default=Path("docs/ui.png"))
    parser.add_argument("--width", type=int, default=1360)
    parser.add_argument("--height", type=int, default=840)
    args = parser.parse_args()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with tempfile.TemporaryDirectory() as cache:
        state = UIState(UIOptions(model=args.model, folder=args.folder, cache_dir=cache), show_progress=True)
        state.start()
        state.done.wait()
        if state.store is None:
            raise SystemExit(f"the page could not start: {state.model_error or state.store_error}")
        with running(create_app(state, start=False)) as url, chromium(args.width, args.height) as browser:
            browser.get(url)
            WebDriverWait(browser, 60).until(lambda d: " in " in d.find_element(By.ID, "status").text)
            image = args.image or next(iter(sorted(Path(args.folder).glob("*blue_circle*"))), None)
            if image is not None:
                browser.find_element(By.ID, "file").send_keys(str(Path(image).resolve()))
                WebDriverWait(browser, 60).until(lambda d: d.find_element(By.ID, "image-chip").is_displayed())
            browser.execute_script("const w = document.getElementById('weight'); w.value = arguments[0];"
                                   "w.dispatchEvent(new Event('input'));", args.weight)
            browser.find_element(By.ID, "text").send_keys(args.query)
            time.sleep(1.0)  # the typing pause that starts the search
            loaded = ("const imgs = [...document.querySelectorAll('#grid .tile img')];"
                      "return imgs.length >= 12 && imgs.slice(0, 24).every(i => i.complete && i.naturalWidth);")
            WebDriverWait(browser, 60).until(lambda d: d.execute_script(loaded))
            browser.execute_script("document.activeElement.blur()")  # no caret in the picture
            time.sleep(0.5)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            browser.save_screenshot(str(args.out))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
