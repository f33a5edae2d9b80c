//! The score as an SVG badge, drawn here (no badge service in the path): label "openssf
//! scorecard", the score, a colour by score band, in the five shapes people know from shields.io.

use std::fmt::Write as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Style {
    #[default]
    Flat,
    FlatSquare,
    Plastic,
    ForTheBadge,
    Social,
}

impl Style {
    pub fn name(self) -> &'static str {
        match self {
            Self::Flat => "flat",
            Self::FlatSquare => "flat-square",
            Self::Plastic => "plastic",
            Self::ForTheBadge => "for-the-badge",
            Self::Social => "social",
        }
    }
}

pub const LABEL: &str = "openssf scorecard";
const GREY: &str = "#9f9f9f";

/// The band colour of a score (0..10); grey for none.
pub fn colour(score: Option<f64>) -> &'static str {
    match score {
        None => GREY,
        Some(s) if s < 2.0 => "#e05d44",
        Some(s) if s < 4.0 => "#fe7d37",
        Some(s) if s < 6.0 => "#dfb317",
        Some(s) if s < 8.0 => "#a4a61d",
        Some(_) => "#4c1",
    }
}

/// What the right half says: the score to one decimal, or why there is none.
pub fn value(score: Option<f64>, known: bool) -> String {
    match (known, score) {
        (false, _) => "unknown".into(),
        (true, None) => "inconclusive".into(),
        (true, Some(s)) => format!("{s:.1}"),
    }
}

/// Width in pixels of `text` in 11px Verdana (shields.io's font), close enough for layout:
/// per-character advance widths of the printable ASCII range, others as a wide glyph.
fn text_width(text: &str, caps: bool) -> u32 {
    let mut width = 0.0_f64;
    for c in text.chars() {
        let c = if caps { c.to_ascii_uppercase() } else { c };
        width += match c {
            'i' | 'l' | '.' | ',' | ':' | ';' | '!' | '|' | '\'' => 3.6,
            'f' | 'j' | 'r' | 't' | ' ' | '(' | ')' | '[' | ']' | '-' => 4.6,
            'I' => 4.6,
            'm' | 'w' => 10.7,
            'M' | 'W' => 11.5,
            'a'..='z' => 6.9,
            '0'..='9' => 7.0,
            'A'..='Z' => 7.8,
            _ => 8.0,
        };
    }
    width.ceil() as u32
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The badge of a repository with `score` (`known`: it has a result at all).
pub fn render(style: Style, score: Option<f64>, known: bool) -> String {
    let value = value(score, known);
    let colour = if known { colour(score) } else { GREY };
    match style {
        Style::ForTheBadge => {
            rect_badge(style, &LABEL.to_uppercase(), &value.to_uppercase(), colour)
        }
        Style::Social => social(&value),
        _ => rect_badge(style, LABEL, &value, colour),
    }
}

/// A grey badge that says `value` instead of a score: pending, an error.
pub fn render_text(style: Style, value: &str) -> String {
    match style {
        Style::ForTheBadge => rect_badge(style, &LABEL.to_uppercase(), &value.to_uppercase(), GREY),
        Style::Social => social(value),
        _ => rect_badge(style, LABEL, value, GREY),
    }
}

fn rect_badge(style: Style, label: &str, value: &str, colour: &str) -> String {
    let caps = style == Style::ForTheBadge;
    let (pad, height, font) = if caps { (12, 28, 10) } else { (6, 20, 11) };
    let lw = text_width(label, caps) + 2 * pad;
    let vw = text_width(value, caps) + 2 * pad;
    let total = lw + vw;
    let radius = match style {
        Style::Flat | Style::Plastic => 3,
        _ => 0,
    };
    let title = escape(&format!("{label}: {value}"));
    let (label, value) = (escape(label), escape(value));
    let mut svg = String::with_capacity(1024);
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{total}" height="{height}" role="img" aria-label="{title}"><title>{title}</title>"#
    );
    if style == Style::Flat || style == Style::Plastic {
        let (top, bottom) = if style == Style::Plastic {
            ("#fff", ".7")
        } else {
            ("#bbb", ".1")
        };
        let _ = write!(
            svg,
            r##"<linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="{top}" stop-opacity=".1"/><stop offset="1" stop-opacity="{bottom}"/></linearGradient>"##
        );
    }
    let _ = write!(
        svg,
        r##"<clipPath id="r"><rect width="{total}" height="{height}" rx="{radius}" fill="#fff"/></clipPath><g clip-path="url(#r)"><rect width="{lw}" height="{height}" fill="#555"/><rect x="{lw}" width="{vw}" height="{height}" fill="{colour}"/>"##
    );
    if style == Style::Flat || style == Style::Plastic {
        let _ = write!(
            svg,
            r##"<rect width="{total}" height="{height}" fill="url(#s)"/>"##
        );
    }
    let baseline = if caps { 18 } else { 14 };
    let weight = if caps {
        r#" font-weight="bold" letter-spacing="1""#
    } else {
        ""
    };
    let _ = write!(
        svg,
        r##"</g><g fill="#fff" text-anchor="middle" font-family="Verdana,Geneva,DejaVu Sans,sans-serif" font-size="{font}"{weight}><text x="{lx}" y="{baseline}">{label}</text><text x="{vx}" y="{baseline}">{value}</text></g></svg>"##,
        lx = lw / 2,
        vx = lw + vw / 2,
    );
    svg
}

