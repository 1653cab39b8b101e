//! Arbitrary bytes as a fleet file: `fleet::load_str` never panics, and every
//! located error is inside the input, on the line its snippet points at.
//! Lines are counted as YAML and editors count them: `\n`, `\r\n` and a
//! bare `\r` each end one (`hangar::fleet::error::line_of`).

#![no_main]

use hangar::fleet::error::line_of;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Err(e) = hangar::fleet::load_str("fuzz.yaml", text) else {
        return;
    };
    let lines = line_of(text, text.len());
    for p in e.problems() {
        assert!(
            p.line >= 1 && p.line <= lines,
            "line {} of a {lines}-line input: {p}",
            p.line
        );
        if let Some((offset, _)) = p.span {
            assert!(offset <= text.len(), "span past the input: {p}");
            assert_eq!(
                line_of(text, offset),
                p.line,
                "the snippet points at another line than the error names: {p}"
            );
        }
    }
});
