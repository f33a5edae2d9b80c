//! Server-rendered pages for people: the status page and a repository's view. No script, no
//! external asset: everything a page needs is in it, so it works offline and behind any proxy.

use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use fleet_proto::RepoName;

use crate::badge;
use crate::discovery::{Unscored, human_duration, human_time};
use crate::model::Status;
use crate::store::{Check, Failure, Latest, Scan};

/// Text made safe for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The api path of a repository (its page for browsers, its JSON for programs).
pub fn project_path(repo: &RepoName) -> String {
    format!(
        "/projects/github.com/{}/{}",
        percent(repo.owner()),
        percent(repo.name())
    )
}

/// Owner and repository names are letters, digits, `-`, `_` and `.`: nothing to escape but
/// anything else is encoded, to be safe.
fn percent(segment: &str) -> String {
    let mut out = String::new();
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1f2328;background:#f6f8fa}\
header{background:#24292f;color:#fff;padding:12px 24px}header a{color:#fff;text-decoration:none;font-weight:600}\
main{max-width:960px;margin:24px auto;padding:0 16px}section{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:16px 20px;margin-bottom:16px}\
h1{font-size:1.5em;margin:0 0 8px}h2{font-size:1.1em;margin:0 0 12px}table{border-collapse:collapse;width:100%}\
td,th{text-align:left;padding:6px 8px;border-bottom:1px solid #eaeef2;vertical-align:top}th{font-weight:600}\
.num{text-align:right;font-variant-numeric:tabular-nums}.score{display:inline-block;min-width:3em;text-align:center;color:#fff;border-radius:4px;padding:2px 6px;font-weight:700}\
.big{font-size:2.2em;padding:6px 14px}.muted{color:#57606a}.tiles{display:flex;flex-wrap:wrap;gap:12px}\
.tile{flex:1 1 140px;border:1px solid #d0d7de;border-radius:6px;padding:10px 12px}.tile b{display:block;font-size:1.6em}\
form input{width:60%;padding:6px}details summary{cursor:pointer;color:#57606a}.stale{color:#9a6700;background:#fff8c5;border:1px solid #d4a72c;border-radius:6px;padding:6px 10px}code{font-size:.9em}";

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<title>{title}</title><style>{STYLE}</style></head><body><header><a href=\"/\">scorecard-fleet</a></header><main>{body}</main></body></html>",
        title = escape(title)
    )
}

fn score_chip(score: Option<f64>, big: bool) -> String {
    let text = score.map_or_else(|| "?".to_owned(), |s| format!("{s:.1}"));
    format!(
        "<span class=\"score{}\" style=\"background:{}\">{text}</span>",
        if big { " big" } else { "" },
        badge::colour(score)
    )
}

/// An RFC 3339 time as a `<time>` a person reads at a glance.
fn readable(rfc3339: &str) -> String {
    match DateTime::parse_from_rfc3339(rfc3339) {
        Ok(t) => format!(
            "<time datetime=\"{}\">{}</time>",
            escape(rfc3339),
            human_time(t.with_timezone(&Utc))
        ),
        Err(_) => escape(rfc3339),
    }
}

/// The status page: the fleet's numbers and a search box.
pub fn status(s: &Status) -> String {
    let mut body = String::new();
    let _ = write!(
        body,
        "<section><h1>Scorecard results, kept fresh</h1><p class=\"muted\">Every repository is scored again every {} days. Counted {}.</p>\
<div class=\"tiles\" id=\"numbers\">",
        s.interval_days,
        if s.estimated {
            format!("{} (estimated from a sample)", readable(&s.counted_at))
        } else {
            readable(&s.counted_at)
        }
    );
    let pct = format!("{:.1}%", s.fresh_ratio * 100.0);
    for (id, label, value) in [
        ("repos", "repositories", s.repos.to_string()),
        ("fresh", "fresh", pct),
        ("due", "due now", s.due_now.to_string()),
        ("in-flight", "in flight", s.in_flight.to_string()),
        ("never-scored", "never scored", s.never_scored.to_string()),
    ] {
        let _ = write!(
            body,
            "<div class=\"tile\" id=\"{id}\"><b>{value}</b>{label}</div>"
        );
    }
    body.push_str("</div>");
    if let Some(oldest) = &s.oldest_overdue {
        let _ = write!(body, "<p>Longest overdue since {}.</p>", readable(oldest));
    }
    body.push_str("</section><section><h2>Waiting now</h2><table id=\"lanes\"><tr><th>lane</th><th class=\"num\">waiting</th><th class=\"num\">the oldest for</th></tr>");
    for (lane, queue) in [
        ("scan requests (manual)", &s.lanes.manual),
        ("new repositories (discovery)", &s.lanes.discovery),
    ] {
        let (waiting, wait) = match queue {
            None => ("not measured".to_owned(), String::new()),
            Some(q) if q.waiting == 0 => ("none".to_owned(), String::new()),
            Some(q) => (
                q.waiting.to_string(),
                human_duration(std::time::Duration::from_secs(q.oldest_wait_seconds)),
            ),
        };
        let _ = write!(
            body,
            "<tr><td>{lane}</td><td class=\"num\">{waiting}</td><td class=\"num\">{wait}</td></tr>"
        );
    }
    body.push_str("</table></section><section><h2>Latest attempts that failed, by class</h2>");
    if s.failures_by_class.is_empty() {
        body.push_str("<p id=\"failures\">None.</p>");
    } else {
        body.push_str(
            "<table id=\"failures\"><tr><th>class</th><th class=\"num\">repositories</th></tr>",
        );
        for (class, n) in &s.failures_by_class {
            let _ = write!(
                body,
                "<tr><td>{}</td><td class=\"num\">{n}</td></tr>",
                escape(class)
            );
        }
        body.push_str("</table>");
    }
    body.push_str(
        "</section><section><h2>Look up a repository</h2><form action=\"/search\" method=\"get\">\
<input name=\"repo\" placeholder=\"github.com/ossf/scorecard\" aria-label=\"repository\"> <button>Show</button></form>\
<p class=\"muted\">As JSON: <code>GET /projects/github.com/OWNER/NAME</code>, <code>/badge</code>, <code>/history</code>; \
<a href=\"/status\">/status</a>, <a href=\"/openapi.json\">/openapi.json</a>.</p></section>",
    );
    page("scorecard-fleet status", &body)
}

/// The page of a repository the service knows: score, checks with reasons, history.
pub fn repo(
    latest: &Latest,
    checks: &[Check],
    scans: &[Scan],
    failure: Option<&Failure>,
    interval: TimeDelta,
    now: DateTime<Utc>,
) -> String {
    let mut body = String::new();
    let _ = write!(
        body,
        "<section><h1 id=\"repo\">{}</h1>",
        escape(&latest.repo)
    );
    match (&latest.scored_at, &latest.work_id) {
        (Some(at), Some(_)) => {
            let _ = write!(
                body,
                "<p id=\"score\">{} <span class=\"muted\">scorecard {}</span></p>",
                score_chip(latest.score, true),
                escape(latest.scorecard_version.as_deref().unwrap_or_default()),
            );
            body.push_str(&freshness(latest, *at, interval, now));
        }
        _ => body.push_str("<p id=\"score\">Not scored yet.</p>"),
    }
    if let Some(f) = failure {
        let _ = write!(
            body,
            "<p id=\"failure\">Latest attempt failed ({}) at <time datetime=\"{}\">{}</time>: {}</p>",
            escape(&f.class),
            f.failed_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            human_time(f.failed_at),
            escape(&f.message)
        );
    }
    body.push_str("</section>");
    if !checks.is_empty() {
        let docs = documentation(latest.raw_json.as_deref());
        body.push_str("<section><h2>Checks</h2><table id=\"checks\"><tr><th>check</th><th class=\"num\">score</th><th>reason</th></tr>");
        for c in checks {
            let name = match docs.iter().find(|(n, _, _)| *n == c.name) {
                Some((_, url, short)) => format!(
                    "<a href=\"{}\" title=\"{}\">{}</a>",
                    escape(url),
                    escape(short),
                    escape(&c.name)
                ),
                None => escape(&c.name),
            };
            let _ = write!(
                body,
                "<tr><td>{name}</td><td class=\"num\">{}</td><td>{}</td></tr>",
                score_chip(c.score.map(f64::from), false),
                escape(&c.reason)
            );
        }
        body.push_str("</table></section>");
    }
    if !scans.is_empty() {
        let _ = write!(body, "<section><h2>History</h2>{}", chart(scans));
        body.push_str("<details><summary>Every scan</summary><table id=\"history\"><tr><th>scored</th><th class=\"num\">score</th><th>commit</th></tr>");
        for s in scans {
            let _ = write!(
                body,
                "<tr><td><time datetime=\"{}\">{}</time></td><td class=\"num\">{}</td><td><code>{}</code></td></tr>",
                s.scored_at.to_rfc3339_opts(SecondsFormat::Secs, true),
                human_time(s.scored_at),
                s.score.map_or_else(|| "?".into(), |v| format!("{v:.1}")),
                escape(&s.commit_sha)
            );
        }
        body.push_str("</table></details></section>");
    }
    page(&format!("{} — scorecard", latest.repo), &body)
}

/// (name, documentation url, short description) of each check in scorecard's output.
fn documentation(raw: Option<&str>) -> Vec<(String, String, String)> {
    let Some(value) = raw.and_then(|r| serde_json::from_str::<serde_json::Value>(r).ok()) else {
        return Vec::new();
    };
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    value["checks"]
        .as_array()
        .map(|checks| {
            checks
                .iter()
                .map(|c| {
                    (
                        text(&c["name"]),
                        text(&c["documentation"]["url"]),
                        text(&c["documentation"]["short"]),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The aggregate score over time as an inline SVG line (oldest left); inconclusive scans are
/// left out of the line.
fn chart(scans: &[Scan]) -> String {
    const W: f64 = 880.0;
    const H: f64 = 160.0;
    const PAD: f64 = 24.0;
    let points: Vec<(i64, f64)> = scans
        .iter()
        .rev()
        .filter_map(|s| s.score.map(|v| (s.scored_at.timestamp(), v)))
        .collect();
    let mut svg = format!(
        "<svg id=\"chart\" role=\"img\" aria-label=\"score history\" viewBox=\"0 0 {W} {H}\" width=\"100%\" height=\"{H}\" xmlns=\"http://www.w3.org/2000/svg\">\
<rect width=\"{W}\" height=\"{H}\" fill=\"#fff\"/>"
    );
    for level in [0.0, 5.0, 10.0] {
        let y = H - PAD - level / 10.0 * (H - 2.0 * PAD);
        let _ = write!(
            svg,
            "<line x1=\"{PAD}\" x2=\"{}\" y1=\"{y}\" y2=\"{y}\" stroke=\"#eaeef2\"/><text x=\"4\" y=\"{}\" font-size=\"10\" fill=\"#57606a\">{level}</text>",
            W - PAD,
            y + 3.0
        );
    }
    let (first, last) = match (points.first(), points.last()) {
        (Some(f), Some(l)) => (f.0, l.0),
        _ => return svg + "</svg>",
    };
    let span = (last - first).max(1) as f64;
    let xy: Vec<(f64, f64)> = points
        .iter()
        .map(|&(t, v)| {
            let x = if points.len() == 1 {
                W / 2.0
            } else {
                PAD + (t - first) as f64 / span * (W - 2.0 * PAD)
            };
            (x, H - PAD - v / 10.0 * (H - 2.0 * PAD))
        })
        .collect();
    let line: Vec<String> = xy.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
    let _ = write!(
        svg,
        "<polyline fill=\"none\" stroke=\"#0969da\" stroke-width=\"2\" points=\"{}\"/>",
        line.join(" ")
    );
    for ((x, y), (_, v)) in xy.iter().zip(&points) {
        let _ = write!(
            svg,
            "<circle class=\"point\" cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3\" fill=\"{}\"><title>{v:.1}</title></circle>",
            badge::colour(Some(*v))
        );
    }
    svg + "</svg>"
}

/// When a result was scanned, at which commit, when it is due next, and a flag when it is
/// older than two intervals: what a reader needs to trust the number.
fn freshness(
    latest: &Latest,
    at: DateTime<Utc>,
    interval: TimeDelta,
    now: DateTime<Utc>,
) -> String {
    let commit = latest.commit_sha.as_deref().unwrap_or_default();
    let mut text = format!(
        "<p id=\"freshness\">Scanned <time datetime=\"{}\">{}</time> ({} ago) at commit <code title=\"{}\">{}</code>. ",
        at.to_rfc3339_opts(SecondsFormat::Secs, true),
        human_time(at),
        human_duration((now - at).to_std().unwrap_or_default()),
        escape(commit),
        escape(commit.get(..12).unwrap_or(commit)),
    );
    if latest.retired_at.is_some() {
        text.push_str("Not rescanned: nobody asked for it for a while; asking brought it back.");
    } else if !latest.enabled {
        text.push_str("Not rescanned: an operator turned its schedule off.");
    } else if latest.next_due_at <= now {
        text.push_str("Due for its next scan now.");
    } else {
        let _ = write!(
            text,
            "Next scan due <time datetime=\"{}\">{}</time>.",
            latest
                .next_due_at
                .to_rfc3339_opts(SecondsFormat::Secs, true),
            human_time(latest.next_due_at)
        );
    }
    text.push_str("</p>");
    if now - at > interval * 2 {
        let _ = write!(
            text,
            "<p id=\"stale\" class=\"stale\">Stale: this result is {} old, more than two scoring intervals ({} days each).</p>",
            human_duration((now - at).to_std().unwrap_or_default()),
            interval.num_days()
        );
    }
    text
}

/// The page of a repository without a score: being scored (it refreshes itself, no script
/// needed), missing from GitHub, or not known.
pub fn unscored(repo: &RepoName, answer: &Unscored) -> String {
    let name = escape(&repo.to_string());
    let (title, says) = match answer {
        Unscored::Queued { .. } | Unscored::Pending { .. } => (
            "being scored",
            format!(
                "<p id=\"score\">This repository is being scored.</p><p id=\"detail\" class=\"muted\">{}. This page refreshes itself.</p>",
                escape(&answer.message(repo))
            ),
        ),
        Unscored::Missing { .. } => (
            "not on GitHub",
            format!("<p id=\"score\">{}.</p>", escape(&answer.message(repo))),
        ),
        Unscored::Unknown => (
            "not known",
            "<p id=\"score\">This repository is not known to this service yet.</p>".to_owned(),
        ),
        _ => (
            "not scored yet",
            format!("<p id=\"score\">{}.</p>", escape(&answer.message(repo))),
        ),
    };
    let html = page(
        &format!("{repo} — {title}"),
        &format!("<section><h1 id=\"repo\">{name}</h1>{says}</section>"),
    );
    match answer.retry_after().filter(|_| answer.coming()) {
        // A meta refresh, not script: the page comes back by itself when the score may be in.
        Some(retry) => html.replacen(
            "<meta charset=\"utf-8\">",
            &format!(
                "<meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"{}\">",
                retry.as_secs().clamp(5, 60)
            ),
            1,
        ),
        None => html,
    }
}

/// Vertical bars, each `(label, count, colour)`, counts above them: an SVG the page inlines.
fn bar_chart(id: &str, title: &str, bars: &[(String, u64, &str)]) -> String {
    const W: f64 = 640.0;
    const H: f64 = 200.0;
    const TOP: f64 = 20.0;
    const BOTTOM: f64 = 24.0;
    let max = bars.iter().map(|b| b.1).max().unwrap_or(0).max(1) as f64;
    let slot = W / bars.len().max(1) as f64;
    let mut svg = format!(
        "<svg id=\"{id}\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {W} {H}\" width=\"100%\" role=\"img\" aria-label=\"{}\">",
        escape(title)
    );
    for (i, (label, count, colour)) in bars.iter().enumerate() {
        let h = (H - TOP - BOTTOM) * *count as f64 / max;
        let x = i as f64 * slot;
        let _ = write!(
            svg,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"{colour}\"><title>{}: {count}</title></rect>\
<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\" fill=\"#1f2328\">{count}</text>\
<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\" fill=\"#57606a\">{}</text>",
            x + 4.0,
            H - BOTTOM - h,
            slot - 8.0,
            escape(label),
            x + slot / 2.0,
            H - BOTTOM - h - 4.0,
            x + slot / 2.0,
            H - 8.0,
            escape(label),
        );
    }
    svg.push_str("</svg>");
    svg
}

/// A check's scores 0..10 as eleven small bars.
fn spark_bars(scores: &[u64]) -> String {
    let max = scores.iter().copied().max().unwrap_or(0).max(1) as f64;
    let mut svg = String::from(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 110 24\" width=\"110\" height=\"24\" role=\"img\" aria-label=\"results by score 0 to 10\">",
    );
    for (score, n) in scores.iter().enumerate() {
        let h = 22.0 * *n as f64 / max;
        let _ = write!(
            svg,
            "<rect x=\"{}\" y=\"{:.1}\" width=\"8\" height=\"{h:.1}\" fill=\"{}\"><title>{score}: {n}</title></rect>",
            score * 10,
            24.0 - h,
            badge::colour(Some(score as f64))
        );
    }
    svg.push_str("</svg>");
    svg
}

/// A line over weeks; `None` leaves a gap (a week without scans).
fn line_chart(
    id: &str,
    title: &str,
    points: &[(String, Option<f64>)],
    max: f64,
    big: bool,
) -> String {
    let (w, h, pad) = if big {
        (640.0, 180.0, 24.0)
    } else {
        (120.0, 24.0, 2.0)
    };
    let step = (w - 2.0 * pad) / (points.len().max(2) - 1) as f64;
    let y = |v: f64| h - pad - (h - 2.0 * pad) * (v / max).clamp(0.0, 1.0);
    let mut svg = format!(
        "<svg id=\"{id}\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {w} {h}\" width=\"{}\" role=\"img\" aria-label=\"{}\">",
        if big {
            "100%".to_owned()
        } else {
            format!("{w}")
        },
        escape(title)
    );
    let mut path = String::new();
    let mut pen_down = false;
    for (i, (label, v)) in points.iter().enumerate() {
        let x = pad + i as f64 * step;
        match v {
            Some(v) => {
                let _ = write!(
                    path,
                    "{}{x:.1},{:.1} ",
                    if pen_down { "L" } else { "M" },
                    y(*v)
                );
                pen_down = true;
                if !big {
                    // A week alone (no neighbour to draw a line to) still shows.
                    let _ = write!(
                        svg,
                        "<circle cx=\"{x:.1}\" cy=\"{:.1}\" r=\"1.5\" fill=\"#0969da\"/>",
                        y(*v)
                    );
                }
                if big {
                    let _ = write!(
                        svg,
                        "<circle cx=\"{x:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"#0969da\"><title>{}: {v:.2}</title></circle>\
<text x=\"{x:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"middle\" fill=\"#1f2328\">{v:.1}</text>",
                        y(*v),
                        escape(label),
                        y(*v) - 6.0
                    );
                }
            }
            None => pen_down = false,
        }
        if big && (i % 2 == 0 || points.len() <= 8) {
            let _ = write!(
                svg,
                "<text x=\"{x:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"middle\" fill=\"#57606a\">{}</text>",
                h - 6.0,
                escape(label)
            );
        }
    }
    let _ = write!(
        svg,
        "<path d=\"{path}\" fill=\"none\" stroke=\"#0969da\" stroke-width=\"{}\"/></svg>",
        if big { 2 } else { 1 }
    );
    svg
}

fn percent_of(rate: Option<f64>) -> String {
    rate.map_or_else(|| "–".to_owned(), |r| format!("{:.1}%", r * 100.0))
}

/// The ecosystem at a glance, from the latest export's figures.
pub fn stats(f: &crate::data::Figures) -> String {
    let mut body = String::new();
    let _ = write!(
        body,
        "<section><h1>The ecosystem at a glance</h1><p class=\"muted\">Computed <time id=\"computed\">{}</time> \
from the daily export (<a href=\"/data/\">the files</a>, <a href=\"/stats\">as JSON</a>). A check passes at {} or above.</p><div class=\"tiles\" id=\"coverage\">",
        f.computed_at.format("%Y-%m-%d %H:%M UTC"),
        f.pass_at
    );
    let mean = f
        .latest
        .mean_score
        .map_or_else(|| "–".to_owned(), |m| format!("{m:.2}"));
    for (id, label, value) in [
        (
            "repositories",
            "repositories",
            f.coverage.repositories.to_string(),
        ),
        ("scored", "scored", f.coverage.scored.to_string()),
        (
            "failing",
            "latest attempt failed",
            f.coverage.failing.to_string(),
        ),
        (
            "never-scored",
            "never scored",
            f.coverage.never_scored.to_string(),
        ),
        ("mean", "mean score", mean),
    ] {
        let _ = write!(
            body,
            "<div class=\"tile\" id=\"{id}\"><b>{value}</b>{label}</div>"
        );
    }
    body.push_str("</div></section><section><h2>Aggregate scores</h2>");
    let bars: Vec<(String, u64, &str)> = f
        .latest
        .score_histogram
        .iter()
        .map(|b| {
            (
                format!("{}–{}", b.from, b.to),
                b.results,
                badge::colour(Some(f64::from(b.from) + 0.5)),
            )
        })
        .collect();
    body.push_str(&bar_chart(
        "score-histogram",
        "repositories by aggregate score",
        &bars,
    ));
    let weeks =
        |value: &dyn Fn(&crate::data::Summary) -> Option<f64>| -> Vec<(String, Option<f64>)> {
            f.weeks
                .iter()
                .map(|w| (w.week_start.format("%m-%d").to_string(), value(&w.summary)))
                .collect()
        };
    let _ = write!(
        body,
        "</section><section><h2>Mean score of each week's scans, the last {} weeks</h2>{}</section>",
        f.weeks.len(),
        line_chart(
            "weekly-mean",
            "mean aggregate score by week",
            &weeks(&|s| s.mean_score),
            10.0,
            true
        )
    );
    body.push_str(
        "<section><h2>Checks</h2><table id=\"checks\"><tr><th>check</th><th class=\"num\">mean</th>\
<th class=\"num\">passing</th><th>scores 0–10</th><th>passing by week</th></tr>",
    );
    for (name, c) in &f.latest.checks {
        let trend = weeks(&|s| s.checks.get(name).and_then(|c| c.pass_rate));
        let _ = write!(
            body,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>",
            escape(name),
            c.mean.map_or_else(|| "–".to_owned(), |m| format!("{m:.2}")),
            percent_of(c.pass_rate),
            spark_bars(&c.scores),
            line_chart(
                &format!("trend-{}", escape(name)),
                "share passing by week",
                &trend,
                1.0,
                false
            ),
        );
    }
    body.push_str("</table></section>");
    page("scorecard-fleet: the ecosystem at a glance", &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn paths_encode_what_is_not_a_name_character() {
        let repo = RepoName::parse("github.com/OSSF/score.card_x-y").unwrap();
        assert_eq!(
            project_path(&repo),
            "/projects/github.com/OSSF/score.card_x-y"
        );
        assert_eq!(percent("a b/c"), "a%20b%2Fc");
    }
}