/// The social style: a light label box and a count bubble beside it.
fn social(value: &str) -> String {
    let label = "OpenSSF Scorecard";
    let lw = text_width(label, false) + 12;
    let vw = text_width(value, false) + 10;
    let total = lw + vw + 6;
    let title = escape(&format!("{label}: {value}"));
    let value = escape(value);
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{total}" height="20" role="img" aria-label="{title}"><title>{title}</title><g stroke="#d5d5d5" fill="#fcfcfc"><rect x=".5" y=".5" width="{lw}" height="19" rx="2"/><rect x="{bx}" y=".5" width="{vw}" height="19" rx="2" fill="#fafafa"/></g><g fill="#333" text-anchor="middle" font-family="Helvetica Neue,Helvetica,Arial,sans-serif" font-size="11" font-weight="bold"><text x="{lx}" y="14">{label}</text><text x="{vx}" y="14">{value}</text></g></svg>"##,
        bx = lw + 6,
        lx = lw / 2,
        vx = lw + 6 + vw / 2,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bands_follow_the_score() {
        assert_eq!(colour(Some(0.0)), "#e05d44");
        assert_eq!(colour(Some(1.9)), "#e05d44");
        assert_eq!(colour(Some(2.0)), "#fe7d37");
        assert_eq!(colour(Some(5.9)), "#dfb317");
        assert_eq!(colour(Some(7.4)), "#a4a61d");
        assert_eq!(colour(Some(8.0)), "#4c1");
        assert_eq!(colour(Some(10.0)), "#4c1");
        assert_eq!(colour(None), GREY);
    }

    #[test]
    fn every_style_says_label_and_score() {
        for style in [
            Style::Flat,
            Style::FlatSquare,
            Style::Plastic,
            Style::ForTheBadge,
            Style::Social,
        ] {
            let svg = render(style, Some(7.3), true);
            assert!(
                svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""),
                "{svg}"
            );
            assert!(svg.ends_with("</svg>"), "{svg}");
            let lower = svg.to_lowercase();
            assert!(lower.contains("openssf scorecard: 7.3"), "{style:?}: {svg}");
            if style != Style::Social {
                assert!(svg.contains("#a4a61d"), "{style:?} colour: {svg}");
            }
        }
        let unknown = render(Style::Flat, None, false);
        assert!(
            unknown.contains(">unknown<") && unknown.contains(GREY),
            "{unknown}"
        );
        assert!(render(Style::Flat, None, true).contains(">inconclusive<"));
    }

    #[test]
    fn longer_values_make_wider_badges() {
        let width = |svg: &str| -> u32 {
            let at = svg.find("width=\"").unwrap() + 7;
            svg[at..].split('"').next().unwrap().parse().unwrap()
        };
        assert!(
            width(&render(Style::Flat, None, false)) > width(&render(Style::Flat, Some(5.0), true))
        );
    }
}
