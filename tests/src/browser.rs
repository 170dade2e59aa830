//! A report page as headless Chromium lays it out at several window widths: a screenshot,
//! and the page's own measurements read back through `--dump-dom`.
//!
//! Both load a wrapper page holding one `<iframe>` per width (the report inside each lays
//! itself out as in a window that wide), so one Chromium start serves every width. For
//! [`measure`], the report in the frames is a copy with a small script appended to its
//! body. The script runs after the layout (it asks for bounding boxes, which forces one),
//! records every SVG `<text>` element's box relative to its `<svg>`'s box, the verdict
//! badge, the page's visible text and any script error (a `window.onerror` listener
//! registered before it runs, and its own exceptions), and writes that as JSON into a
//! `<pre>` element; the wrapper collects the frames' JSON into its own DOM once they have
//! loaded, which `--dump-dom` prints. So a label cut off at the picture's edge, or covering
//! another, is seen in the DOM at each width, not guessed from pixels. The report itself is
//! not changed.

use std::path::Path;
use std::process::{Command, Stdio};

/// The widths the report pages are checked at: a small laptop window, a common one, a wide
/// screen.
pub const WIDTHS: [u32; 3] = [800, 1280, 1920];

const MEASURE: &str = r#"<script>
window.__faultline_errors = window.__faultline_errors || [];
window.addEventListener("error", function (e) { window.__faultline_errors.push(String(e.message)); });
(function () {
  var out = { errors: window.__faultline_errors, svgs: [] };
  try {
    out.width = window.innerWidth;
    out.scroll_width = document.documentElement.scrollWidth;
    var v = document.getElementById("verdict");
    out.verdict = v ? v.textContent : null;
    out.text = document.body.innerText;
    var svgs = document.querySelectorAll("svg");
    for (var i = 0; i < svgs.length; i++) {
      var box = svgs[i].getBoundingClientRect();
      var texts = [];
      var ts = svgs[i].querySelectorAll("text");
      for (var j = 0; j < ts.length; j++) {
        var r = ts[j].getBoundingClientRect();
        texts.push({ text: ts[j].textContent, left: r.left - box.left, right: box.right - r.right,
                     top: r.top - box.top, bottom: box.bottom - r.bottom, width: r.width,
                     height: r.height });
      }
      out.svgs.push({ id: svgs[i].id, left: box.left, right: box.right, width: box.width, texts: texts });
    }
  } catch (e) {
    out.errors.push("measuring: " + e);
  }
  var pre = document.createElement("pre");
  pre.id = "faultline-measurements";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script>"#;

fn chromium_command(chromium: &Path, window: (u32, u32), profile: &Path) -> Command {
    let mut c = Command::new(chromium);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--allow-file-access-from-files",
    ])
    .arg(format!("--window-size={},{}", window.0, window.1))
    .arg(format!("--user-data-dir={}", profile.display()))
    .stdin(Stdio::null());
    c
}

/// Height of each frame: a laptop screen's worth of the page.
const FRAME_HEIGHT: u32 = 900;

/// Writes `page.html` (the report, with `script` appended to its body) and `frames.html`
/// (one frame per width, stacked, then `collect` run once they have loaded) into `dir`;
/// the wrapper's path and window size.
fn frames(
    html: &Path,
    script: &str,
    collect: &str,
    dir: &Path,
) -> (std::path::PathBuf, (u32, u32)) {
    let page = std::fs::read_to_string(html).unwrap_or_else(|e| panic!("{}: {e}", html.display()));
    let page = match page.rfind("</body>") {
        Some(i) => format!("{}{script}{}", &page[..i], &page[i..]),
        None => format!("{page}{script}"),
    };
    std::fs::write(dir.join("page.html"), page).unwrap_or_else(|e| panic!("page.html: {e}"));
    let frames: String = WIDTHS
        .iter()
        .map(|w| {
            format!(
                "<iframe src=\"page.html\" width=\"{w}\" height=\"{FRAME_HEIGHT}\" \
                 style=\"border:0;display:block;border-bottom:4px solid #444\"></iframe>"
            )
        })
        .collect();
    let wrapper = dir.join("frames.html");
    std::fs::write(
        &wrapper,
        format!("<!DOCTYPE html><html><body style=\"margin:0\">{frames}{collect}</body></html>"),
    )
    .unwrap_or_else(|e| panic!("frames.html: {e}"));
    let widest = WIDTHS.iter().copied().max().unwrap_or(1920);
    let height = (FRAME_HEIGHT + 4) * u32::try_from(WIDTHS.len()).unwrap_or(3);
    (wrapper, (widest, height))
}

