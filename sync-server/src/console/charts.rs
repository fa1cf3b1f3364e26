//! The overview's charts, drawn by `plotters` into SVG the page embeds (ADR 29): no script, no
//! tiles, nothing fetched — a district's console may have no internet.
//!
//! Text is written as SVG `<text>` for the browser to set (plotters' font-free layout estimates
//! its width), so Chinese labels cost nothing here.

use plotters::prelude::*;

/// Colours of series, in order (the console's palette; colour-blind safe first four).
const PALETTE: [RGBColor; 8] = [
    RGBColor(11, 92, 173),
    RGBColor(217, 119, 6),
    RGBColor(26, 127, 55),
    RGBColor(180, 35, 24),
    RGBColor(111, 66, 193),
    RGBColor(8, 145, 178),
    RGBColor(107, 114, 128),
    RGBColor(190, 24, 93),
];

const FONT: (&str, u32) = ("sans-serif", 13);

fn colour(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// Wraps what plotters wrote so the page can style and test it (`id`), and scale it to the page.
fn finish(svg: String, id: &str) -> String {
    svg.replacen("<svg ", &format!(r#"<svg class="chart" id="{id}" preserveAspectRatio="xMinYMin meet" "#), 1)
}

/// One line per series over the days (cases reported per day by category).
pub fn lines(id: &str, days: &[String], series: &[(String, Vec<i64>)]) -> String {
    let mut svg = String::new();
    let max = series.iter().flat_map(|(_, v)| v.iter().copied()).max().unwrap_or(0).max(1);
    let n = days.len().max(1);
    let drawn = (|| -> Result<(), Box<dyn std::error::Error + '_>> {
        let root = SVGBackend::with_string(&mut svg, (760, 300)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .margin(10)
            .x_label_area_size(28)
            .y_label_area_size(40)
            .build_cartesian_2d(0..(n as i32 - 1).max(1), 0..max + max / 10 + 1)?;
        chart
            .configure_mesh()
            .x_labels(n.min(8))
            .x_label_formatter(&|i| {
                days.get(*i as usize).map(|d| d.get(5..).unwrap_or(d).to_owned()).unwrap_or_default()
            })
            .label_style(FONT)
            .light_line_style(RGBColor(238, 242, 247))
            .draw()?;
        for (i, (name, values)) in series.iter().enumerate() {
            let c = colour(i);
            chart
                .draw_series(LineSeries::new(
                    values.iter().enumerate().map(|(d, v)| (d as i32, *v)),
                    c.stroke_width(2),
                ))?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(3)));
        }
        if !series.is_empty() {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .label_font(FONT)
                .background_style(WHITE.mix(0.85))
                .border_style(RGBColor(200, 200, 200))
                .draw()?;
        }
        root.present()?;
        Ok(())
    })();
    if drawn.is_err() {
        return String::new();
    }
    finish(svg, id)
}

/// One bar per label (values ≥ 0), with the value written above it in `unit`.
pub fn bars(id: &str, labels: &[String], values: &[f64], unit: &str) -> String {
    let mut svg = String::new();
    let n = labels.len().max(1);
    let max = values.iter().copied().fold(0.0_f64, f64::max).max(1.0);
    let drawn = (|| -> Result<(), Box<dyn std::error::Error + '_>> {
        let root = SVGBackend::with_string(&mut svg, (760, 260)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .margin(10)
            .x_label_area_size(28)
            .y_label_area_size(40)
            .build_cartesian_2d(-0.5_f64..n as f64 - 0.5, 0.0..max * 1.15)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n + 1)
            .x_label_formatter(&|x| {
                let i = x.round();
                if (x - i).abs() < 1e-6 && i >= 0.0 {
                    labels.get(i as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .label_style(FONT)
            .light_line_style(RGBColor(238, 242, 247))
            .draw()?;
        chart.draw_series(values.iter().enumerate().map(|(i, v)| {
            let x = i as f64;
            Rectangle::new([(x - 0.35, 0.0), (x + 0.35, *v)], colour(0).filled())
        }))?;
        chart.draw_series(values.iter().enumerate().map(|(i, v)| {
            Text::new(format!("{}{unit}", trim(*v)), (i as f64 - 0.2, *v + max * 0.08), FONT.into_font())
        }))?;
        root.present()?;
        Ok(())
    })();
    if drawn.is_err() {
        return String::new();
    }
    finish(svg, id)
}

/// A value as a person reads it: whole numbers without decimals.
fn trim(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else {
        format!("{v:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bar_chart_is_svg_with_each_label_and_value() {
        let svg = bars("c", &["东街".into(), "西街".into()], &[12.0, 3.5], "%");
        assert!(svg.starts_with("<svg class=\"chart\" id=\"c\""), "{}", &svg[..80.min(svg.len())]);
        assert!(svg.contains("东街") && svg.contains("西街"));
        assert!(svg.contains("\n12%\n") && svg.contains("\n3.5%\n"), "{svg}");
        assert!(svg.matches("<rect").count() >= 3, "the background and a bar each: {svg}");
    }

    #[test]
    fn a_line_chart_names_each_series_and_stays_svg_with_nothing_to_draw() {
        let days: Vec<String> = vec!["2026-11-01".into(), "2026-11-02".into(), "2026-11-03".into()];
        let svg = lines("l", &days, &[("噪音".into(), vec![1, 4, 2]), ("堆物".into(), vec![0, 0, 3])]);
        assert!(svg.contains("噪音") && svg.contains("堆物") && svg.contains("11-02"));
        // Each series a line in its palette colour (the axes are black lines too).
        assert!(svg.contains(r##"stroke="#0B5CAD""##) && svg.contains(r##"stroke="#D97706""##), "{svg}");
        let empty = lines("e", &days, &[]);
        assert!(empty.starts_with("<svg") && !empty.contains("#0B5CAD"), "{empty}");
    }
}
