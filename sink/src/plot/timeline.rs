//! A batch's timeline, from its results file: one lane per worker
//! thread, one bar per result from `start_ms` to `end_ms`, coloured by
//! status; idle time is the gaps.
//!
//! The times are the sink's view (see the output's `Line`): when each
//! result reached the sink, less the run time its worker measured, from
//! the batch's GO. A bar may so sit up to a millisecond or so late (a
//! packed result waits on its worker), and a result queued while the sink
//! was away sits as late as it came.
//!
//! [`Timeline::parse`] lays the results out (no drawing, tested on its
//! own); [`Timeline::draw`] draws them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{Tag, drawing, escape, read_input, style, tag};
use crate::Error;
use crate::output::Line;

/// What a bar's colour says: the result's status, or that the ventilator
/// gave the task up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Shade {
    /// `ok`.
    Ok,
    /// `failed`.
    Failed,
    /// `timed_out`.
    TimedOut,
    /// `panicked`.
    Panicked,
    /// `rejected`.
    Rejected,
    /// The ventilator's verdict (worker `"ventilator"`): sent too often.
    GivenUp,
}

impl Shade {
    /// Every shade, in the legend's order.
    pub const ALL: [Shade; 6] = [
        Shade::Ok,
        Shade::Failed,
        Shade::TimedOut,
        Shade::Panicked,
        Shade::Rejected,
        Shade::GivenUp,
    ];

    /// The shade of a line's `status`, from a worker or the ventilator.
    pub fn of(status: &str, from_ventilator: bool) -> Option<Shade> {
        if from_ventilator {
            return Some(Shade::GivenUp);
        }
        Some(match status {
            "ok" => Shade::Ok,
            "failed" => Shade::Failed,
            "timed_out" => Shade::TimedOut,
            "panicked" => Shade::Panicked,
            "rejected" => Shade::Rejected,
            _ => return None,
        })
    }

    /// Its name in the legend and as a bar's class (`given_up`).
    pub fn name(self) -> &'static str {
        match self {
            Shade::Ok => "ok",
            Shade::Failed => "failed",
            Shade::TimedOut => "timed_out",
            Shade::Panicked => "panicked",
            Shade::Rejected => "rejected",
            Shade::GivenUp => "given_up",
        }
    }

    /// Its words in the legend.
    fn label(self) -> &'static str {
        match self {
            Shade::GivenUp => "given up",
            Shade::TimedOut => "timed out",
            other => other.name(),
        }
    }

    /// Its colour (Okabe and Ito's, which stay apart for colour-blind
    /// eyes).
    fn colour(self) -> RGBColor {
        match self {
            Shade::Ok => RGBColor(0x00, 0x9E, 0x73),
            Shade::Failed => RGBColor(0xD5, 0x5E, 0x00),
            Shade::TimedOut => RGBColor(0xE6, 0x9F, 0x00),
            Shade::Panicked => RGBColor(0xCC, 0x79, 0xA7),
            Shade::Rejected => RGBColor(0x00, 0x72, 0xB2),
            Shade::GivenUp => RGBColor(0x44, 0x44, 0x44),
        }
    }
}

/// A lane: a worker thread, or the ventilator's verdicts (below the rest).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Lane {
    /// One thread of one worker process.
    Thread {
        /// The worker's name (`host:pid`).
        worker: String,
        /// The thread within it.
        thread: u16,
    },
    /// Tasks the ventilator gave up, placed when the sink heard so.
    GivenUp,
}

impl fmt::Display for Lane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lane::Thread { worker, thread } => write!(f, "{worker}:{thread}"),
            Lane::GivenUp => f.write_str("given up (ventilator)"),
        }
    }
}

/// One result on the timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bar {
    /// The task.
    pub task: u64,
    /// Its attempt (more than 1: the task was sent again).
    pub attempt: u32,
    /// Its lane, an index into [`Timeline::lanes`].
    pub lane: usize,
    /// Its colour.
    pub shade: Shade,
    /// When it started, µs from the batch's start.
    pub start_us: u64,
    /// When its result reached the sink, µs from the batch's start.
    pub end_us: u64,
    /// Its run time as its worker measured it.
    pub run_us: u64,
}

