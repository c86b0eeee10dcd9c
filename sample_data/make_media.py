"""Write the tiny images, PDF and input rows of ``jobs/describe_images.toml``; stdlib only.

    python sample_data/make_media.py      # writes sample_data/media/

PNGs are built by hand (zlib for the pixel data, CRC-32 per chunk), the GIF is a classic
hand-assembled 2x2, and the PDF is a one-page document whose cross-reference table is
computed from the real byte offsets, so strict readers accept it. Output is deterministic.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent / "media"


def png(width: int, height: int, pixel: tuple[int, int, int] | None = None) -> bytes:
    """An RGB PNG: one colour, or (pixel=None) a diagonal gradient."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    rows = bytearray()
    for y in range(height):
        rows.append(0)  # filter: none
        for x in range(width):
            r, g, b = pixel or (x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), 128)
            rows += bytes((r, g, b))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(rows), 9))
        + chunk(b"IEND", b"")
    )


def gif() -> bytes:
    """A 2x2 GIF89a: red, green / blue, white (global colour table of 4, LZW min code 2)."""
    header = b"GIF89a" + struct.pack("<HHBBB", 2, 2, 0b10000001, 0, 0)
    palette = bytes((255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255))
    image = b"\x2c" + struct.pack("<HHHHB", 0, 0, 2, 2, 0)
    # LZW for indexes 0,1,2,3 with min code size 2: clear(4) 0 1 2 3 end(5), packed LSB first.
    data = b"\x02" + b"\x03" + bytes((0x44, 0x34, 0x05)) + b"\x00"
    return header + palette + image + data + b"\x3b"


def pdf(lines: list[str]) -> bytes:
    """A one-page PDF (Helvetica) showing ``lines``, with a correct xref table."""
    text = "BT /F1 14 Tf 72 720 Td 18 TL " + " ".join(f"({line}) '" for line in lines) + " ET"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
        b"/Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(text), text.encode("latin-1")),
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def main() -> None:
    HERE.mkdir(parents=True, exist_ok=True)
    files = {
        "red_square.png": png(16, 16, (220, 30, 30)),
        "gradient.png": png(32, 24),
        "checker.gif": gif(),
        "report.pdf": pdf(
            [
                "Quarterly report, Q3",
                "Revenue grew 12% to 4.1 million.",
                "Churn fell from 3.2% to 2.7%.",
            ]
        ),
        "notes.txt": "Meeting notes: ship the PDF support on Friday; images next week.\n",
    }
    for name, content in files.items():
        path = HERE / name
        if isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        else:
            path.write_bytes(content)
    rows = [
        {"id": "img-red", "image": "red_square.png", "question": "What colour is this image?"},
        {"id": "img-gradient", "image": "gradient.png", "question": "Describe this gradient."},
        {"id": "img-gif", "image": "checker.gif", "question": "Which colours do you see?"},
        {
            "id": "img-two",
            "images": ["red_square.png", "gradient.png"],
            "question": "How do these two images differ?",
        },
        {"id": "pdf-report", "document": "report.pdf", "question": "Summarize the report."},
        {"id": "txt-notes", "document": "notes.txt", "question": "What ships on Friday?"},
    ]
    with (HERE / "describe.jsonl").open("w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)
    print(f"wrote {len(files)} files and {len(rows)} rows to {HERE}")


if __name__ == "__main__":
    main()
