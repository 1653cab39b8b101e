//! Arbitrary bytes as a fleet file: `fleet::load_str` never panics, and every
//! error it returns is located inside the input (a line and a column).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = hangar::fleet::load_str("fuzz.yaml", text) {
        let shown = e.to_string();
        let lines = text.lines().count().max(1) + 1;
        let located = shown
            .match_indices("fuzz.yaml:")
            .filter_map(|(i, m)| shown[i + m.len()..].split(':').next())
            .filter_map(|l| l.parse::<usize>().ok())
            .any(|line| line >= 1 && line <= lines);
        assert!(located, "error not located in the input: {shown}");
    }
});