/// One batch's results, laid out in lanes.
#[derive(Debug, Clone)]
pub struct Timeline {
    batch: String,
    lanes: Vec<Lane>,
    /// By lane, then start.
    bars: Vec<Bar>,
    /// Results without times (written by an older sink, or before GO):
    /// not drawn, but counted in the title.
    untimed: usize,
}

/// What the timeline shows of one line before the lanes are known.
struct Placed {
    lane: Lane,
    bar: Bar,
}

impl Timeline {
    /// Reads a results file (see [`Timeline::parse`]).
    pub fn read(path: &Path) -> Result<Timeline, Error> {
        Timeline::parse(path, &read_input(path)?)
    }

    /// Lays out the results in `text` (named `path` in errors): each line
    /// a result of one batch, as a sink writes them. A line that is not,
    /// no result at all, or no result with times is an error naming it.
    pub fn parse(path: &Path, text: &str) -> Result<Timeline, Error> {
        let bad = |reason: String| Error::Plot {
            path: path.to_owned(),
            reason,
        };
        let mut batch: Option<&str> = None;
        let mut placed = Vec::new();
        let mut untimed = 0;
        let mut lines = 0;
        for (i, text) in text.lines().enumerate() {
            let n = i + 1;
            if text.trim().is_empty() {
                continue;
            }
            lines += 1;
            let line: Line = serde_json::from_str(text)
                .map_err(|e| bad(format!("line {n}: not a result line: {e}")))?;
            match batch {
                None => batch = Some(line.batch),
                Some(b) if b != line.batch => {
                    return Err(bad(format!(
                        "line {n}: results of two batches ({b} and {}): a timeline is one batch's",
                        line.batch
                    )));
                }
                Some(_) => {}
            }
            let worker: String = serde_json::from_str(line.worker_json)
                .map_err(|_| bad(format!("line {n}: no worker named")))?;
            let from_ventilator = worker == "ventilator";
            let shade = Shade::of(line.status, from_ventilator).ok_or_else(|| {
                bad(format!(
                    "line {n}: status {:?} is none that a sink writes",
                    line.status
                ))
            })?;
            let (Some(start_us), Some(end_us)) = (line.start_us, line.end_us) else {
                untimed += 1;
                continue;
            };
            if end_us < start_us {
                return Err(bad(format!("line {n}: it ends before it starts")));
            }
            let lane = if from_ventilator {
                Lane::GivenUp
            } else {
                Lane::Thread {
                    worker,
                    thread: line.thread,
                }
            };
            placed.push(Placed {
                lane,
                bar: Bar {
                    task: line.task,
                    attempt: line.attempt,
                    lane: 0,
                    shade,
                    start_us,
                    end_us,
                    run_us: line.duration_us,
                },
            });
        }
        let Some(batch) = batch else {
            return Err(bad("no result lines: nothing to draw".into()));
        };
        if placed.is_empty() {
            return Err(bad(format!(
                "none of its {lines} results has start_ms and end_ms (a sink older than `sink plot` wrote it?)"
            )));
        }
        Ok(Timeline::lay_out(batch.to_owned(), placed, untimed))
    }

