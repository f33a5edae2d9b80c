//! The book's generated pages are the code's: each committed page equals what the code renders
//! now. `UPDATE_DOCS=1` rewrites them instead (`dev/docs` does).

use std::path::PathBuf;

fn reference(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../docs/src/reference")
        .join(file)
}

fn check(file: &str, rendered: &str) {
    let path = reference(file);
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(&path, rendered).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; `dev/docs` writes it", path.display()));
    if committed != rendered {
        let line = committed
            .lines()
            .zip(rendered.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| committed.lines().count().min(rendered.lines().count()));
        panic!(
            "{} differs from the code from its line {}: run `dev/docs` and commit the page",
            path.display(),
            line + 1
        );
    }
}

#[test]
fn the_configuration_reference_is_the_binaries_clap_definitions() {
    check("configuration.md", &fleet_tests::book::configuration());
}

#[test]
fn the_api_reference_is_the_served_openapi_document() {
    check("openapi.json", &format!("{}\n", api::openapi::json()));
    check("api.md", &fleet_tests::book::api());
}
