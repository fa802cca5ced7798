"""A self-contained HTML report: figures embedded as base64 PNG, no network."""

import base64
import html
import io
import json
import os
from typing import Any, Dict, List, Optional

__all__ = ["Report"]

# Figures keep their natural size (110 dpi) up to the page width: small ones
# sit side by side, wide ones (the profile) take a row, none is shrunk until
# its labels are unreadable.
_STYLE = """
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; color: #222;
       padding: 0 1em; }
h1 { border-bottom: 2px solid #ddd; padding-bottom: .3em; }
section { margin-bottom: 2.5em; }
figure { display: inline-block; margin: .5em 1em .5em 0; vertical-align: top;
         max-width: 100%; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: .9em; color: #444; max-width: 540px; }
table { border-collapse: collapse; margin: .5em 0; font-size: .9em; }
td, th { border: 1px solid #ccc; padding: .25em .6em; text-align: left; }
th { background: #f4f4f4; }
p.finding { background: #f6f8fa; border-left: 4px solid #4a7ebb;
            padding: .6em .9em; max-width: 1000px; }
.note { color: #555; font-size: .9em; }
"""


def _figure_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


class Report:
    """Collects sections of figures and tables, writes ``index.html``.

    Every figure is also written as a PNG file beside the page, and the
    numbers go to ``results.json``.

    Args:
        out_dir (str): the output folder (created if missing).
        title (str, optional): page title. Default: "captum_inverseset report"
    """

    def __init__(self, out_dir: str, title: str = "captum_inverseset report"):
        self.out_dir = out_dir
        self.title = title
        self.sections: List[Dict[str, Any]] = []
        self.results: Dict[str, Any] = {}
        os.makedirs(out_dir, exist_ok=True)

    def section(self, title: str, text: str = "") -> Dict[str, Any]:
        sec = {"title": title, "text": text, "items": []}
        self.sections.append(sec)
        return sec

    def add_figure(self, sec: Dict[str, Any], fig, name: str, caption: str = ""):
        import matplotlib.pyplot as plt

        data = _figure_png(fig)
        plt.close(fig)
        path = os.path.join(self.out_dir, f"{name}.png")
        with open(path, "wb") as fh:
            fh.write(data)
        sec["items"].append(("figure", data, caption, f"{name}.png"))
        return path

    def add_table(
        self, sec: Dict[str, Any], rows: Dict[str, Any], caption: str = ""
    ) -> None:
        sec["items"].append(("table", rows, caption, None))

    def add_text(self, sec: Dict[str, Any], text: str) -> None:
        """A highlighted paragraph (a finding read from the numbers)."""
        sec["items"].append(("text", text, "", None))

    def add_results(self, key: str, values: Dict[str, Any]) -> None:
        self.results[key] = values

    def _render_item(self, item) -> str:
        kind, payload, caption, fname = item
        cap = html.escape(caption)
        if kind == "text":
            return f'<p class="finding">{html.escape(payload)}</p>'
        if kind == "figure":
            b64 = base64.b64encode(payload).decode("ascii")
            return (
                f'<figure><img alt="{html.escape(fname)}" '
                f'src="data:image/png;base64,{b64}"/>'
                f"<figcaption>{cap}</figcaption></figure>"
            )
        cells = "".join(
            f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt(v))}</td></tr>"
            for k, v in payload.items()
        )
        caption_html = f"<caption>{cap}</caption>" if cap else ""
        return f"<table>{caption_html}{cells}</table>"

    def write(self, footer: Optional[str] = None) -> str:
        body = []
        for sec in self.sections:
            items = "\n".join(self._render_item(i) for i in sec["items"])
            text = f"<p>{html.escape(sec['text'])}</p>" if sec["text"] else ""
            body.append(
                f"<section><h2>{html.escape(sec['title'])}</h2>{text}{items}</section>"
            )
        foot = f'<p class="note">{html.escape(footer)}</p>' if footer else ""
        page = (
            "<!DOCTYPE html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(self.title)}</title><style>{_STYLE}</style>"
            f"</head><body><h1>{html.escape(self.title)}</h1>"
            + "\n".join(body)
            + foot
            + "</body></html>"
        )
        path = os.path.join(self.out_dir, "index.html")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(page)
        with open(os.path.join(self.out_dir, "results.json"), "w") as fh:
            json.dump(self.results, fh, indent=2, default=float)
        return path


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
