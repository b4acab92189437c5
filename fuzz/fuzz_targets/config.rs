//! The config file: any text is either refused with an error or resolved into a `Config`.
#![no_main]

use hoard::config::{Config, FileConfig, parse_duration, parse_size};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The value parsers on their own, so short inputs reach them without TOML around them.
    let _ = parse_size(text);
    let _ = parse_duration(text);
    let Ok(file) = toml::from_str::<FileConfig>(text) else {
        return;
    };
    let _ = Config::resolve(file, Default::default());
});
