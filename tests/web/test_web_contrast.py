"""WCAG AA contrast of the denied rows, computed from the colours in app.css (no browser needed)."""

from __future__ import annotations

import re
from pathlib import Path

import ciphercare.services.web as web_pkg

CSS = re.sub(r"/\*.*?\*/", "", (Path(web_pkg.__file__).parent / "static" / "app.css").read_text(encoding="utf-8"),
             flags=re.S)


def luminance(hex_colour: str) -> float:
    h = hex_colour.lstrip("#")
    if len(h) == 3:
        h = "".join(c * 2 for c in h)
    channels = [int(h[i:i + 2], 16) / 255 for i in (0, 2, 4)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def ratio(a: str, b: str) -> float:
    hi, lo = sorted((luminance(a), luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def variables() -> dict[str, str]:
    return dict(re.findall(r"--([a-z-]+):\s*(#[0-9a-fA-F]{3,6})", CSS))


def resolve(value: str, vars_: dict[str, str]) -> str:
    m = re.fullmatch(r"var\(--([a-z-]+)\)", value.strip())
    return vars_[m.group(1)] if m else value.strip()


def rules(selector_part: str) -> list[tuple[str, dict[str, str]]]:
    out = []
    for selectors, body in re.findall(r"([^{}]+)\{([^{}]*)\}", CSS):
        if selector_part in selectors:
            decls = dict((k.strip(), v.strip()) for k, v in re.findall(r"([a-z-]+)\s*:\s*([^;]+)", body))
            out.append((selectors.strip(), decls))
    return out


def test_ratio_formula_matches_known_values() -> None:
    assert round(ratio("#000000", "#ffffff"), 2) == 21.0
    assert round(ratio("#767676", "#ffffff"), 2) == 4.54  # the classic AA grey


def test_every_text_colour_in_a_denied_row_meets_aa() -> None:
    vars_ = variables()
    found = rules(".row-denied")
    backgrounds = {resolve(d["background"], vars_) for s, d in found
                   if s.split(",")[0].strip() == "tr.row-denied" and "background" in d}
    assert backgrounds == {vars_["bad-bg"]}
    row_bg = vars_["bad-bg"]
    checked = []
    for selectors, decls in found:
        if "color" not in decls:
            continue
        fg = resolve(decls["color"], vars_)
        bg = resolve(decls.get("background", row_bg), vars_)
        checked.append((selectors, fg, bg, ratio(fg, bg)))
    assert len(checked) >= 4, checked  # ink, muted, links, the denied badge
    low = [c for c in checked if c[3] < 4.5]
    assert low == [], low
    # the old colours inside the row (muted grey on the red tint) were kept by nothing but this rule
    assert ratio(vars_["muted"], row_bg) < min(c[3] for c in checked if ".muted" in c[0])
