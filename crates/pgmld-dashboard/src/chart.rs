//! Training curves as inline SVG, drawn on the server: the page needs no charting library,
//! and the live update swaps in the same markup the first render produced.

use std::fmt::Write;

/// One line of a chart.
pub struct Series<'a> {
    /// Legend text.
    pub name: &'a str,
    /// CSS class of its line and points (`loss`, `eval`).
    pub class: &'a str,
    /// (x, y) points in x order.
    pub points: &'a [(f64, f64)],
}

const W: f64 = 640.0;
const H: f64 = 260.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 14.0;
const BOTTOM: f64 = 34.0;

/// An SVG chart of `series` over x from 0 to `x_max` (the planned steps, so a running job's
/// curve grows from left to right; the last point's x when larger or unknown). The root
/// carries `data-points`, the number of points drawn, which tests read.
pub fn svg(series: &[Series], x_max: Option<f64>) -> String {
    let points = series.iter().map(|s| s.points.len()).sum::<usize>();
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="training curve" data-points="{points}" xmlns="http://www.w3.org/2000/svg">"#
    );
    if points == 0 {
        let _ = write!(
            out,
            r#"<text x="{}" y="{}" class="empty" text-anchor="middle">no training logs yet</text></svg>"#,
            W / 2.0,
            H / 2.0
        );
        return out;
    }
    let all = || series.iter().flat_map(|s| s.points.iter());
    let last_x = all().map(|p| p.0).fold(0.0, f64::max);
    let x_hi = x_max.unwrap_or(last_x).max(last_x).max(1.0);
    let (mut y_lo, mut y_hi) =
        all().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| (lo.min(p.1), hi.max(p.1)));
    // 8 % of the range above and below; a flat line gets a band around its value.
    let range = y_hi - y_lo;
    let pad = if range > 0.0 { range * 0.08 } else { (y_hi.abs() * 0.05).max(1e-3) };
    y_lo -= pad;
    y_hi += pad;
    let x = |v: f64| LEFT + (v / x_hi) * (W - LEFT - RIGHT);
    let y = |v: f64| TOP + (1.0 - (v - y_lo) / (y_hi - y_lo)) * (H - TOP - BOTTOM);

    // Grid: four horizontal lines with their values, the x axis with 0 and x_hi.
    for i in 0..=4 {
        let v = y_lo + (y_hi - y_lo) * i as f64 / 4.0;
        let _ = write!(
            out,
            r#"<line class="grid" x1="{LEFT}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}"/><text class="tick" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            W - RIGHT,
            LEFT - 6.0,
            y(v) + 4.0,
            tick(v),
            y = y(v),
        );
    }
    let _ = write!(
        out,
        r#"<text class="tick" x="{LEFT}" y="{:.1}">0</text><text class="tick" x="{:.1}" y="{:.1}" text-anchor="end">step {}</text>"#,
        H - 12.0,
        W - RIGHT,
        H - 12.0,
        x_hi.round()
    );
    for (i, s) in series.iter().enumerate().filter(|(_, s)| !s.points.is_empty()) {
        let path: Vec<String> =
            s.points.iter().map(|&(px, py)| format!("{:.1},{:.1}", x(px), y(py))).collect();
        let _ = write!(
            out,
            r#"<polyline class="line {c}" fill="none" points="{}"/>"#,
            path.join(" "),
            c = s.class
        );
        for &(px, py) in s.points {
            let _ = write!(
                out,
                r#"<circle class="pt {c}" cx="{:.1}" cy="{:.1}" r="2"><title>step {px}: {py:.4}</title></circle>"#,
                x(px),
                y(py),
                c = s.class
            );
        }
        let lx = LEFT + 10.0 + 130.0 * i as f64;
        let _ = write!(
            out,
            r#"<rect class="key {c}" x="{lx:.1}" y="{:.1}" width="10" height="10"/><text class="legend" x="{:.1}" y="{:.1}">{}</text>"#,
            H - 21.0,
            lx + 14.0,
            H - 12.0,
            s.name,
            c = s.class
        );
    }
    out.push_str("</svg>");
    out
}

fn tick(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_chart_says_so() {
        let s = svg(&[Series { name: "loss", class: "loss", points: &[] }], Some(10.0));
        assert!(s.contains(r#"data-points="0""#) && s.contains("no training logs yet"), "{s}");
    }

    #[test]
    fn points_are_placed_over_the_planned_steps() {
        let loss = [(1.0, 2.0), (5.0, 1.0)];
        let eval = [(5.0, 1.5)];
        let s = svg(
            &[
                Series { name: "train loss", class: "loss", points: &loss },
                Series { name: "eval loss", class: "eval", points: &eval },
            ],
            Some(10.0),
        );
        assert!(s.contains(r#"data-points="3""#), "{s}");
        assert_eq!(s.matches("<circle").count(), 3);
        assert_eq!(s.matches("<polyline").count(), 2);
        // step 5 of 10 sits halfway along the plot area: 56 + 0.5 * (640 - 68) = 342.
        assert!(s.contains(r#"cx="342.0""#), "{s}");
        assert!(s.contains("step 10"));
        // The highest loss is near the top, the lowest near the bottom.
        let top = TOP + (H - TOP - BOTTOM) * (0.08 / 1.16);
        assert!(s.contains(&format!(r#"cy="{top:.1}""#)), "{s}");
    }

    #[test]
    fn one_point_or_a_flat_line_still_draws() {
        let s = svg(&[Series { name: "l", class: "loss", points: &[(3.0, 0.0)] }], None);
        assert!(!s.contains("NaN") && !s.contains("inf"), "{s}");
        assert!(s.contains(r#"data-points="1""#));
    }
}
