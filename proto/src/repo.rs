//! Repository names: the one parser every door (import, enqueue, worker, sink) goes through.
//!
//! It takes what people paste: an `https://` or `http://` prefix and a trailing `.git` or `/`
//! are dropped. The owner is 1–39 of `[A-Za-z0-9-]`, not starting with `-`; the name 1–100 of
//! `[A-Za-z0-9._-]`, not `.` or `..`. The spelling is kept for display; the identity is the
//! lower-cased [`RepoName::key`]. Only github.com is accepted ([`GITHUB`]): another host is an
//! error saying so.

use std::fmt;

/// The only forge scorecard-fleet scores. gitlab.com needs a different token pool and
/// scorecard's GitLab support is partial, so it is rejected with a clear message.
pub const GITHUB: &str = "github.com";

const OWNER_MAX: usize = 39; // GitHub's limit on user and organisation names.
const NAME_MAX: usize = 100; // GitHub's limit on repository names.

/// A validated `github.com/OWNER/NAME`, spelled as given; [`RepoName::key`] is its identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RepoName {
    owner: String,
    name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RepoNameError {
    #[error("empty repository name")]
    Empty,
    #[error("{input:?} is not a repository: expected github.com/OWNER/NAME")]
    Shape { input: String },
    #[error("{input:?}: only github.com repositories are supported, not {host}")]
    UnsupportedHost { input: String, host: String },
    #[error("{input:?}: owner {owner:?} is invalid: {why}")]
    Owner {
        input: String,
        owner: String,
        why: &'static str,
    },
    #[error("{input:?}: repository name {name:?} is invalid: {why}")]
    Name {
        input: String,
        name: String,
        why: &'static str,
    },
}

impl RepoName {
    /// Parses what people paste: `github.com/o/n`, `https://github.com/o/n.git/`, `o/n` is not
    /// accepted (a bare pair is ambiguous once more forges exist).
    pub fn parse(input: &str) -> Result<Self, RepoNameError> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(RepoNameError::Empty);
        }
        let shape = || RepoNameError::Shape {
            input: trimmed.to_owned(),
        };
        let mut rest = trimmed;
        for scheme in ["https://", "http://"] {
            // `get`, not indexing: the cut may fall inside a multi-byte character.
            if rest
                .get(..scheme.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(scheme))
            {
                rest = &rest[scheme.len()..];
                break;
            }
        }
        let rest = rest.trim_end_matches('/');
        let rest = rest
            .strip_suffix(".git")
            .or_else(|| rest.strip_suffix(".GIT"))
            .unwrap_or(rest);
        let mut parts = rest.split('/');
        let (Some(host), Some(owner), Some(name), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(shape());
        };
        if host.contains(['.', ':']) && !host.eq_ignore_ascii_case(GITHUB) {
            return Err(RepoNameError::UnsupportedHost {
                input: trimmed.to_owned(),
                host: host.to_ascii_lowercase(),
            });
        }
        if !host.eq_ignore_ascii_case(GITHUB) {
            return Err(shape());
        }
        if let Err(why) = check_owner(owner) {
            return Err(RepoNameError::Owner {
                input: trimmed.to_owned(),
                owner: owner.to_owned(),
                why,
            });
        }
        if let Err(why) = check_name(name) {
            return Err(RepoNameError::Name {
                input: trimmed.to_owned(),
                name: name.to_owned(),
                why,
            });
        }
        Ok(Self {
            owner: owner.to_owned(),
            name: name.to_owned(),
        })
    }

    pub fn host(&self) -> &str {
        GITHUB
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Lower-cased `github.com/owner/name`: GitHub resolves names case-insensitively, so this
    /// is the identity used for uniqueness in the database.
    pub fn key(&self) -> String {
        self.to_string().to_ascii_lowercase()
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{GITHUB}/{}/{}", self.owner, self.name)
    }
}

impl std::str::FromStr for RepoName {
    type Err = RepoNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

fn check_owner(owner: &str) -> Result<(), &'static str> {
    if owner.is_empty() {
        return Err("it is empty");
    }
    if owner.len() > OWNER_MAX {
        return Err("GitHub owners have at most 39 characters");
    }
    if !owner
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err("GitHub owners use only letters, digits and '-'");
    }
    if owner.starts_with('-') {
        return Err("GitHub owners cannot start with '-'");
    }
    Ok(())
}

fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("it is empty");
    }
    if name.len() > NAME_MAX {
        return Err("GitHub repository names have at most 100 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err("GitHub repository names use only letters, digits, '.', '_' and '-'");
    }
    if name == "." || name == ".." {
        return Err("'.' and '..' are not repository names");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_byte_characters_are_rejected_not_a_panic() {
        for input in [
            "é",
            "httpé://x",
            "github.com/ö/ü",
            "0/0/\u{13507}",
            "ñññññññññ/a/b",
            "🦀",
        ] {
            assert!(RepoName::parse(input).is_err(), "{input:?}");
        }
    }

    #[test]
    fn normalises_what_people_paste() {
        for input in [
            "github.com/ossf/scorecard",
            "  https://github.com/ossf/scorecard.git/ ",
            "HTTP://GitHub.com/ossf/scorecard/",
            "github.com/ossf/scorecard.git",
        ] {
            let repo = RepoName::parse(input).unwrap();
            assert_eq!(repo.to_string(), "github.com/ossf/scorecard", "{input}");
        }
        let mixed = RepoName::parse("github.com/OSSF/Scorecard").unwrap();
        assert_eq!(mixed.to_string(), "github.com/OSSF/Scorecard");
        assert_eq!(mixed.key(), "github.com/ossf/scorecard");
    }

    #[test]
    fn accepts_the_edges_of_githubs_rules() {
        let owner = "a".repeat(39);
        let name = "n".repeat(100);
        assert!(RepoName::parse(&format!("github.com/{owner}/{name}")).is_ok());
        assert!(RepoName::parse("github.com/a-b/.github").is_ok());
        assert!(RepoName::parse("github.com/x/a_b.c-d").is_ok());
    }

    #[test]
    fn rejects_with_a_reason_a_person_understands() {
        let cases = [
            ("", "empty"),
            ("ossf/scorecard", "expected github.com/OWNER/NAME"),
            ("github.com/ossf", "expected github.com/OWNER/NAME"),
            (
                "github.com/ossf/scorecard/tree/main",
                "expected github.com/OWNER/NAME",
            ),
            (
                "gitlab.com/gitlab-org/gitlab",
                "only github.com repositories",
            ),
            ("github.com/-ossf/x", "cannot start with '-'"),
            ("github.com/os_sf/x", "only letters, digits and '-'"),
            (&format!("github.com/{}/x", "a".repeat(40)), "at most 39"),
            (&format!("github.com/o/{}", "n".repeat(101)), "at most 100"),
            ("github.com/o/..", "not repository names"),
            ("github.com/o/a b", "only letters, digits, '.', '_' and '-'"),
            ("github.com/o/ü", "only letters"),
            ("github.com//x", "owner \"\" is invalid: it is empty"),
        ];
        for (input, want) in cases {
            let err = RepoName::parse(input).unwrap_err().to_string();
            assert!(err.contains(want), "{input:?}: {err:?} lacks {want:?}");
        }
    }
}
