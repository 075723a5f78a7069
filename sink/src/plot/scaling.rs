//! Elapsed time against workers, from a CSV such as
//! `scripts/bench.sh --plot DIR` writes:
//!
//! ```text
//! workers,ideal,push,credit,credit+cost
//! 1,4891.0,4915.2,4937.1,4940.0
//! 4,1222.8,1431.9,1243.6,1232.6
//! ```
//!
//! The first column is the worker count, each other column a line (its
//! header names it) of times in milliseconds; an empty cell was not
//! measured. A column named `ideal` is drawn dashed. Both axes are
//! logarithmic: the ideal (sum / workers) is then a straight line, and a
//! line's height above it is its overhead, the same distance for the same
//! percentage at any worker count.

use std::path::Path;

use plotters::element::DashedPathElement;
use plotters::prelude::*;

use super::{Tag, drawing, escape, read_input, tag, tag_all};
use crate::Error;

/// The figures: lines of elapsed times over worker counts.
#[derive(Debug, Clone, PartialEq)]
pub struct Scaling {
    names: Vec<String>,
    /// By worker count; one cell per name.
    rows: Vec<(u32, Vec<Option<f64>>)>,
}

/// The column drawn as the ideal.
pub const IDEAL: &str = "ideal";

impl Scaling {
    /// Reads a CSV (see [`Scaling::parse`]).
    pub fn read(path: &Path) -> Result<Scaling, Error> {
        Scaling::parse(path, &read_input(path)?)
    }

