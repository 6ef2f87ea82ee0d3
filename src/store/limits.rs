//! Resource limits of one build, as a derivation records them, and their text forms:
//! durations (`90s`, `2h`, `1h 30m`, `500ms`) and memory sizes (`512M`, `2 GiB`, bytes).
//! Pure code: the sandbox applies the limits, the engine picks the defaults
//! ([`crate::engine::sandbox::DefaultLimits`]).

/// Resource limits of one build; an unset field takes the engine's default (see
/// [`crate::engine::sandbox::DefaultLimits`]). Field order is the canonical key order: keep it sorted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildLimits {
    /// Memory of each process of the build, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// Most processes (threads included) the build may have at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processes: Option<u32>,
    /// Longest time without output, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silence_ms: Option<u64>,
    /// Longest time the build may run, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

impl BuildLimits {
    /// No limit set: the field is left out of the canonical JSON.
    pub fn is_unset(&self) -> bool {
        *self == BuildLimits::default()
    }
}

/// Parses a duration (`humantime` syntax: `90s`, `2h`, `1h 30m`, `500ms`; a bare number is
/// seconds) into milliseconds.
pub fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return secs
            .checked_mul(1000)
            .ok_or_else(|| format!("duration `{text}` is too long"));
    }
    let d = humantime::parse_duration(text).map_err(|e| {
        format!("`{text}` is not a duration ({e}); write e.g. `90s`, `2h` or `1h 30m`")
    })?;
    u64::try_from(d.as_millis()).map_err(|_| format!("duration `{text}` is too long"))
}

/// Parses a memory size: a number of bytes, or a number with a binary unit (`K`, `M`, `G`,
/// `T`, also written `KiB`, `MiB`, `GiB`, `TiB`; `KB`, `MB`… mean the same), e.g. `512M`,
/// `2 GiB`, `1.5G`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let bad = || {
        format!("`{text}` is not a memory size; write e.g. `512M`, `2 GiB` or a number of bytes")
    };
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(bad()),
    };
    if let Ok(n) = number.parse::<u64>() {
        return n.checked_mul(1 << shift).ok_or_else(bad);
    }
    let n: f64 = number.parse().map_err(|_| bad())?;
    let bytes = n * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes >= u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

/// `2 GiB`, `64 MiB`, `1.5 GiB`, `1000 bytes`: a size for messages.
pub fn format_size(bytes: u64) -> String {
    for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
        let one = 1u64 << shift;
        if bytes >= one {
            if bytes.is_multiple_of(one) {
                return format!("{} {unit}", bytes >> shift);
            }
            return format!("{:.1} {unit}", bytes as f64 / one as f64);
        }
    }
    format!("{bytes} bytes")
}

/// `24h`, `90s`, `1h 30m`, `1s 500ms`: a duration for messages (parsed back by
/// [`parse_duration_ms`]).
pub fn format_duration_ms(ms: u64) -> String {
    let parts = [
        (ms / 3_600_000, "h"),
        (ms / 60_000 % 60, "m"),
        (ms / 1000 % 60, "s"),
        (ms % 1000, "ms"),
    ];
    let text: Vec<String> = parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect();
    match text.is_empty() {
        true => "0s".into(),
        false => text.join(" "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_parse_and_print() {
        assert_eq!(parse_duration_ms("90"), Ok(90_000));
        assert_eq!(parse_duration_ms("2h"), Ok(7_200_000));
        assert_eq!(parse_duration_ms("1h 30m"), Ok(5_400_000));
        assert_eq!(parse_duration_ms("500ms"), Ok(500));
        assert!(
            parse_duration_ms("soon")
                .unwrap_err()
                .contains("`soon` is not a duration")
        );
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("2 GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1.5g"), Ok(3 << 29));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999T").is_err());
        assert_eq!(format_size(2 << 30), "2 GiB");
        assert_eq!(format_size(64 << 20), "64 MiB");
        assert_eq!(format_size(3 << 29), "1.5 GiB");
        assert_eq!(format_size(1000), "1000 bytes");
        assert_eq!(format_duration_ms(86_400_000), "24h");
        assert_eq!(format_duration_ms(5_400_000), "1h 30m");
        assert_eq!(format_duration_ms(1500), "1s 500ms");
        assert_eq!(
            parse_duration_ms(&format_duration_ms(5_401_500)),
            Ok(5_401_500)
        );
    }
}
