"""Real fixture files for the document tests, made by real tools at test time.

A Chinese PDF printed by headless Chromium (running header, page numbers in
Chromium's footer, a two-column section), a scanned PDF (a page drawn with
Pillow and wrapped as an image-only PDF), a DOCX written by python-docx, an
HTML page with navigation and footer around the article, and bad files.
Each document states facts about an invented place, found nowhere else.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import zipfile
from pathlib import Path

FONT = "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"

FILLER = (
    "园区管理委员会每年发布一次发展报告，报告内容包括产业规划、招商引资、人才服务和生态环境等方面。"
    "报告指出，园区将继续推进数字化改造，完善公共服务平台，提升企业服务水平。"
    "各入驻企业按照统一标准填报年度数据，管委会汇总后向社会公开。"
)


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def pdf_html(fact: str, filler_paragraphs: int = 14, fact_in_columns: bool = True) -> str:
    filler = "\n".join(f"<p>第{i + 1}部分。{FILLER}</p>" for i in range(filler_paragraphs))
    columns = (
        '<section style="column-count:2;column-gap:2em">'
        f"<h2>双栏专题：园区实验室</h2><p>{FILLER}</p><p>{fact}</p><p>{FILLER}</p></section>"
    )
    body = f"{filler}{columns}" if fact_in_columns else f"{filler}<p>{fact}</p>"
    return f"""<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">
<title>青禾湾园区发展简报</title>
<style>
 body {{ font-family: "WenQuanYi Micro Hei", sans-serif; font-size: 15px; line-height: 1.7; margin: 0 1em; }}
 .running {{ position: fixed; top: 0; left: 0; right: 0; text-align: center; font-size: 11px; color: #666; }}
 main {{ margin-top: 2.5em; }}
</style></head><body>
<div class="running">青禾湾园区发展简报 · 内部资料</div>
<main><h1>青禾湾园区发展简报</h1>{body}</main>
</body></html>"""


def print_pdf(html: str, folder: Path, name: str = "brief") -> Path:
    """Print ``html`` to PDF with headless Chromium, with its header and footer (title, date, page x/y)."""
    exe = chromium()
    if exe is None:
        raise RuntimeError("chromium is not installed (apt-get install chromium)")
    src = folder / f"{name}.html"
    src.write_text(html, encoding="utf-8")
    out = folder / f"{name}.pdf"
    subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    f"--user-data-dir={folder / 'chromium-profile'}",
                    f"--print-to-pdf={out}", src.as_uri()],
                   check=True, capture_output=True, timeout=120)
    return out


def scanned_pdf(lines: list[str], folder: Path, name: str = "scan") -> Path:
    """An image-only PDF: the text drawn onto an A4 page image at 150 dpi, saved as PDF by Pillow."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("L", (1240, 1754), 255)
    draw = ImageDraw.Draw(image)
    font = ImageFont.truetype(FONT, 34)
    y = 150
    for line in lines:
        draw.text((120, y), line, font=font, fill=0)
        y += 70
    out = folder / f"{name}.pdf"
    image.save(out, "PDF", resolution=150)
    return out


def docx_file(title: str, paragraphs: list[str], folder: Path, name: str = "note") -> Path:
    import docx

    document = docx.Document()
    document.core_properties.title = title
    document.add_heading(title, level=1)
    for text in paragraphs:
        document.add_paragraph(text)
    out = folder / f"{name}.docx"
    document.save(str(out))
    return out


def html_page(title: str, paragraphs: list[str]) -> str:
    nav = "".join(f'<li><a href="/n{i}">栏目{i}：首页新闻导航链接</a></li>' for i in range(8))
    body = "".join(f"<p>{p}</p>" for p in paragraphs)
    return f"""<!doctype html><html lang="zh-CN"><head><meta charset="utf-8"><title>{title}</title></head>
<body><header><nav><ul>{nav}</ul></nav></header>
<main><article><h1>{title}</h1>{body}</article></main>
<aside>热门推荐：导航侧栏广告文字，订阅我们的简报。</aside>
<footer>版权所有 © 某某网站 备案号：浙ICP备00000000号 联系电话：0571-00000000</footer></body></html>"""


def encrypted_pdf(source: Path, folder: Path) -> Path:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(source))
    writer.encrypt(user_password="secret", owner_password="owner", algorithm="RC4-128")
    out = folder / "locked.pdf"
    with out.open("wb") as fh:
        writer.write(fh)
    return out


def zip_bomb_docx(source: Path, folder: Path) -> Path:
    """A real DOCX plus a member of 300 MB of zeros (a few hundred KB packed)."""
    out = folder / "bomb.docx"
    buffer = io.BytesIO()
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            dst.writestr(item, src.read(item))
        with dst.open("word/media/padding.bin", "w", force_zip64=True) as fh:
            block = b"\0" * (1 << 20)
            for _ in range(300):
                fh.write(block)
    out.write_bytes(buffer.getvalue())
    return out
