//! `sink plot`: pictures drawn from what zpipe writes, so that the role
//! that collects and reports is also the one that shows.
//!
//! - [`timeline`]: a batch as it ran, from its results file.
//! - [`scaling`]: elapsed time against workers, from the benchmark's CSV
//!   (`scripts/bench.sh --plot DIR`).
//!
//! Both draw with `plotters`' SVG backend, which writes text as SVG
//! `<text>` and leaves fonts to the viewer (no font files are read). Its
//! elements carry no names, so each picture marks the ones a reader (or a
//! test) wants to find, its bars or its lines, with an opacity nothing
//! else in the picture has, and [`tag`] then gives them a `class`, `data-`
//! attributes and a `<title>` (a tooltip in a browser), in drawing order.

pub mod scaling;
pub mod timeline;

use std::io::Write;
use std::path::Path;

use crate::Error;
use crate::config::Plot;

/// Draws the picture `plot` asks for and writes it where it says.
pub fn run(plot: &Plot) -> Result<(), Error> {
    match plot {
        Plot::Timeline(args) => {
            let t = timeline::Timeline::read(&args.results)?;
            write(&args.output, &t.draw(args.width, args.x_max)?)
        }
        Plot::Scaling(args) => {
            let s = scaling::Scaling::read(&args.csv)?;
            write(&args.output, &s.draw(&args.title)?)
        }
    }
}

/// Writes a picture to `path` (`-`: stdout).
fn write(path: &Path, svg: &str) -> Result<(), Error> {
    if path.as_os_str() == "-" {
        let mut out = std::io::stdout().lock();
        out.write_all(svg.as_bytes())?;
        return Ok(out.flush()?);
    }
    std::fs::write(path, svg).map_err(|source| Error::OpenOutput {
        path: path.to_owned(),
        source,
    })
}

/// Reads a picture's input whole, refusing an empty one.
fn read_input(path: &Path) -> Result<String, Error> {
    let bad = |reason: String| Error::Plot {
        path: path.to_owned(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let line = 1 + e.as_bytes()[..e.utf8_error().valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        bad(format!("line {line}: not UTF-8 text"))
    })?;
    if text.trim().is_empty() {
        return Err(bad("the file is empty: nothing to draw".into()));
    }
    Ok(text)
}

/// A drawing library error, as ours.
fn drawing<E: std::fmt::Display>(e: E) -> Error {
    Error::Draw(e.to_string())
}

/// What [`tag`] adds to one marked element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tag {
    /// Attributes, written as they are (`class="bar ok" data-task="3"`);
    /// values already escaped (see [`escape`]).
    pub attrs: String,
    /// A `<title>` child: the tooltip (escaped here).
    pub title: Option<String>,
}

/// Gives each `element` (`rect`, `polyline`) that the SVG backend wrote
/// with `opacity` its [`Tag`], in drawing order. The mark is an opacity
/// that no other element of that kind in the picture has; the backend
/// writes one element a line, its attributes in a fixed order. Fails
/// unless exactly `tags.len()` elements carry the mark, so a picture whose
/// marks went astray is an error rather than a picture that lies.
pub(crate) fn tag(svg: &str, element: &str, opacity: f64, tags: &[Tag]) -> Result<String, Error> {
    let (out, n) = tag_with(svg, element, opacity, |i| tags.get(i));
    if n != tags.len() {
        return Err(Error::Draw(format!(
            "{n} {element} elements marked for {} tags: the SVG backend wrote them otherwise than expected",
            tags.len()
        )));
    }
    Ok(out)
}

/// Gives every `element` marked with `opacity` the same [`Tag`] (the
/// pieces of one dashed line); fails when none is.
pub(crate) fn tag_all(svg: &str, element: &str, opacity: f64, t: &Tag) -> Result<String, Error> {
    match tag_with(svg, element, opacity, |_| Some(t)) {
        (_, 0) => Err(Error::Draw(format!(
            "no {element} element marked for {}",
            t.attrs
        ))),
        (out, _) => Ok(out),
    }
}

