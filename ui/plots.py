"""Server-rendered SVG bar charts of a feature's training distribution against what serving returned.

Numbers are drawn over the training set's ten quantile bins, strings and booleans over its top
categories (the rest folded into "(other)"); the serving shares come from the skew report, over the
same buckets, so the bars are what the PSI compares.
"""
from __future__ import annotations

from typing import Any

from markupsafe import Markup, escape

WIDTH, HEIGHT = 420, 200
LEFT, RIGHT, TOP, BOTTOM = 40, 8, 22, 52
MAX_BARS = 12
LABEL_CHARS = 12


def buckets(training: dict[str, Any], skew: dict[str, Any] | None) -> tuple[list[str], list[float], list[float] | None]:
    """(bucket labels, training shares, serving shares or None when nothing was served)."""
    skew = skew or {}
    if training.get("kind") == "numeric":
        edges = training.get("bin_edges") or []
        labels = [f"{_short(a)}–{_short(b)}" for a, b in zip(edges, edges[1:])] or ["all"]
        return labels, list(training.get("bin_shares") or [1.0]), skew.get("serving_bin_shares")
    top = training.get("top") or []
    labels = [str(t["value"]) for t in top] + ["(other)"]
    trained = [t["share"] for t in top] + [training.get("other_share", 0.0)]
    served = skew.get("serving_shares")
    if not trained[-1] and not (served and served[-1]):  # nothing outside the top categories: no "(other)"
        labels, trained, served = labels[:-1], trained[:-1], served[:-1] if served else None
    return _fold(labels, trained, served)


def _fold(labels: list[str], trained: list[float],
          served: list[float] | None) -> tuple[list[str], list[float], list[float] | None]:
    """At most MAX_BARS buckets: the rest are added to the last one, "(other)"."""
    if len(labels) <= MAX_BARS:
        return labels, trained, served
    keep = MAX_BARS - 1
    fold = lambda shares: shares[:keep] + [sum(shares[keep:])]  # noqa: E731 - one line, used twice
    return labels[:keep] + ["(other)"], fold(trained), fold(served) if served else None


def _short(number: float) -> str:
    return f"{number:.3g}"


def distribution_svg(feature: str, training: dict[str, Any], skew: dict[str, Any] | None) -> Markup:
    """An inline <svg> of training (and serving) shares per bucket, with a title and a legend."""
    labels, trained, served = buckets(training, skew)
    top = max(trained + (served or []) + [1e-9])
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / len(labels)
    bar = slot / (2.6 if served else 1.6)
    title = f"{feature}: training vs serving distribution" if served else f"{feature}: training distribution"
    parts = [f'<svg class="plot" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}" '
             f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>',
             _axes(top, plot_w, plot_h), _legend(bool(served))]
    for i, name in enumerate(labels):
        x = LEFT + i * slot + (slot - bar * (2 if served else 1)) / 2
        parts.append(_bar(x, bar, trained[i], top, plot_h, "train", f"{name}: training {trained[i]:.1%}"))
        if served:
            parts.append(_bar(x + bar, bar, served[i], top, plot_h, "serve", f"{name}: serving {served[i]:.1%}"))
        parts.append(_label(LEFT + (i + 0.5) * slot, name))
    parts.append("</svg>")
    return Markup("".join(parts))


def _axes(top: float, plot_w: float, plot_h: float) -> str:
    base = TOP + plot_h
    return (f'<line class="axis" x1="{LEFT}" y1="{base}" x2="{LEFT + plot_w}" y2="{base}"/>'
            f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{base}"/>'
            f'<text class="tick" x="{LEFT - 4}" y="{base}" text-anchor="end">0%</text>'
            f'<text class="tick" x="{LEFT - 4}" y="{TOP + 8}" text-anchor="end">{top:.0%}</text>')


def _legend(served: bool) -> str:
    legend = f'<rect class="train" x="{LEFT + 4}" y="4" width="10" height="10"/>' \
             f'<text class="tick" x="{LEFT + 18}" y="13">training</text>'
    if served:
        legend += f'<rect class="serve" x="{LEFT + 80}" y="4" width="10" height="10"/>' \
                  f'<text class="tick" x="{LEFT + 94}" y="13">serving</text>'
    return legend


def _bar(x: float, width: float, share: float, top: float, plot_h: float, kind: str, tip: str) -> str:
    height = plot_h * share / top
    return (f'<rect class="bar {kind}" x="{x:.1f}" y="{TOP + plot_h - height:.1f}" width="{width:.1f}" '
            f'height="{height:.1f}"><title>{escape(tip)}</title></rect>')


def _label(x: float, name: str) -> str:
    text = name if len(name) <= LABEL_CHARS else name[:LABEL_CHARS - 1] + "…"
    y = HEIGHT - BOTTOM + 12
    return (f'<text class="tick" x="{x:.1f}" y="{y}" text-anchor="end" '
            f'transform="rotate(-35 {x:.1f} {y})">{escape(text)}</text>')