    /// Reads the figures in `text` (named `path` in errors). Blank lines
    /// and lines starting with `#` are skipped; anything else that is not
    /// as the module says is an error naming its line.
    pub fn parse(path: &Path, text: &str) -> Result<Scaling, Error> {
        let bad = |n: usize, reason: String| Error::Plot {
            path: path.to_owned(),
            reason: format!("line {n}: {reason}"),
        };
        let mut lines = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim()))
            .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'));
        let Some((n, header)) = lines.next() else {
            return Err(Error::Plot {
                path: path.to_owned(),
                reason: "no header (workers,NAME,…): nothing to draw".into(),
            });
        };
        let mut cells = header.split(',').map(str::trim);
        if cells.next() != Some("workers") {
            return Err(bad(
                n,
                format!("the header {header:?} does not start with `workers`"),
            ));
        }
        let names: Vec<String> = cells.map(str::to_owned).collect();
        if names.is_empty() || names.iter().any(String::is_empty) {
            return Err(bad(n, "the header names no line, or an empty one".into()));
        }
        if let Some(twice) = names
            .iter()
            .find(|m| names.iter().filter(|o| o == m).count() > 1)
        {
            return Err(bad(n, format!("the header names {twice:?} twice")));
        }
        let mut rows: Vec<(u32, Vec<Option<f64>>)> = Vec::new();
        for (n, line) in lines {
            let cells: Vec<&str> = line.split(',').map(str::trim).collect();
            if cells.len() != names.len() + 1 {
                return Err(bad(
                    n,
                    format!("{} cells, the header has {}", cells.len(), names.len() + 1),
                ));
            }
            let workers = cells[0]
                .parse::<u32>()
                .ok()
                .filter(|&w| w > 0)
                .ok_or_else(|| bad(n, format!("{:?} is not a number of workers", cells[0])))?;
            if rows.iter().any(|(w, _)| *w == workers) {
                return Err(bad(n, format!("a second row for {workers} workers")));
            }
            let mut values = Vec::with_capacity(names.len());
            for (cell, name) in cells[1..].iter().zip(&names) {
                if cell.is_empty() {
                    values.push(None);
                    continue;
                }
                let ms = cell
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite() && *v > 0.0);
                values.push(Some(ms.ok_or_else(|| {
                    bad(n, format!("{name}: {cell:?} is not a time in ms (above 0)"))
                })?));
            }
            rows.push((workers, values));
        }
        if rows.iter().all(|(_, v)| v.iter().all(Option::is_none)) {
            return Err(Error::Plot {
                path: path.to_owned(),
                reason: "no figures under the header: nothing to draw".into(),
            });
        }
        rows.sort_by_key(|(w, _)| *w);
        Ok(Scaling { names, rows })
    }

    /// The lines' names, in the CSV's order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// A line's points: (workers, ms).
    pub fn points(&self, line: usize) -> Vec<(u32, f64)> {
        self.rows
            .iter()
            .filter_map(|(w, v)| v[line].map(|ms| (*w, ms)))
            .collect()
    }

    /// Draws the figures as SVG under `title`. Each line is a `polyline
    /// class="series"` with `data-series` its name (the ideal's dashes
    /// each one).
    pub fn draw(&self, title: &str) -> Result<String, Error> {
        let (width, height) = (900, 560);
        let values = self.rows.iter().flat_map(|(_, v)| v.iter().flatten());
        let (lo, hi) = values.fold((f64::MAX, 0f64), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        let log2 = |w: u32| f64::from(w).log2();
        let (w_lo, w_hi) = (self.rows[0].0, self.rows[self.rows.len() - 1].0);
        let x_range = (log2(w_lo) - 0.3)..(log2(w_hi) + 0.3);
        let mut lines = Vec::new();
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
            root.fill(&WHITE).map_err(drawing)?;
            let mut chart = ChartBuilder::on(&root)
                .caption(title, ("sans-serif", 20).into_font().style(FontStyle::Bold))
                .margin(16)
                .x_label_area_size(48)
                .y_label_area_size(72)
                .build_cartesian_2d(x_range, ((lo / 1.25)..(hi * 1.25)).log_scale())
                .map_err(drawing)?;
            // The x axis is log2(workers), labelled at whole powers of two.
            chart
                .configure_mesh()
                .x_labels(16)
                .x_label_formatter(&|x| {
                    let whole = x.round();
                    if (x - whole).abs() < 1e-6 {
                        format!("{}", 2f64.powf(whole))
                    } else {
                        String::new()
                    }
                })
                .y_label_formatter(&|y| format!("{y:.0}"))
                .x_desc("workers")
                .y_desc("elapsed, ms")
                .y_labels(20)
                .bold_line_style(BLACK.mix(0.12))
                .light_line_style(TRANSPARENT)
                .draw()
                .map_err(drawing)?;
            let mut colours = PALETTE.iter().cycle();
            let ideal = self.names.iter().position(|n| n == IDEAL);
            for (i, name) in self.names.iter().enumerate() {
                let points = self.points(i);
                let Some(&(last_w, last_ms)) = points.last() else {
                    continue;
                };
                if Some(i) == ideal {
                    continue;
                }
                let colour = *colours.next().unwrap_or(&BLACK);
                let points: Vec<(f64, f64)> =
                    points.into_iter().map(|(w, ms)| (log2(w), ms)).collect();
                lines.push(Tag {
                    attrs: format!(
                        "class=\"series\" data-series=\"{}\" data-points=\"{}\"",
                        escape(name),
                        points.len()
                    ),
                    title: Some(name.clone()),
                });
                // The legend says how far above the ideal the line ends.
                let over = ideal
                    .and_then(|j| self.points(j).into_iter().find(|(w, _)| *w == last_w))
                    .map(|(_, ideal)| (last_ms / ideal - 1.0) * 100.0);
                let label = match over {
                    Some(pct) => format!("{name}: {pct:+.1} % at {last_w}"),
                    None => name.clone(),
                };
                chart
                    .draw_series(LineSeries::new(
                        points.iter().copied(),
                        colour.mix(SERIES_ALPHA).stroke_width(3),
                    ))
                    .map_err(drawing)?
                    .label(label)
                    .legend(move |(x, y)| {
                        PathElement::new([(x, y), (x + 24, y)], colour.stroke_width(3))
                    });
                chart
                    .draw_series(points.iter().map(|&p| Circle::new(p, 4, colour.filled())))
                    .map_err(drawing)?;
            }
            // The ideal last, on top: the best lines lie right on it.
            if let Some(j) = ideal {
                let points: Vec<(f64, f64)> = self
                    .points(j)
                    .into_iter()
                    .map(|(w, ms)| (log2(w), ms))
                    .collect();
                let style = BLACK.mix(IDEAL_ALPHA).stroke_width(2);
                chart
                    .draw_series(DashedLineSeries::new(points, 7, 5, style))
                    .map_err(drawing)?
                    .label("ideal: sum / workers")
                    .legend(|(x, y)| {
                        DashedPathElement::new([(x, y), (x + 24, y)], 7, 5, BLACK.stroke_width(2))
                    });
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.9))
                .border_style(BLACK.mix(0.3))
                .label_font(("sans-serif", 14))
                .draw()
                .map_err(drawing)?;
            root.present().map_err(drawing)?;
        }
        let svg = tag(&svg, "polyline", SERIES_ALPHA, &lines)?;
        if !self.names.iter().any(|n| n == IDEAL) {
            return Ok(svg);
        }
        let ideal = Tag {
            attrs: format!("class=\"series ideal\" data-series=\"{IDEAL}\""),
            title: Some("ideal: sum / workers".into()),
        };
        tag_all(&svg, "polyline", IDEAL_ALPHA, &ideal)
    }
}