    /// One lane per thread (by worker, then thread; the verdicts last),
    /// bars by lane and then start.
    fn lay_out(batch: String, placed: Vec<Placed>, untimed: usize) -> Timeline {
        let lanes: Vec<Lane> = placed
            .iter()
            .map(|p| p.lane.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let index: BTreeMap<&Lane, usize> = lanes.iter().zip(0..).collect();
        let mut bars: Vec<Bar> = placed
            .iter()
            .map(|p| Bar {
                lane: index[&p.lane],
                ..p.bar.clone()
            })
            .collect();
        bars.sort_by_key(|b| (b.lane, b.start_us, b.end_us, b.task));
        Timeline {
            batch,
            lanes,
            bars,
            untimed,
        }
    }

    /// The batch id.
    pub fn batch(&self) -> &str {
        &self.batch
    }

    /// The lanes, top to bottom.
    pub fn lanes(&self) -> &[Lane] {
        &self.lanes
    }

    /// The bars, by lane and then start.
    pub fn bars(&self) -> &[Bar] {
        &self.bars
    }

    /// Results without times, not drawn.
    pub fn untimed(&self) -> usize {
        self.untimed
    }

    /// The worker threads seen (the lanes but the verdicts').
    pub fn threads(&self) -> usize {
        self.lanes
            .iter()
            .filter(|l| matches!(l, Lane::Thread { .. }))
            .count()
    }

    /// From the batch's start to the last result.
    pub fn elapsed_us(&self) -> u64 {
        self.bars.iter().map(|b| b.end_us).max().unwrap_or(0)
    }

    /// The run times added up.
    pub fn busy_us(&self) -> u64 {
        self.bars.iter().map(|b| b.run_us).sum()
    }

    /// The ideal elapsed time: the run times spread evenly over the
    /// threads seen.
    pub fn ideal_us(&self) -> Option<u64> {
        let threads = self.threads() as u64;
        (threads > 0).then(|| self.busy_us() / threads)
    }

    /// Results of tasks sent more than once (their worker was lost, or
    /// their lease ran out) and not given up.
    pub fn resent(&self) -> usize {
        self.bars.iter().filter(|b| is_resent(b)).count()
    }

    /// The title: the batch, its results, elapsed; and under it the ideal.
    fn title(&self) -> (String, String) {
        let results = self.bars.len() + self.untimed;
        let title = format!(
            "batch {}: {results} results, elapsed {:.1} ms",
            self.batch,
            ms(self.elapsed_us())
        );
        let mut sub = match self.ideal_us() {
            Some(ideal) => format!(
                "ideal {:.1} ms: {:.1} ms of run time over {} threads",
                ms(ideal),
                ms(self.busy_us()),
                self.threads()
            ),
            None => "no worker thread ran a task (the ventilator gave them all up)".into(),
        };
        if self.untimed > 0 {
            sub += &format!("; {} results without times, not drawn", self.untimed);
        }
        (title, sub)
    }

    /// Draws the timeline as SVG, `width` pixels wide, its time axis
    /// running to the last result or `x_max_ms`, whichever is later; its
    /// height follows the lanes. Lanes are `rect class="lane"`, bars `rect class="bar
    /// STATUS"` with `data-task` and `data-attempt`, and the outlines of
    /// re-sent tasks `rect class="resent"`, each with a tooltip.
    pub fn draw(&self, width: u32, x_max_ms: Option<f64>) -> Result<String, Error> {
        let n = self.lanes.len();
        let lane_px = (480 / n as u32).clamp(10, 28);
        let (head_px, foot_px) = (80, 56);
        let height = head_px + lane_px * n as u32 + foot_px;
        let longest = self.lanes.iter().map(|l| l.to_string().chars().count());
        // Rounded up to 40 pixels, so that timelines drawn side by side line
        // up although their workers' names differ by a digit.
        let label_px = (longest.max().unwrap_or(0) as u32 * 7 + 20).next_multiple_of(40);
        let label_px = label_px.clamp(80, width / 3);
        let end_ms = ms(self.elapsed_us()).max(self.ideal_us().map_or(0.0, ms));
        let x_max = (end_ms * 1.02).max(x_max_ms.unwrap_or(0.0)).max(1.0);
        // A bar at least three pixels wide, so a result is never lost from
        // sight however short it ran (or a verdict, which has no run time).
        let min_ms = 3.0 * x_max / f64::from(width.saturating_sub(label_px + 40).max(1));
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
            root.fill(&WHITE).map_err(drawing)?;
            let (head, body) = root.split_vertically(head_px);
            self.draw_head(&head)?;
            let mut chart = ChartBuilder::on(&body)
                .margin_left(8)
                .margin_right(24)
                .margin_bottom(8)
                .x_label_area_size(foot_px - 8)
                .y_label_area_size(label_px)
                .build_cartesian_2d(0f64..x_max, 0f64..n as f64)
                .map_err(drawing)?;
            // Lane i runs from y = n - i - 1 (its bottom) to n - i.
            let top = |lane: usize| (n - lane) as f64;
            chart
                .draw_series((0..n).map(|i| {
                    let shade = if i % 2 == 0 { 0xEC } else { 0xF7 };
                    Rectangle::new(
                        [(0.0, top(i) - 1.0), (x_max, top(i))],
                        RGBColor(shade, shade, shade).mix(LANE_ALPHA).filled(),
                    )
                }))
                .map_err(drawing)?;
            chart
                .configure_mesh()
                .disable_y_mesh()
                .y_labels(0)
                .x_labels(12)
                .x_label_formatter(&|v| format!("{v:.0}"))
                .x_desc("ms from the batch's start (GO), as the sink saw each result come")
                .bold_line_style(BLACK.mix(0.1))
                .light_line_style(TRANSPARENT)
                .draw()
                .map_err(drawing)?;
            const PAD: f64 = 0.15;
            let corners = |b: &Bar| {
                let (s, e) = (ms(b.start_us), ms(b.end_us).max(ms(b.start_us) + min_ms));
                [(s, top(b.lane) - 1.0 + PAD), (e, top(b.lane) - PAD)]
            };
            chart
                .draw_series(
                    self.bars.iter().map(|b| {
                        Rectangle::new(corners(b), b.shade.colour().mix(BAR_ALPHA).filled())
                    }),
                )
                .map_err(drawing)?;
            chart
                .draw_series(
                    self.bars
                        .iter()
                        .filter(|b| is_resent(b))
                        .map(|b| Rectangle::new(corners(b), BLACK.mix(RESENT_ALPHA))),
                )
                .map_err(drawing)?;
            if let Some(ideal) = self.ideal_us() {
                let x = ms(ideal);
                chart
                    .draw_series(std::iter::once(DashedPathElement::new(
                        [(x, 0.0), (x, n as f64)],
                        4,
                        3,
                        BLACK.mix(0.7),
                    )))
                    .map_err(drawing)?;
                let (px, py) = chart.backend_coord(&(x, n as f64));
                root.draw(&Text::new(
                    "ideal",
                    (px, py - 2),
                    ("sans-serif", 12)
                        .into_font()
                        .color(&BLACK.mix(0.7))
                        .pos(Pos::new(HPos::Center, VPos::Bottom)),
                ))
                .map_err(drawing)?;
            }
            for (i, lane) in self.lanes.iter().enumerate() {
                let (px, py) = chart.backend_coord(&(0.0, top(i) - 0.5));
                root.draw(&Text::new(
                    lane.to_string(),
                    (px - 8, py),
                    TextStyle::from(("sans-serif", 13).into_font())
                        .pos(Pos::new(HPos::Right, VPos::Center)),
                ))
                .map_err(drawing)?;
            }
            root.present().map_err(drawing)?;
        }
        let svg = tag(&svg, "rect", LANE_ALPHA, &self.lane_tags())?;
        let svg = tag(&svg, "rect", BAR_ALPHA, &self.bar_tags("bar", |_| true))?;
        let svg = tag(
            &svg,
            "rect",
            RESENT_ALPHA,
            &self.bar_tags("resent", is_resent),
        )?;
        // A hairline between bars that touch, so that back-to-back tasks
        // stay apart; the outline of a re-sent task a little bolder.
        Ok(style(
            &svg,
            ".bar{stroke:#fff;stroke-width:0.6px}.bar:hover{opacity:1;stroke:#000}\
             .resent{stroke-width:1.5px}",
        ))
    }