/// One screenshot of `html` at every width of [`WIDTHS`], stacked top to bottom (widest
/// window, each frame [`FRAME_HEIGHT`] px high), into `png`.
///
/// # Panics
/// When Chromium writes no screenshot.
pub fn screenshot(chromium: &Path, html: &Path, png: &Path) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let (wrapper, window) = frames(html, "", "", dir.path());
    let out = chromium_command(chromium, window, &dir.path().join("profile"))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", wrapper.display()))
        .output()
        .unwrap_or_else(|e| panic!("running chromium: {e}"));
    assert!(
        png.is_file(),
        "chromium wrote no screenshot of {}: {}",
        html.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

const COLLECT: &str = r#"<script>
window.addEventListener("load", function () {
  var out = [], frames = document.querySelectorAll("iframe");
  for (var i = 0; i < frames.length; i++) {
    var pre = frames[i].contentDocument && frames[i].contentDocument.getElementById("faultline-measurements");
    out.push(pre ? JSON.parse(pre.textContent) : { errors: ["frame " + i + ": no measurements"], svgs: [] });
  }
  var all = document.createElement("pre");
  all.id = "faultline-frames";
  all.textContent = JSON.stringify(out);
  document.body.appendChild(all);
});
</script>"#;

/// The page's measurements at each width of [`WIDTHS`], in that order (see the module
/// docs): `{"width", "scroll_width", "verdict", "text", "errors": [...], "svgs": [{"id",
/// "left", "right", "width", "texts": [{"text", "left", "right", "top", "bottom", "width",
/// "height"}]}]}`, where a text's `left`, `right`, `top` and `bottom` are its distances
/// inside its SVG's edges (negative: it sticks out).
///
/// # Panics
/// When Chromium fails or the page wrote no measurements.
pub fn measure(chromium: &Path, html: &Path) -> Vec<serde_json::Value> {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let (wrapper, window) = frames(html, MEASURE, COLLECT, dir.path());
    let out = chromium_command(chromium, window, &dir.path().join("profile"))
        .arg("--dump-dom")
        .arg(format!("file://{}", wrapper.display()))
        .output()
        .unwrap_or_else(|e| panic!("running chromium: {e}"));
    let dom = String::from_utf8_lossy(&out.stdout);
    let json = dom
        .split("<pre id=\"faultline-frames\">")
        .nth(1)
        .and_then(|rest| rest.split("</pre>").next())
        .unwrap_or_else(|| {
            panic!(
                "{}: no measurements in the DOM (stderr: {})",
                html.display(),
                String::from_utf8_lossy(&out.stderr)
            )
        });
    // The DOM is serialised HTML: undo its escaping of the JSON text.
    let json = json
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&");
    serde_json::from_str(&json).unwrap_or_else(|e| panic!("measurements: {e}: {json}"))
}

/// The SVG labels that stick out of their picture by more than half a pixel, as
/// `"<svg id>: <text> (left/right/top/bottom …px)"`.
pub fn cut_labels(m: &serde_json::Value) -> Vec<String> {
    let mut cut = Vec::new();
    for svg in m["svgs"].as_array().into_iter().flatten() {
        for t in svg["texts"].as_array().into_iter().flatten() {
            let sides: Vec<String> = ["left", "right", "top", "bottom"]
                .iter()
                .filter_map(|side| {
                    let d = t[*side].as_f64().unwrap_or(f64::NAN);
                    (d.is_nan() || d < -0.5).then(|| format!("{side} {d:.1}px"))
                })
                .collect();
            if !sides.is_empty() {
                cut.push(format!(
                    "{}: {:?} ({})",
                    svg["id"].as_str().unwrap_or("svg"),
                    t["text"].as_str().unwrap_or(""),
                    sides.join(", ")
                ));
            }
        }
    }
    cut
}

/// A measurement as `faultline drill run`'s summary prints it (`RTO: 249.0 ms ± …` →
/// `249.0 ms`), which is how the report page shows it too.
///
/// # Panics
/// When the summary has no such line.
pub fn figure_in_summary(summary: &str, name: &str) -> String {
    summary
        .lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{name}: ")))
        .and_then(|rest| rest.split(" ±").next())
        .map(|f| f.trim_start_matches("≥ ").to_owned())
        .unwrap_or_else(|| panic!("no {name} line in:\n{summary}"))
}

/// Pairs of SVG labels that cover each other (their boxes overlap by more than a pixel
/// both ways), as `"<svg id>: <text> / <text>"`.
pub fn overlapping_labels(m: &serde_json::Value) -> Vec<String> {
    let mut found = Vec::new();
    for svg in m["svgs"].as_array().into_iter().flatten() {
        let boxes: Vec<(String, f64, f64, f64, f64)> = svg["texts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| {
                let (l, top) = (t["left"].as_f64()?, t["top"].as_f64()?);
                let (w, h) = (t["width"].as_f64()?, t["height"].as_f64()?);
                let text = t["text"].as_str()?.to_owned();
                (w > 0.0).then_some((text, l, l + w, top, top + h))
            })
            .collect();
        for (i, a) in boxes.iter().enumerate() {
            for b in &boxes[i + 1..] {
                let dx = a.2.min(b.2) - a.1.max(b.1);
                let dy = a.4.min(b.4) - a.3.max(b.3);
                if dx > 1.0 && dy > 1.0 {
                    found.push(format!(
                        "{}: {:?} / {:?}",
                        svg["id"].as_str().unwrap_or("svg"),
                        a.0,
                        b.0
                    ));
                }
            }
        }
    }
    found
}

