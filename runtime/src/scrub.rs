//! Removing credentials from text the fleet keeps: a scan's log tail and failure message go to
//! two streams (kept for weeks), a table and the logs, and scorecard, its libraries or a proxy
//! in front of GitHub can print a token in an error. Every such text passes through [`scrub`]
//! before it is published, stored or logged; each removal leaves a marker saying what it was.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::Regex;

/// What replaces a removed credential.
pub const GITHUB_TOKEN: &str = "[redacted: GitHub token]";
pub const URL_CREDENTIALS: &str = "[redacted: credentials]";
pub const AUTHORIZATION: &str = "[redacted: authorization]";
pub const SECRET_PARAMETER: &str = "[redacted: secret]";
pub const EXACT: &str = "[redacted: the scan's token]";

struct Rule {
    pattern: Regex,
    replacement: &'static str,
}

static RULES: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    let rule = |pattern: &str, replacement: &'static str| Rule {
        pattern: Regex::new(pattern).expect("a valid pattern"),
        replacement,
    };
    vec![
        // `Authorization: Bearer …` / `token …` / `Basic …` headers, as HTTP dumps print them.
        rule(
            r"(?i)(authorization\s*[:=]\s*(?:bearer|token|basic)\s+)[^\s,;]+",
            "${1}[redacted: authorization]",
        ),
        // `scheme://user:password@host`, `x-access-token:<token>@` among them.
        rule(
            r"(?i)([a-z][a-z0-9+.-]*://)[^/\s:@]+:[^/\s@]+@",
            "${1}[redacted: credentials]@",
        ),
        rule(
            r"(?i)\bx-access-token:[^\s@/]+@",
            "x-access-token:[redacted: credentials]@",
        ),
        // GitHub's token formats: personal (classic and fine-grained), OAuth, user-to-server,
        // server-to-server (App installations) and refresh tokens.
        rule(r"\bgithub_pat_[A-Za-z0-9_]{20,}", GITHUB_TOKEN),
        rule(r"\bgh[pousr]_[A-Za-z0-9]{20,}", GITHUB_TOKEN),
        // `?access_token=…`, `token=…`, `password=…` parameters.
        rule(
            r"(?i)\b(access_token|token|password|passwd|secret)=[^&\s]+",
            "${1}=[redacted: secret]",
        ),
    ]
});

/// `text` without credentials: GitHub tokens, URL credentials, authorization headers, secret
/// parameters, and every value in `exact` (the token a process runner handed the scan).
pub fn scrub<'a>(text: &'a str, exact: &[&str]) -> Cow<'a, str> {
    let mut out = Cow::Borrowed(text);
    for value in exact.iter().filter(|v| v.len() >= 4) {
        if out.contains(value) {
            out = Cow::Owned(out.replace(value, EXACT));
        }
    }
    for rule in RULES.iter() {
        if let Cow::Owned(replaced) = rule.pattern.replace_all(&out, rule.replacement) {
            out = Cow::Owned(replaced);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAT: &str = "ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8";

    #[test]
    fn every_form_of_a_token_is_removed_with_a_marker() {
        let cases = [
            format!("GET https://x-access-token:{PAT}@api.github.com/repos/a/b: 401"),
            format!("retrying https://api.github.com/graphql?token={PAT}"),
            format!("Authorization: Bearer {PAT}"),
            format!("authorization: token {PAT}"),
            format!("plain {PAT} in a panic"),
            "gho_abcdefghijklmnopqrstuvwxyz0123456789 ghs_abcdefghijklmnopqrstuvwxyz0123456789"
                .into(),
            "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGH".into(),
            "postgres://fleet:hunter2@db:5432/fleet".into(),
            "nats://user:pass@n1:4222".into(),
        ];
        for case in &cases {
            let out = scrub(case, &[]);
            for secret in [
                PAT,
                "hunter2",
                "pass@",
                "abcdefghijklmnopqrstuvwxyz0123456789",
            ] {
                assert!(!out.contains(secret), "{case} -> {out}");
            }
            assert!(out.contains("[redacted: "), "{case} -> {out}");
        }
    }

    #[test]
    fn the_exact_token_goes_whatever_it_looks_like() {
        let out = scrub(
            "token is s3cr3t-value, again s3cr3t-value",
            &["s3cr3t-value"],
        );
        assert_eq!(out, format!("token is {EXACT}, again {EXACT}"));
    }

    #[test]
    fn ordinary_text_is_left_alone() {
        let text =
            "Skipping github.com/a/b: repo unreachable: GET https://api.github.com/repos/a/b: 404";
        assert!(matches!(scrub(text, &[]), Cow::Borrowed(_)));
        assert_eq!(
            scrub("Rate limit exceeded. Waiting 5m0s to retry...", &[]),
            "Rate limit exceeded. Waiting 5m0s to retry..."
        );
    }
}
