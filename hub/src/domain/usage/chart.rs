//! A bar chart as SVG, drawn on the server: no script, readable by screen readers (a title,
//! a description and a label on every bar), and sized by the page.

use std::fmt::Write;

/// One bar: its label under it and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub label: String,
    pub value: f64,
}

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 44.0;
const BOTTOM: f64 = 28.0;
const TOP: f64 = 12.0;

/// The chart of `bars`, titled `title`, values in `unit`.
pub fn bars(title: &str, unit: &str, bars: &[Bar]) -> String {
    let max = bars.iter().map(|bar| bar.value).fold(0.0, f64::max);
    let scale_max = nice_ceiling(max);
    let plot_height = HEIGHT - BOTTOM - TOP;
    let slot = (WIDTH - LEFT) / bars.len().max(1) as f64;
    let total: f64 = bars.iter().map(|bar| bar.value).sum();
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg class=\"chart\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" \
         aria-labelledby=\"chart-title chart-desc\" xmlns=\"http://www.w3.org/2000/svg\">\
         <title id=\"chart-title\">{}</title><desc id=\"chart-desc\">{} bars, {} {} in all; \
         the highest {} {}.</desc>",
        escape(title),
        bars.len(),
        round(total),
        escape(unit),
        round(max),
        escape(unit)
    );
    let _ = write!(
        svg,
        "<line class=\"axis\" x1=\"{LEFT}\" y1=\"{}\" x2=\"{WIDTH}\" y2=\"{}\"/>\
         <text class=\"tick\" x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\
         <text class=\"tick\" x=\"{}\" y=\"{}\" text-anchor=\"end\">0</text>",
        HEIGHT - BOTTOM,
        HEIGHT - BOTTOM,
        LEFT - 6.0,
        TOP + 10.0,
        round(scale_max),
        LEFT - 6.0,
        HEIGHT - BOTTOM
    );
    let label_every = (bars.len() / 10).max(1);
    for (index, bar) in bars.iter().enumerate() {
        let height = if scale_max > 0.0 {
            bar.value / scale_max * plot_height
        } else {
            0.0
        };
        let x = LEFT + index as f64 * slot + slot * 0.15;
        let _ = write!(
            svg,
            "<rect class=\"bar\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{height:.1}\">\
             <title>{}: {} {}</title></rect>",
            HEIGHT - BOTTOM - height,
            slot * 0.7,
            escape(&bar.label),
            round(bar.value),
            escape(unit)
        );
        if index % label_every == 0 {
            let _ = write!(
                svg,
                "<text class=\"tick\" x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                x + slot * 0.35,
                HEIGHT - 8.0,
                escape(&bar.label)
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

/// A round number at or above `value` for the top of the scale.
fn nice_ceiling(value: f64) -> f64 {
    if value <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|step| step * magnitude)
        .find(|candidate| *candidate >= value)
        .unwrap_or(10.0 * magnitude)
}

fn round(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_a_round_top_and_labels_are_escaped() {
        let chart = bars(
            "Hours <per> day",
            "h",
            &[
                Bar {
                    label: "Mon".into(),
                    value: 3.0,
                },
                Bar {
                    label: "Tue".into(),
                    value: 7.5,
                },
            ],
        );
        assert!(chart.starts_with("<svg") && chart.ends_with("</svg>"));
        assert!(chart.contains("Hours &lt;per&gt; day"));
        assert!(chart.contains("2 bars, 10.5 h in all; the highest 7.5 h."));
        assert_eq!(chart.matches("<rect").count(), 2);
        // The top of the scale is 10: the 7.5 h bar is three quarters of the plot high.
        assert!(chart.contains(&format!("height=\"{:.1}\"", 0.75 * (HEIGHT - BOTTOM - TOP))));
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(12.0), 20.0);
        assert_eq!(nice_ceiling(50.0), 50.0);
    }
}
