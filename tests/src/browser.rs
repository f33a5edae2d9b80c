//! Pages as a real headless Chromium (installed by dev/web-tools) renders them.

use crate::stack;

/// Chromium, as installed by dev/web-tools.
pub fn chromium() -> std::path::PathBuf {
    stack::tool("chromium")
}

/// [`browse`] from async code: `url`'s DOM, with the screenshot saved as `target/<shot>`.
pub async fn browse_to(url: String, shot: &str) -> String {
    let dir = crate::report::target_dir();
    std::fs::create_dir_all(&dir).expect("the target directory");
    let shot = dir.join(shot);
    tokio::task::spawn_blocking(move || browse(&url, &shot))
        .await
        .expect("the browser task")
}

/// The page at `url` as a real headless Chromium renders it (its DOM), with a screenshot.
pub fn browse(url: &str, screenshot: &std::path::Path) -> String {
    let profile = std::env::temp_dir().join(stack::unique("chromium"));
    let common = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,1400",
    ];
    let run = |extra: &str| {
        let out = std::process::Command::new(chromium())
            .args(common)
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(extra)
            .arg(url)
            .output()
            .expect("running chromium (dev/web-tools installs it)");
        assert!(
            out.status.success(),
            "chromium {extra}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let dom = run("--dump-dom");
    run(&format!("--screenshot={}", screenshot.display()));
    assert!(
        std::fs::metadata(screenshot)
            .map(|m| m.len() > 10_000)
            .unwrap_or(false),
        "no screenshot at {}",
        screenshot.display()
    );
    let _ = std::fs::remove_dir_all(profile);
    dom
}