    /// The title and the legend.
    fn draw_head<DB: DrawingBackend>(&self, head: &DrawingArea<DB, Shift>) -> Result<(), Error> {
        let (title, sub) = self.title();
        head.draw(&Text::new(
            title,
            (12, 8),
            ("sans-serif", 17).into_font().style(FontStyle::Bold),
        ))
        .map_err(drawing)?;
        head.draw(&Text::new(
            sub,
            (12, 32),
            ("sans-serif", 14).into_font().color(&BLACK.mix(0.75)),
        ))
        .map_err(drawing)?;
        let shown: BTreeSet<Shade> = self.bars.iter().map(|b| b.shade).collect();
        let mut x = 12;
        let y = 62;
        let label = TextStyle::from(("sans-serif", 13).into_font());
        let mut key = |swatch: ShapeStyle, text: &str| -> Result<(), Error> {
            head.draw(&Rectangle::new([(x, y - 6), (x + 16, y + 6)], swatch))
                .map_err(drawing)?;
            head.draw(&Text::new(
                text.to_owned(),
                (x + 22, y),
                label.clone().pos(Pos::new(HPos::Left, VPos::Center)),
            ))
            .map_err(drawing)?;
            x += 22 + 7 * text.len() as i32 + 16;
            Ok(())
        };
        for shade in Shade::ALL.into_iter().filter(|s| shown.contains(s)) {
            key(shade.colour().filled(), shade.label())?;
        }
        if self.resent() > 0 {
            key(
                BLACK.into(),
                &format!("re-sent (attempt > 1): {}", self.resent()),
            )?;
        }
        let idle = "gaps: the thread was idle";
        if x + 7 * idle.len() as i32 > head.dim_in_pixel().0 as i32 {
            return Ok(());
        }
        head.draw(&Text::new(
            idle,
            (x, y),
            label
                .color(&BLACK.mix(0.6))
                .pos(Pos::new(HPos::Left, VPos::Center)),
        ))
        .map_err(drawing)?;
        Ok(())
    }

