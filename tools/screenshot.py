"""Render an HTML page in headless Chromium to a small PNG (the README's pictures in docs/).

    python tools/screenshot.py demo-report/report.html docs/report_html.png --size 1000x2100
    python tools/screenshot.py yolo.html docs/analyze_html.png --size 1100x950

Needs Debian's chromium (apt-get install chromium); the PNG is reduced to 256 colours with Pillow
(matplotlib's dependency) to stay small.
"""
import argparse
import os
import shutil
import subprocess
import tempfile

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars"]


def screenshot(page, out, width, height):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("chromium is not installed (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
                        f"--screenshot={os.path.abspath(out)}", f"file://{os.path.abspath(page)}"],
                       check=True, capture_output=True, timeout=120)
    from PIL import Image
    Image.open(out).convert("RGB").quantize(256).save(out, optimize=True)
    return os.path.getsize(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page")
    parser.add_argument("out")
    parser.add_argument("--size", default="1000x1400", help="window WIDTHxHEIGHT in pixels")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    print(f"{args.out}: {screenshot(args.page, args.out, width, height)} bytes")


if __name__ == "__main__":
    main()