/// [`tag`]'s work: the `i`-th marked element gets `tags(i)` (none: it is
/// left out). Returns the SVG and how many elements were marked.
fn tag_with<'t>(
    svg: &str,
    element: &str,
    opacity: f64,
    tags: impl Fn(usize) -> Option<&'t Tag>,
) -> (String, usize) {
    let open = format!("<{element} ");
    let mark = format!(" opacity=\"{opacity}\" ");
    let mut out = String::with_capacity(svg.len() * 2);
    let mut n = 0;
    for line in svg.split_inclusive('\n') {
        let marked = line.starts_with(&open) && line.contains(&mark);
        let Some(rest) = marked.then(|| &line[open.len()..]) else {
            out.push_str(line);
            continue;
        };
        n += 1;
        let Some(t) = tags(n - 1) else {
            continue;
        };
        out.push_str(&open);
        out.push_str(&t.attrs);
        out.push(' ');
        match (&t.title, rest.trim_end().strip_suffix("/>")) {
            (Some(title), Some(attrs)) => {
                out.push_str(attrs);
                out.push_str("><title>");
                out.push_str(&escape(title));
                out.push_str("</title></");
                out.push_str(element);
                out.push_str(">\n");
            }
            _ => out.push_str(rest),
        }
    }
    (out, n)
}

/// Puts a style sheet in the SVG, after its opening tag: CSS rules win
/// over the backend's presentation attributes (`stroke="none"`), so a
/// tagged class can be restyled.
pub(crate) fn style(svg: &str, css: &str) -> String {
    let at = svg.find('\n').map_or(svg.len(), |i| i + 1);
    format!("{}<style>{css}</style>\n{}", &svg[..at], &svg[at..])
}

/// Escapes text for an XML attribute value or element.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marked_elements_are_tagged_in_order_and_a_miscount_is_an_error() {
        let svg = "<svg>\n<rect x=\"0\" opacity=\"1\" fill=\"#FFF\"/>\n\
                   <rect x=\"1\" opacity=\"0.9\" fill=\"#000\"/>\n\
                   <polyline opacity=\"0.9\" points=\"\"/>\n\
                   <rect x=\"2\" opacity=\"0.9\" fill=\"#000\"/>\n</svg>\n";
        let tags = [
            Tag {
                attrs: "class=\"bar\" data-task=\"7\"".into(),
                title: Some("task 7 <ok>".into()),
            },
            Tag {
                attrs: "class=\"bar\" data-task=\"8\"".into(),
                title: None,
            },
        ];
        let out = tag(svg, "rect", 0.9, &tags).unwrap();
        let doc = roxmltree::Document::parse(&out).unwrap();
        let bars: Vec<_> = doc
            .descendants()
            .filter(|n| n.attribute("class") == Some("bar"))
            .collect();
        assert_eq!(bars.len(), 2);
        assert_eq!(bars[0].attribute("data-task"), Some("7"));
        assert_eq!(bars[0].attribute("x"), Some("1"));
        assert_eq!(
            bars[0].first_element_child().and_then(|t| t.text()),
            Some("task 7 <ok>")
        );
        assert_eq!(bars[1].attribute("x"), Some("2"));
        assert!(out.contains("<polyline opacity=\"0.9\""), "{out}");
        let err = tag(svg, "rect", 0.9, &tags[..1]).unwrap_err();
        assert!(
            err.to_string().contains("2 rect elements marked for 1"),
            "{err}"
        );
        assert!(tag(svg, "rect", 0.5, &tags[..1]).is_err());
        let styled = style(&out, ".bar{stroke:#fff}");
        let doc = roxmltree::Document::parse(&styled).unwrap();
        let first = doc.root_element().first_element_child().unwrap();
        assert_eq!(
            (first.tag_name().name(), first.text()),
            ("style", Some(".bar{stroke:#fff}"))
        );
    }
}