/// The lines' colours (Okabe and Ito's), in the CSV's order.
const PALETTE: [RGBColor; 6] = [
    RGBColor(0xD5, 0x5E, 0x00),
    RGBColor(0x00, 0x72, 0xB2),
    RGBColor(0x00, 0x9E, 0x73),
    RGBColor(0xCC, 0x79, 0xA7),
    RGBColor(0xE6, 0x9F, 0x00),
    RGBColor(0x56, 0xB4, 0xE9),
];

/// The marks that [`tag`] finds: opacities no other `polyline` has (the
/// grid's are 0.12, the legend's are opaque).
const SERIES_ALPHA: f64 = 0.9;
const IDEAL_ALPHA: f64 = 0.8;

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Scaling, Error> {
        Scaling::parse(Path::new("s.csv"), text)
    }

    #[test]
    fn rows_are_read_by_worker_count_with_gaps_and_comments() {
        let s = parse("# medians\nworkers,ideal,push\n4,1222.8,1431.9\n\n1,4891,\n2,2445.5,2580\n")
            .unwrap();
        assert_eq!(s.names(), ["ideal", "push"]);
        assert_eq!(s.points(0), [(1, 4891.0), (2, 2445.5), (4, 1222.8)]);
        assert_eq!(
            s.points(1),
            [(2, 2580.0), (4, 1431.9)],
            "the empty cell left out"
        );
    }

    #[test]
    fn bad_figures_name_their_line() {
        for (text, says) in [
            ("", "no header"),
            ("# only a comment\n", "no header"),
            ("w,push\n1,2\n", "line 1: the header \"w,push\""),
            ("workers\n1\n", "line 1: the header names no line"),
            ("workers,a,a\n", "line 1: the header names \"a\" twice"),
            ("workers,push\n", "no figures"),
            ("workers,push\n1,2,3\n", "line 2: 3 cells"),
            (
                "workers,push\n0,2\n",
                "line 2: \"0\" is not a number of workers",
            ),
            (
                "workers,push\n1,fast\n",
                "line 2: push: \"fast\" is not a time",
            ),
            ("workers,push\n1,-3\n", "line 2: push: \"-3\""),
            (
                "workers,push\n1,2\n1,3\n",
                "line 3: a second row for 1 workers",
            ),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(says) && err.contains("s.csv"), "{says}: {err}");
        }
    }

    #[test]
    fn each_line_is_a_tagged_polyline_and_the_ideal_is_dashed() {
        let s =
            parse("workers,ideal,push,credit\n1,100,101,102\n2,50,60,52\n4,25,35,27\n").unwrap();
        let svg = s.draw("t & t").unwrap();
        let doc = roxmltree::Document::parse(&svg).unwrap();
        let series = |name: &str| {
            doc.descendants()
                .filter(|n| n.attribute("data-series") == Some(name))
                .count()
        };
        assert_eq!((series("push"), series("credit")), (1, 1));
        assert!(series("ideal") > 1, "dashes");
        let push = doc
            .descendants()
            .find(|n| n.attribute("data-series") == Some("push"))
            .unwrap();
        let points = push.attribute("points").unwrap().split_whitespace().count();
        assert_eq!(points, 3);
        let texts: String = doc.descendants().filter_map(|n| n.text()).collect();
        assert!(
            texts.contains("t & t") && texts.contains("credit"),
            "{texts}"
        );
    }
}
