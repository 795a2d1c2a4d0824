"""Draw the example media in assets/ (run once; outputs are committed, a few tens of KB each)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

HERE = Path(__file__).resolve().parent


def _font(size: int) -> ImageFont.ImageFont:
    for name in ("DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default(size)


def shapes(path: Path) -> None:
    """Coloured shapes at known places: good for grounding and counting."""
    img = Image.new("RGB", (640, 426), (245, 243, 236))
    d = ImageDraw.Draw(img)
    d.ellipse((60, 60, 180, 180), fill=(220, 40, 40))  # red circle
    d.rectangle((260, 90, 420, 200), fill=(40, 90, 220))  # blue rectangle
    d.polygon([(500, 60), (590, 210), (410, 210)], fill=(40, 170, 70))  # green triangle
    d.ellipse((120, 260, 200, 340), fill=(250, 200, 30))  # yellow circle
    d.rectangle((330, 270, 560, 380), outline=(30, 30, 30), width=6)  # empty black frame
    d.text((340, 300), "QVL Studio", fill=(30, 30, 30), font=_font(36))
    img.save(path, optimize=True)


def receipt(path: Path) -> None:
    """A small shop receipt: reading text and structured extraction."""
    img = Image.new("RGB", (420, 560), "white")
    d = ImageDraw.Draw(img)
    f, fb = _font(20), _font(26)
    d.text((110, 24), "CORNER CAFÉ", fill="black", font=fb)
    d.text((120, 62), "12 Harbour Road", fill="black", font=f)
    d.text((30, 100), "2026-11-21   14:32", fill="black", font=f)
    lines = [("Flat white", "3.40"), ("Croissant", "2.80"), ("Orange juice", "3.10"), ("Bagel + cheese", "4.50")]
    y = 150
    for name, price in lines:
        d.text((30, y), name, fill="black", font=f)
        d.text((320, y), price, fill="black", font=f)
        y += 36
    d.line((30, y + 6, 390, y + 6), fill="black", width=2)
    d.text((30, y + 20), "TOTAL", fill="black", font=fb)
    d.text((310, y + 20), "13.80", fill="black", font=fb)
    d.text((30, y + 70), "Paid by card. Thank you!", fill="black", font=f)
    img.save(path, optimize=True)


def clock(path: Path, seconds: int = 8, fps: int = 10) -> None:
    """A ball that crosses the frame with the elapsed time printed: questions about *when*."""
    w, h = 320, 240
    tmp = Path(tempfile.mkdtemp())
    raw = tmp / "raw.avi"
    out = cv2.VideoWriter(str(raw), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    for i in range(seconds * fps):
        t = i / fps
        frame = np.full((h, w, 3), (236, 243, 245), np.uint8)
        x = int(20 + (w - 40) * t / seconds)
        colour = (40, 40, 220) if t < seconds / 2 else (220, 90, 40)  # red, then blue (BGR)
        cv2.circle(frame, (x, 150), 18, colour, -1)
        cv2.putText(frame, f"{t:4.1f} s", (100, 60), cv2.FONT_HERSHEY_SIMPLEX, 1.2, (30, 30, 30), 2)
        out.write(frame)
    out.release()
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg:  # H.264 plays in every browser; MJPG does not
        subprocess.run([ffmpeg, "-y", "-loglevel", "error", "-i", str(raw), "-c:v", "libx264", "-pix_fmt",
                        "yuv420p", "-crf", "30", "-movflags", "+faststart", str(path)], check=True)
    else:
        shutil.copy(raw, path.with_suffix(".avi"))
    shutil.rmtree(tmp)


if __name__ == "__main__":
    shapes(HERE / "shapes.png")
    receipt(HERE / "receipt.png")
    clock(HERE / "clock.mp4")
    print("wrote", *sorted(p.name for p in HERE.iterdir() if p.suffix in (".png", ".mp4")))
