//! The book's pages that are generated from the code, so they cannot drift from it:
//! [`configuration`] from each binary's clap definitions and [`api`] from the api's OpenAPI
//! document. `tests/tests/docs.rs` compares the committed pages with these; `dev/docs` rewrites
//! them.

use std::fmt::Write as _;

use clap::CommandFactory as _;

/// The binaries, in the order a work item meets them.
fn commands() -> Vec<clap::Command> {
    vec![
        producer::config::Cli::command(),
        worker::config::Cli::command(),
        sink::config::Cli::command(),
        api::config::Cli::command(),
        export::config::Cli::command(),
        webhooks::config::Cli::command(),
    ]
}

/// `docs/src/reference/configuration.md`.
pub fn configuration() -> String {
    let mut page = String::from(
        "# Configuration reference\n\n\
         Every setting of every binary, generated from their command-line definitions \
         (`dev/docs` rewrites this page; `cargo test -p fleet-tests --test docs` fails when it \
         differs from the code). Each flag has an environment variable, which is how the \
         manifests in `deploy/` and `docker-compose.yml` set them; a flag given on the command \
         line wins over the variable.\n",
    );
    for command in commands() {
        section(&mut page, &command, &[]);
    }
    page
}

/// One binary or subcommand: its description, its own settings, then its subcommands.
fn section(page: &mut String, command: &clap::Command, parents: &[&str]) {
    let mut path: Vec<&str> = parents.to_vec();
    path.push(command.get_name());
    let depth = path.len().min(2);
    let _ = write!(page, "\n{} `{}`\n\n", "#".repeat(depth + 1), path.join(" "));
    if let Some(about) = command.get_long_about().or(command.get_about()) {
        let _ = writeln!(page, "{}\n", about.to_string().trim());
    }
    let settings: Vec<&clap::Arg> = command
        .get_arguments()
        .filter(|a| !a.is_hide_set() && !matches!(a.get_id().as_str(), "help" | "version"))
        .collect();
    if !settings.is_empty() {
        page.push_str("| Variable | Flag | Default | What it sets |\n|---|---|---|---|\n");
        for arg in settings {
            let _ = writeln!(
                page,
                "| {} | {} | {} | {} |",
                arg.get_env()
                    .map(|e| format!("`{}`", e.to_string_lossy()))
                    .unwrap_or_default(),
                flag(arg),
                default(arg),
                cell(&help(arg)),
            );
        }
    }
    for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
        section(page, sub, &path);
    }
}

fn flag(arg: &clap::Arg) -> String {
    match (arg.get_long(), arg.get_short()) {
        (Some(long), _) => format!("`--{long}`"),
        (None, Some(short)) => format!("`-{short}`"),
        (None, None) => format!("`<{}>`", arg.get_id().as_str().to_ascii_uppercase()),
    }
}

fn default(arg: &clap::Arg) -> String {
    let values: Vec<String> = arg
        .get_default_values()
        .iter()
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    match values.as_slice() {
        [] => String::new(),
        [empty] if empty.is_empty() => "`\"\"`".to_owned(),
        _ => format!("`{}`", values.join(",")),
    }
}

fn help(arg: &clap::Arg) -> String {
    let mut text = arg
        .get_long_help()
        .or(arg.get_help())
        .map(|h| h.to_string())
        .unwrap_or_default();
    let values = arg.get_possible_values();
    let choices: Vec<&str> = values
        .iter()
        .filter(|v| !v.is_hide_set())
        .map(|v| v.get_name())
        .collect();
    // A flag's own true/false is no choice worth listing.
    if !choices.is_empty() && choices != ["true", "false"] {
        let _ = write!(text, " (one of: {})", choices.join(", "));
    }
    text
}

/// Text as one Markdown table cell.
fn cell(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

/// `docs/src/reference/api.md`: every path of the api's OpenAPI document (served at
/// `/openapi.json`, committed beside this page as `openapi.json`), with its parameters and
/// answers.
pub fn api() -> String {
    let doc: serde_json::Value =
        serde_json::from_str(&::api::openapi::json()).expect("the OpenAPI document is JSON");
    let mut page = String::from(
        "# API reference\n\n\
         Generated from the OpenAPI document the api serves at `/openapi.json` \
         ([a copy](openapi.json); `api openapi` prints it). The public paths answer as the \
         public Scorecard API does; the others are this service's own.\n",
    );
    let Some(paths) = doc["paths"].as_object() else {
        return page;
    };
    for (path, methods) in paths {
        let Some(methods) = methods.as_object() else {
            continue;
        };
        for (method, op) in methods {
            let _ = write!(page, "\n## `{} {path}`\n\n", method.to_ascii_uppercase());
            for key in ["summary", "description"] {
                if let Some(text) = op[key].as_str() {
                    let _ = writeln!(page, "{}\n", text.trim());
                }
            }
            if let Some(params) = op["parameters"].as_array().filter(|p| !p.is_empty()) {
                page.push_str("| Parameter | In | Required | Meaning |\n|---|---|---|---|\n");
                for p in params {
                    let _ = writeln!(
                        page,
                        "| `{}` | {} | {} | {} |",
                        p["name"].as_str().unwrap_or_default(),
                        p["in"].as_str().unwrap_or_default(),
                        if p["required"].as_bool() == Some(true) {
                            "yes"
                        } else {
                            "no"
                        },
                        cell(p["description"].as_str().unwrap_or_default()),
                    );
                }
                page.push('\n');
            }
            if let Some(body) = op["requestBody"]["content"].as_object() {
                let types: Vec<&str> = body.keys().map(String::as_str).collect();
                let _ = writeln!(page, "Request body: {}\n", types.join(", "));
            }
            if let Some(answers) = op["responses"].as_object() {
                page.push_str("| Status | Meaning | Body |\n|---|---|---|\n");
                for (status, answer) in answers {
                    let _ = writeln!(
                        page,
                        "| {status} | {} | {} |",
                        cell(answer["description"].as_str().unwrap_or_default()),
                        schemas(answer),
                    );
                }
            }
        }
    }
    page
}

/// The bodies an answer may carry: a schema's name, or the media type of a plain one.
fn schemas(answer: &serde_json::Value) -> String {
    let Some(content) = answer["content"].as_object() else {
        return String::new();
    };
    content
        .iter()
        .map(|(media, c)| match c["schema"]["$ref"].as_str() {
            Some(r) => format!("`{}` ({media})", r.rsplit('/').next().unwrap_or(r)),
            None => media.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}