    /// Each lane's tag: its name, its share of the work.
    fn lane_tags(&self) -> Vec<Tag> {
        let mut busy = vec![(0usize, 0u64); self.lanes.len()];
        for b in &self.bars {
            busy[b.lane].0 += 1;
            busy[b.lane].1 += b.run_us;
        }
        let elapsed = self.elapsed_us().max(1);
        self.lanes
            .iter()
            .zip(busy)
            .map(|(lane, (results, us))| Tag {
                attrs: format!("class=\"lane\" data-lane=\"{}\"", escape(&lane.to_string())),
                title: Some(format!(
                    "{lane}: {results} results, busy {:.1} ms ({:.0} % of the batch)",
                    ms(us),
                    us as f64 * 100.0 / elapsed as f64
                )),
            })
            .collect()
    }

    /// The tags of the bars that `which` picks, in drawing order.
    fn bar_tags(&self, class: &str, which: fn(&Bar) -> bool) -> Vec<Tag> {
        self.bars
            .iter()
            .filter(|b| which(b))
            .map(|b| Tag {
                attrs: format!(
                    "class=\"{class} {}\" data-task=\"{}\" data-attempt=\"{}\"",
                    b.shade.name(),
                    b.task,
                    b.attempt
                ),
                title: Some(format!(
                    "task {} (attempt {}): {}, ran {:.3} ms, {:.3} to {:.3} ms, on {}",
                    b.task,
                    b.attempt,
                    b.shade.name(),
                    ms(b.run_us),
                    ms(b.start_us),
                    ms(b.end_us),
                    self.lanes[b.lane]
                )),
            })
            .collect()
    }
}

/// The marks that [`tag`] finds: opacities no other `rect` has (the
/// background and the legend are opaque).
const LANE_ALPHA: f64 = 0.5;
const BAR_ALPHA: f64 = 0.9;
const RESENT_ALPHA: f64 = 0.8;

