"""A change's rollout as an SVG chart made on the server: sites done over time, predicted vs actual.

Two step curves on one time axis: the **predicted** curve (dashed) counts the
sites whose first allowed instant (`outpost schedule`'s ``firstAllowed``) has
passed, the **actual** curve (solid) counts the sites that applied the change
by their reported ``applied.at``. A vertical line marks now. The lines differ
by dash and by their labels, not by colour alone. The SVG is plain markup
(no script, no font or style from elsewhere) and scales to its container.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from html import escape

__all__ = ["rollout_chart"]

WIDTH, HEIGHT = 960, 360
LEFT, RIGHT, TOP, BOTTOM = 56, 150, 20, 44
HORIZON = timedelta(days=2)


def _steps(
    times: Sequence[datetime],
    x: Callable[[datetime], float],
    y: Callable[[int], float],
    end: datetime,
) -> str:
    """A step curve through sorted ``times``: one riser per pixel column, however many sites
    reached it there (10,000 sites draw a few hundred points, not 20,000)."""
    points: list[tuple[float, float]] = []
    count = 0
    column = None
    for moment in times:
        px = round(x(moment) * 2) / 2
        if px != column:
            points.append((px, y(count)))
            column = px
        count += 1
        if len(points) > 1 and points[-1][0] == px and points[-2][0] == px:
            points[-1] = (px, y(count))
        else:
            points.append((px, y(count)))
    if times:
        points.append((x(end), y(count)))
    return " ".join(f"{px:.1f},{py:.1f}" for px, py in points)


def _ticks(start: datetime, end: datetime) -> list[datetime]:
    span = (end - start).total_seconds()
    for step in (3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 2 * 86400, 7 * 86400, 14 * 86400):
        if span / step <= 8:
            break
    first = datetime.fromtimestamp((start.timestamp() // step + 1) * step, start.tzinfo)
    ticks: list[datetime] = []
    moment = first
    while moment < end and len(ticks) < 16:
        ticks.append(moment)
        moment += timedelta(seconds=step)
    return ticks


def rollout_chart(
    *,
    start: datetime,
    now: datetime,
    actual: Sequence[datetime],
    predicted: Sequence[datetime],
    total: int,
) -> str:
    """The chart's SVG markup; ``total`` is the height of the y axis (sites to reach)."""
    points = [start, now, *actual, *predicted]
    begin = min(points)
    # The chart ends a while after now, not at a prediction months away (a freeze
    # into January would squash the days that matter); later ones are counted in text.
    horizon = now + max(HORIZON, (now - begin) / 2)
    end = min(max(points), horizon)
    if end - begin < timedelta(hours=1):
        end = begin + timedelta(hours=1)
    later = sum(1 for p in predicted if p > end)
    shown = [p for p in predicted if p <= end]
    end += (end - begin) * 0.03
    top = max(total, len(actual), len(predicted), 1)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    span = (end - begin).total_seconds()

    def x(moment: datetime) -> float:
        return LEFT + plot_w * (moment - begin).total_seconds() / span

    def y(count: int) -> float:
        return TOP + plot_h * (1 - count / top)

    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="chart-title" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="chart-title">Sites done over time: {len(actual)} applied, '
        f"{sum(1 for p in predicted if p <= now)} predicted by now, of {total}</title>",
        f'<rect class="plot" x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}"/>',
    ]
    for fraction in (0.0, 0.25, 0.5, 0.75, 1.0):
        count = round(top * fraction)
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y(count):.1f}" '
            f'y2="{y(count):.1f}"/><text class="axis" x="{LEFT - 8}" y="{y(count) + 5:.1f}" '
            f'text-anchor="end">{count}</text>'
        )
    for tick in _ticks(begin, end):
        label = tick.strftime("%a %d %H:%M") if tick.hour or tick.minute else tick.strftime("%a %d")
        parts.append(
            f'<line class="grid" x1="{x(tick):.1f}" x2="{x(tick):.1f}" y1="{TOP}" '
            f'y2="{TOP + plot_h}"/><text class="axis" x="{x(tick):.1f}" '
            f'y="{TOP + plot_h + 20}" text-anchor="middle">{escape(label)}</text>'
        )
    parts.append(
        f'<text class="axis" x="{LEFT}" y="{HEIGHT - 4}">UTC · change seen '
        f"{escape(start.strftime('%Y-%m-%d %H:%M'))}</text>"
    )
    now_x = x(now)
    parts.append(
        f'<line class="now" x1="{now_x:.1f}" x2="{now_x:.1f}" y1="{TOP}" y2="{TOP + plot_h}"/>'
        f'<text class="now-label" x="{now_x + 4:.1f}" y="{TOP + 14}">now</text>'
    )
    predicted_now = sum(1 for p in predicted if p <= now)
    if shown:
        parts.append(
            f'<polyline class="predicted" points="{_steps(shown, x, y, end)}">'
            f"<title>predicted: {predicted_now} by now, {len(predicted)} in all</title></polyline>"
        )
    if actual:
        parts.append(
            f'<polyline class="actual" points="{_steps(actual, x, y, now)}">'
            f"<title>actual: {len(actual)} applied</title></polyline>"
        )
    legend_x = WIDTH - RIGHT + 14
    parts.append(
        f'<line class="predicted" x1="{legend_x}" x2="{legend_x + 26}" y1="{TOP + 10}" '
        f'y2="{TOP + 10}"/><text class="legend" x="{legend_x + 32}" y="{TOP + 15}">'
        f"predicted</text>"
        f'<text class="legend-n" id="chart-predicted" x="{legend_x + 32}" y="{TOP + 34}">'
        f"{predicted_now} by now</text>"
        f'<line class="actual" x1="{legend_x}" x2="{legend_x + 26}" y1="{TOP + 64}" '
        f'y2="{TOP + 64}"/><text class="legend" x="{legend_x + 32}" y="{TOP + 69}">actual</text>'
        f'<text class="legend-n" id="chart-actual" x="{legend_x + 32}" y="{TOP + 88}">'
        f"{len(actual)} applied</text>"
        f'<text class="legend-n" x="{legend_x}" y="{TOP + 118}">of {total} sites</text>'
    )
    if later:
        parts.append(
            f'<text class="legend-n" id="chart-later" x="{legend_x}" y="{TOP + 142}">'
            f"{later} predicted later</text>"
        )
    parts.append("</svg>")
    return "".join(parts)
