//! Sizes (`10GiB`) and durations (`10m`) as the config file and the command line write them.

use std::time::Duration;

/// Parses sizes such as `20GiB`, `500MB`, `1024` (bytes).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size like 20GiB"))?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        other => return Err(format!("unknown size unit {other:?} in {text:?}")),
    };
    let bytes = number * factor as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("{text:?} is out of range"));
    }
    Ok(bytes as u64)
}

/// Parses rates such as `40Mbit`, `800kbit`, `1Gbit` (bits per second, decimal: `1Mbit` is
/// 1 000 000 bit/s) into bytes per second.
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let wrong = || format!("{text:?} is not a rate like 40Mbit (kbit, Mbit or Gbit per second)");
    let number: u64 = number.parse().map_err(|_| wrong())?;
    let bits: u64 = match unit.trim() {
        "kbit" => 1_000,
        "Mbit" => 1_000_000,
        "Gbit" => 1_000_000_000,
        _ => return Err(wrong()),
    };
    match number.checked_mul(bits).map(|bits| bits / 8) {
        Some(0) => Err(format!("{text:?} is too slow: at least 1 byte per second")),
        Some(bytes) => Ok(bytes),
        None => Err(format!("{text:?} is out of range")),
    }
}

/// Parses durations such as `10m`, `30s`, `1h`, `7d`, `250ms`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 10m"))?;
    let millis: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{text:?} needs a unit: ms, s, m, h or d")),
    };
    number
        .checked_mul(millis)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{text:?} is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!(parse_size("20GiB"), Ok(20 << 30));
        assert_eq!(parse_size("1.5KiB"), Ok(1536));
        assert_eq!(parse_size("500MB"), Ok(500_000_000));
        assert!(parse_size("20 parsecs").is_err());
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("99999999999999999d").is_err());
    }

    #[test]
    fn rates_are_decimal_bits_per_second() {
        assert_eq!(parse_rate("40Mbit"), Ok(5_000_000));
        assert_eq!(parse_rate("800kbit"), Ok(100_000));
        assert_eq!(parse_rate("1Gbit"), Ok(125_000_000));
        assert_eq!(parse_rate(" 8 Mbit "), Ok(1_000_000));
        for wrong in ["40", "40MB", "40mbit", "1.5Mbit", "Mbit", "-1Mbit", "0kbit"] {
            assert!(parse_rate(wrong).is_err(), "{wrong} accepted");
        }
        assert!(parse_rate("99999999999999999Gbit").is_err());
    }
}
