//! A report page as headless Chromium lays it out: screenshots at a given window width, and
//! the page's own measurements read back through `--dump-dom`.
//!
//! [`measure`] loads a copy of the page with a small script appended to its body. The
//! script runs after the layout (it asks for bounding boxes, which forces one), records
//! every SVG `<text>` element's box relative to its `<svg>`'s box, the verdict badge, the
//! page's visible text and any script error (a `window.onerror` listener registered before
//! it runs, and its own exceptions), and writes that as JSON into a `<pre>` element, which
//! `--dump-dom` prints. So a label cut off at the picture's edge is seen in the DOM, at
//! each width, not guessed from pixels. The report itself is not changed.

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

fn chromium_command(chromium: &Path, width: u32, profile: &Path) -> Command {
    let mut c = Command::new(chromium);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--allow-file-access-from-files",
    ])
    .arg(format!("--window-size={width},900"))
    .arg(format!("--user-data-dir={}", profile.display()))
    .stdin(Stdio::null());
    c
}

/// Takes a screenshot of `html` at `width` × 900 px into `png`.
///
/// # Panics
/// When Chromium writes no screenshot.
pub fn screenshot(chromium: &Path, html: &Path, png: &Path, width: u32) {
    let profile = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let out = chromium_command(chromium, width, profile.path())
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", html.display()))
        .output()
        .unwrap_or_else(|e| panic!("running chromium: {e}"));
    assert!(
        png.is_file(),
        "chromium wrote no screenshot of {}: {}",
        html.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The page's measurements at `width` (see the module docs): `{"width", "scroll_width",
/// "verdict", "text", "errors": [...], "svgs": [{"id", "left", "right", "width", "texts":
/// [{"text", "left", "right", "top", "bottom", "width"}]}]}`, where a text's `left`,
/// `right`, `top` and `bottom` are its distances inside its SVG's edges (negative: it
/// sticks out).
///
/// # Panics
/// When Chromium fails or the page wrote no measurements.
pub fn measure(chromium: &Path, html: &Path, width: u32) -> serde_json::Value {
    let page = std::fs::read_to_string(html).unwrap_or_else(|e| panic!("{}: {e}", html.display()));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let copy = dir.path().join("measured.html");
    let with_script = match page.rfind("</body>") {
        Some(i) => format!("{}{MEASURE}{}", &page[..i], &page[i..]),
        None => format!("{page}{MEASURE}"),
    };
    std::fs::write(&copy, with_script).unwrap_or_else(|e| panic!("{}: {e}", copy.display()));
    let out = chromium_command(chromium, width, &dir.path().join("profile"))
        .arg("--dump-dom")
        .arg(format!("file://{}", copy.display()))
        .output()
        .unwrap_or_else(|e| panic!("running chromium: {e}"));
    let dom = String::from_utf8_lossy(&out.stdout);
    let json = dom
        .split("<pre id=\"faultline-measurements\">")
        .nth(1)
        .and_then(|rest| rest.split("</pre>").next())
        .unwrap_or_else(|| {
            panic!(
                "{} at {width} px: no measurements in the DOM (stderr: {})",
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
/// the window, no SVG label cut off or covering another, the verdict badge saying `verdict`, and each of `texts`
/// visible on the page. Screenshots go to `<png_prefix>-<width>.png`. Returns the
/// measurements, one per width.
///
/// # Panics
/// When a check fails; the message names the width and what was wrong.
pub fn check_report_page(
    chromium: &Path,
    html: &Path,
    verdict: &str,
    texts: &[&str],
    png_prefix: &Path,
) -> Vec<serde_json::Value> {
    let mut all = Vec::new();
    for width in WIDTHS {
        let m = measure(chromium, html, width);
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
        let cut = cut_labels(&m);
        assert!(cut.is_empty(), "{at}: labels cut off:\n{}", cut.join("\n"));
        let covered = overlapping_labels(&m);
        assert!(
            covered.is_empty(),
            "{at}: labels cover each other:\n{}",
            covered.join("\n")
        );
        let png = png_prefix.with_file_name(format!(
            "{}-{width}.png",
            png_prefix
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        ));
        screenshot(chromium, html, &png, width);
        all.push(m);
    }
    all
}
