//! The lag chart: lateness p50 and p99 per time bucket, drawn here as
//! inline SVG (no script, no image request; colours come from the
//! stylesheet's classes, since the CSP allows no inline style). Each
//! point carries a `<title>`, which browsers show on hover.

use chrono::{DateTime, Duration, Utc};
use maud::{html, Markup};

use super::layout::ms;
use crate::store::LagPoint;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 200.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 26.0;

/// The window a chart covers and the size of its buckets.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub bucket: Duration,
}

impl Window {
    fn x(&self, t: DateTime<Utc>) -> f64 {
        let span = (self.to - self.from).num_milliseconds().max(1) as f64;
        let at = (t - self.from).num_milliseconds() as f64;
        LEFT + (at / span).clamp(0.0, 1.0) * (WIDTH - LEFT - RIGHT)
    }
}

/// The smallest 1, 2 or 5 × 10^k at or above `v` (at least 1 ms).
fn nice_ceiling(v: f64) -> f64 {
    let v = v.max(1.0);
    let magnitude = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * magnitude)
}

fn y(v: f64, max: f64) -> f64 {
    let plot = HEIGHT - TOP - BOTTOM;
    TOP + plot - (v / max).clamp(0.0, 1.0) * plot
}

fn polyline(points: &[(f64, f64)]) -> String {
    points
        .iter()
        .map(|(x, y)| format!("{x:.1},{y:.1}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The chart of `points` over `window`, titled `label` for screen readers.
pub fn lag_chart(points: &[LagPoint], window: Window, label: &str) -> Markup {
    let max = nice_ceiling(points.iter().map(|p| p.p99_ms).fold(0.0, f64::max));
    let half = window.bucket / 2;
    let at = |p: &LagPoint| window.x(p.bucket + half);
    let p50: Vec<(f64, f64)> = points.iter().map(|p| (at(p), y(p.p50_ms, max))).collect();
    let p99: Vec<(f64, f64)> = points.iter().map(|p| (at(p), y(p.p99_ms, max))).collect();
    html! {
        figure.chart {
            svg viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } role="img" aria-label=(label)
                xmlns="http://www.w3.org/2000/svg" {
                (grid(max, window))
                @if points.is_empty() {
                    text.empty x=(WIDTH / 2.0) y=(HEIGHT / 2.0) text-anchor="middle" {
                        "no runs with a lateness figure in this window"
                    }
                } @else {
                    polyline.p99 points=(polyline(&p99)) {}
                    polyline.p50 points=(polyline(&p50)) {}
                    @for (point, (x, y50)) in points.iter().zip(&p50) {
                        circle.dot50 cx=(format!("{x:.1}")) cy=(format!("{y50:.1}")) r="2.5" {
                            title { (point_title(point)) }
                        }
                    }
                    @for (point, (x, y99)) in points.iter().zip(&p99) {
                        circle.dot99 cx=(format!("{x:.1}")) cy=(format!("{y99:.1}")) r="2.5" {
                            title { (point_title(point)) }
                        }
                    }
                }
            }
            figcaption.legend { span.k50 { "p50" } span.k99 { "p99" } span { (label) } }
        }
    }
}

fn point_title(p: &LagPoint) -> String {
    format!(
        "{}: p50 {}, p99 {} ({} runs)",
        p.bucket.format("%Y-%m-%d %H:%M UTC"),
        ms(Some(p.p50_ms)),
        ms(Some(p.p99_ms)),
        p.runs
    )
}

/// Horizontal lines at quarters of the scale, times along the bottom.
fn grid(max: f64, window: Window) -> Markup {
    let quarters = [0.0, 0.25, 0.5, 0.75, 1.0];
    let span = window.to - window.from;
    let ticks: Vec<DateTime<Utc>> = (0..=4).map(|k| window.from + span * k / 4).collect();
    let time_format = if span > Duration::hours(36) {
        "%m-%d %H:%M"
    } else {
        "%H:%M"
    };
    html! {
        @for q in quarters {
            line.grid x1=(LEFT) x2=(WIDTH - RIGHT) y1=(y(max * q, max)) y2=(y(max * q, max)) {}
            text.axis x=(LEFT - 6.0) y=(y(max * q, max) + 4.0) text-anchor="end" {
                (ms(Some(max * q)))
            }
        }
        @for (k, t) in ticks.iter().enumerate() {
            // The end labels stay inside the picture.
            @let anchor = match k { 0 => "start", 4 => "end", _ => "middle" };
            text.axis x=(format!("{:.1}", window.x(*t))) y=(HEIGHT - 8.0) text-anchor=(anchor) {
                (t.format(time_format)) " UTC"
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_end_on_round_numbers() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(3.2), 5.0);
        assert_eq!(nice_ceiling(120.0), 200.0);
        assert_eq!(nice_ceiling(1000.0), 1000.0);
        assert_eq!(nice_ceiling(5001.0), 10000.0);
    }

    #[test]
    fn points_fall_inside_the_plot() {
        let to = Utc::now();
        let window = Window {
            from: to - Duration::hours(6),
            to,
            bucket: Duration::minutes(15),
        };
        let point = LagPoint {
            bucket: to - Duration::hours(1),
            runs: 3,
            p50_ms: 10.0,
            p99_ms: 80.0,
        };
        let svg = lag_chart(&[point], window, "lag").into_string();
        assert!(svg.contains("<polyline class=\"p99\""), "{svg}");
        assert!(svg.contains("p50 10 ms, p99 80 ms (3 runs)"), "{svg}");
        let empty = lag_chart(&[], window, "lag").into_string();
        assert!(empty.contains("no runs with a lateness figure"));
    }
}
