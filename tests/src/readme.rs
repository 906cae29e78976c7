//! The README's receiver snippet, run as written: the Python block of its
//! "Verifying requests" section is cut out of README.md and executed by
//! `python3` against what a local target received, so the README cannot
//! drift from what Sundial sends.

use std::collections::HashMap;
use std::io::Write;

/// The Python code block of README.md's "Verifying requests" section.
pub fn python_snippet() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
    let readme = std::fs::read_to_string(path).expect("README.md next to the workspace");
    let section = readme
        .split("## Verifying requests")
        .nth(1)
        .expect("README has a `## Verifying requests` section");
    let code = section
        .split("```python\n")
        .nth(1)
        .expect("the section has a ```python block");
    code.split("\n```").next().unwrap_or_default().to_string()
}

/// The harness around the snippet: headers looked up case-insensitively,
/// as web frameworks do; prints `ok` or `refused`.
const HARNESS: &str = r#"
import json, sys

class Headers(dict):
    def get(self, name, default=None):
        return dict.get(self, name.lower(), default)

request = json.load(open(sys.argv[1]))
headers = Headers({k.lower(): v for k, v in request["headers"].items()})
body = bytes.fromhex(request["body_hex"])
print("ok" if verify(headers, body, request["secrets"]) else "refused")
"#;

/// Does the README's `verify(headers, body, secrets)` accept this request?
pub fn python_verify(headers: &HashMap<String, String>, body: &[u8], secrets: &[&str]) -> bool {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("sundial-readme-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("verify.py");
    std::fs::write(&script, format!("{}\n{HARNESS}", python_snippet())).unwrap();
    let input = dir.join("request.json");
    let request = serde_json::json!({
        "headers": headers,
        "body_hex": hex::encode(body),
        "secrets": secrets,
    });
    std::fs::File::create(&input)
        .and_then(|mut f| f.write_all(request.to_string().as_bytes()))
        .unwrap();
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(&input)
        .output()
        .expect("python3 runs the README's snippet (it is on every test machine: moto needs it)");
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the README's snippet failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.trim() == "ok"
}