/// Checks a report page at every width of [`WIDTHS`]: no script error, the picture inside
/// the window, no SVG label cut off or covering another, the verdict badge saying
/// `verdict`, and each of `texts` visible on the page. The screenshot (every width, stacked)
/// goes to `png`. Returns the measurements, one per width.
///
/// # Panics
/// When a check fails; the message names the width and what was wrong.
pub fn check_report_page(
    chromium: &Path,
    html: &Path,
    verdict: &str,
    texts: &[&str],
    png: &Path,
) -> Vec<serde_json::Value> {
    let all = measure(chromium, html);
    assert_eq!(all.len(), WIDTHS.len(), "{}: {all:?}", html.display());
    for (m, width) in all.iter().zip(WIDTHS) {
        let at = format!("{} at {width} px", html.display());
        assert_eq!(m["errors"], serde_json::json!([]), "{at}: script errors");
        assert_eq!(m["width"].as_u64(), Some(u64::from(width)), "{at}: {m}");
        assert_eq!(
            m["verdict"].as_str(),
            Some(verdict),
            "{at}: the verdict badge"
        );
        let text = m["text"].as_str().unwrap_or_default();
        for t in texts {
            assert!(
                text.contains(t),
                "{at}: the page does not show {t:?}:\n{text}"
            );
        }
        let svgs = m["svgs"].as_array().cloned().unwrap_or_default();
        assert!(!svgs.is_empty(), "{at}: no SVG picture");
        for svg in &svgs {
            let (left, right) = (svg["left"].as_f64(), svg["right"].as_f64());
            assert!(
                left.is_some_and(|l| l >= 0.0)
                    && right.is_some_and(|r| r <= f64::from(width) + 0.5),
                "{at}: the picture {} is not inside the window: {svg}",
                svg["id"]
            );
            assert!(
                svg["texts"].as_array().is_some_and(|t| !t.is_empty()),
                "{at}: the picture {} has no labels",
                svg["id"]
            );
        }
        let cut = cut_labels(m);
        assert!(cut.is_empty(), "{at}: labels cut off:\n{}", cut.join("\n"));
        let covered = overlapping_labels(m);
        assert!(
            covered.is_empty(),
            "{at}: labels cover each other:\n{}",
            covered.join("\n")
        );
    }
    screenshot(chromium, html, png);
    all
}