/// A result of a task sent again (not a verdict, which is a task's last
/// attempt by nature).
fn is_resent(b: &Bar) -> bool {
    b.attempt > 1 && b.shade != Shade::GivenUp
}

/// Microseconds as milliseconds.
fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(task: u64, worker: &str, thread: u16, status: &str, start: f64, end: f64) -> String {
        format!(
            "{{\"task\":{task},\"batch\":\"00000000000000aa\",\"attempt\":1,\"worker\":\"{worker}\",\"thread\":{thread},\"status\":\"{status}\",\"duration_ms\":{:.3},\"start_ms\":{start:.3},\"end_ms\":{end:.3},\"output\":\"\",\"error\":\"\"}}\n",
            end - start
        )
    }

    fn parse(text: &str) -> Result<Timeline, Error> {
        Timeline::parse(Path::new("r.jsonl"), text)
    }

    #[test]
    fn one_lane_per_worker_thread_sorted_and_the_verdicts_last() {
        let text = [
            line(0, "b:2", 1, "ok", 0.0, 10.0),
            line(1, "ventilator", 0, "failed", 30.0, 30.0),
            line(2, "a:1", 0, "failed", 5.0, 7.5),
            line(3, "b:2", 0, "timed_out", 1.0, 20.0),
            line(4, "b:2", 1, "ok", 10.5, 12.0),
            line(5, "a:1", 0, "ok", 0.0, 4.0),
        ]
        .concat();
        let t = parse(&text).unwrap();
        let names: Vec<String> = t.lanes().iter().map(ToString::to_string).collect();
        assert_eq!(
            names,
            ["a:1:0", "b:2:0", "b:2:1", "given up (ventilator)"],
            "by worker, then thread"
        );
        assert_eq!(t.threads(), 3);
        let by_lane: Vec<(usize, u64)> = t.bars().iter().map(|b| (b.lane, b.task)).collect();
        assert_eq!(
            by_lane,
            [(0, 5), (0, 2), (1, 3), (2, 0), (2, 4), (3, 1)],
            "each lane's bars by start"
        );
        assert_eq!(t.bars()[5].shade, Shade::GivenUp);
        assert_eq!(t.bars()[1].shade, Shade::Failed);
        assert_eq!(t.elapsed_us(), 30_000);
        assert_eq!(t.busy_us(), 10_000 + 2_500 + 19_000 + 1_500 + 4_000);
        assert_eq!(t.ideal_us(), Some(37_000 / 3), "over the threads only");
        assert_eq!(t.batch(), "00000000000000aa");
    }

    #[test]
    fn lines_without_times_are_counted_not_drawn_and_none_at_all_is_an_error() {
        let old = "{\"task\":9,\"batch\":\"00000000000000aa\",\"attempt\":1,\"worker\":\"a:1\",\"status\":\"ok\",\"duration_ms\":1.000,\"output\":\"\",\"error\":\"\"}\n";
        let t = parse(&format!("{}{old}", line(0, "a:1", 0, "ok", 0.0, 1.0))).unwrap();
        assert_eq!((t.bars().len(), t.untimed()), (1, 1));
        let (title, sub) = t.title();
        assert!(title.contains("2 results") && sub.contains("1 results without times"));
        let err = parse(old).unwrap_err().to_string();
        assert!(err.contains("none of its 1 results has start_ms"), "{err}");
    }

    #[test]
    fn bad_input_names_the_line() {
        for (text, says) in [
            ("", "no result lines"),
            ("\n\n", "no result lines"),
            (
                &format!("{}not json\n", line(0, "a:1", 0, "ok", 0.0, 1.0)),
                "line 2: not a result line",
            ),
            (
                &line(0, "a:1", 0, "weird", 0.0, 1.0),
                "line 1: status \"weird\"",
            ),
            (
                &format!(
                    "{}{}",
                    line(0, "a:1", 0, "ok", 0.0, 1.0),
                    line(1, "a:1", 0, "ok", 0.0, 1.0).replace("aa\"", "bb\"")
                ),
                "line 2: results of two batches",
            ),
            (
                "{\"task\":0,\"batch\":\"aa\",\"status\":\"ok\",\"start_ms\":1,\"end_ms\":2}\n",
                "line 1: no worker",
            ),
            (
                "{\"task\":0,\"batch\":\"aa\",\"worker\":\"w\",\"status\":\"ok\",\"start_ms\":3,\"end_ms\":2}\n",
                "line 1: it ends before it starts",
            ),
        ] {
            let err = parse(text).unwrap_err();
            assert!(matches!(err, Error::Plot { .. }), "{err:?}");
            let err = err.to_string();
            assert!(
                err.contains(says) && err.contains("r.jsonl"),
                "{says}: {err}"
            );
        }
    }

    #[test]
    fn the_picture_has_a_bar_per_result_a_lane_per_thread_and_outlines_the_resent() {
        let text = [
            line(0, "a:1", 0, "ok", 0.0, 10.0),
            line(1, "a:1", 1, "panicked", 0.0, 0.001),
            line(2, "a\"<&:1", 0, "ok", 2.0, 5.0).replace("a\"<&", "a\\\"<&"),
            line(3, "a:1", 0, "ok", 10.0, 12.0).replace("\"attempt\":1", "\"attempt\":2"),
            line(4, "ventilator", 0, "failed", 12.0, 12.0)
                .replace("\"attempt\":1", "\"attempt\":4"),
        ]
        .concat();
        let t = parse(&text).unwrap();
        let svg = t.draw(800, None).unwrap();
        let doc = roxmltree::Document::parse(&svg).unwrap();
        let class = |c: &str| -> Vec<roxmltree::Node> {
            doc.descendants()
                .filter(|n| {
                    n.attribute("class")
                        .is_some_and(|a| a.split(' ').next() == Some(c))
                })
                .collect()
        };
        let mut tasks: Vec<&str> = class("bar")
            .iter()
            .filter_map(|n| n.attribute("data-task"))
            .collect();
        tasks.sort();
        assert_eq!(tasks, ["0", "1", "2", "3", "4"]);
        let lanes: Vec<&str> = class("lane")
            .iter()
            .filter_map(|n| n.attribute("data-lane"))
            .collect();
        assert_eq!(
            lanes,
            ["a\"<&:1:0", "a:1:0", "a:1:1", "given up (ventilator)"]
        );
        let resent: Vec<&str> = class("resent")
            .iter()
            .filter_map(|n| n.attribute("data-task"))
            .collect();
        assert_eq!(resent, ["3"], "the verdict is not outlined");
        let panicked = class("bar")
            .into_iter()
            .find(|n| n.attribute("class") == Some("bar panicked"))
            .unwrap();
        let w: f64 = panicked.attribute("width").unwrap().parse().unwrap();
        assert!(w >= 1.0, "a 1 µs task still shows: {w}");
        let texts: String = doc.descendants().filter_map(|n| n.text()).collect();
        assert!(
            texts.contains("batch 00000000000000aa: 5 results"),
            "{texts}"
        );
        assert!(texts.contains("re-sent (attempt > 1): 1"), "{texts}");
        // A longer time axis (to match another batch's) draws it narrower.
        let width_of_task_0 = |svg: &str| -> f64 {
            let doc = roxmltree::Document::parse(svg).unwrap();
            let bar = doc
                .descendants()
                .find(|n| n.attribute("data-task") == Some("0"));
            bar.unwrap().attribute("width").unwrap().parse().unwrap()
        };
        let wide = width_of_task_0(&svg);
        let narrow = width_of_task_0(&t.draw(800, Some(120.0)).unwrap());
        assert!(narrow * 5.0 < wide, "{narrow} against {wide}");
        let same = width_of_task_0(&t.draw(800, Some(1.0)).unwrap());
        assert_eq!(same, wide, "never shorter than the batch");
    }
}
