"""The account page's chart: health score and churn probability over the stored history, drawn
as inline SVG on the server (no script, nothing to download)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

WIDTH, HEIGHT = 640, 220
LEFT, RIGHT, TOP, BOTTOM = 48, 16, 12, 40


@dataclass(frozen=True)
class Series:
    name: str
    css: str
    points: list[tuple[float, float, str]]  # x, y, the value as the tooltip says it

    @property
    def path(self) -> str:
        return " ".join(f"{x:.1f},{y:.1f}" for x, y, _ in self.points)


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    series: list[Series]
    y_ticks: list[tuple[float, str]]
    x_ticks: list[tuple[float, str, str]]  # x, label, text-anchor
    left: int = LEFT
    right: int = WIDTH - RIGHT
    top: int = TOP
    bottom: int = HEIGHT - BOTTOM


def history_chart(history: Sequence[dict[str, Any]]) -> Chart | None:
    """The chart of an account's stored scores (newest first, as the store returns them): one
    point per scoring date (its most recent score), both series on 0-100 (probability in %)."""
    by_date: dict[Any, dict[str, Any]] = {}
    for row in history:
        by_date.setdefault(row["as_of"], row)
    rows = sorted(by_date.values(), key=lambda r: r["as_of"])
    if not rows:
        return None
    span = max(len(rows) - 1, 1)

    def x(i: int) -> float:
        return LEFT + (WIDTH - LEFT - RIGHT) * (i / span if len(rows) > 1 else 0.5)

    def y(value: float) -> float:
        return TOP + (HEIGHT - TOP - BOTTOM) * (1 - value / 100)

    health = Series("Health score", "health", [
        (x(i), y(r["health_score"]), f"{r['as_of']}: health {r['health_score']:.0f}")
        for i, r in enumerate(rows) if r["health_score"] is not None])
    risk = Series("Churn probability (%)", "risk", [
        (x(i), y(100 * r["churn_probability"]),
         f"{r['as_of']}: churn probability {r['churn_probability']:.0%}")
        for i, r in enumerate(rows)])
    step = max(1, len(rows) // 6)
    ticks = sorted({*range(0, len(rows), step), len(rows) - 1})
    # The outer labels lean inwards, so they stay inside the drawing.
    x_ticks = [(x(i), str(rows[i]["as_of"]), "middle" if len(rows) == 1 else
                "start" if i == 0 else "end" if i == len(rows) - 1 else "middle") for i in ticks]
    return Chart(WIDTH, HEIGHT, [health, risk], [(y(v), str(v)) for v in (0, 25, 50, 75, 100)],
                 x_ticks)
