//! Text that others control on its way to the terminal.
//!
//! A builder's log, a fetched server's messages, names from `.bramble` files: printed as
//! they are, their escape sequences drive the user's terminal (OSC 52 writes the clipboard,
//! OSC 0 the window title, CSI clears the screen or moves the cursor to forge earlier lines).
//! Everything bramble prints on stderr that such text may reach goes through [`sanitise`]:
//! control characters (C0 but newline and tab, DEL, C1) and Unicode's bidirectional
//! overrides are shown as escapes (`\x1b`, `\u{202e}`); the rest of UTF-8 is kept.
//! `bramble log` writes the raw bytes only where they do not reach a terminal (stdout not a
//! terminal, or `--raw`).

use std::borrow::Cow;
use std::fmt::Write;

/// Whether `c` is shown as an escape.
fn hostile(c: char) -> bool {
    match c {
        '\n' | '\t' => false,
        // C0, DEL and C1 controls: ESC starts every terminal sequence, 0x9b is a one-byte
        // CSI, 0x9d a one-byte OSC, `\r` and backspace overwrite what was printed.
        '\0'..='\x1f' | '\x7f'..='\u{9f}' => true,
        // Bidirectional embeddings, overrides and isolates (reordered text: "Trojan Source").
        '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}' => true,
        _ => false,
    }
}

fn escape(c: char, out: &mut String) {
    let n = u32::from(c);
    if n < 0x80 {
        let _ = write!(out, "\\x{n:02x}");
    } else {
        let _ = write!(out, "\\u{{{n:x}}}");
    }
}

/// `text` with every control character but newline and tab made visible.
pub fn sanitise(text: &str) -> Cow<'_, str> {
    if !text.chars().any(hostile) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if hostile(c) {
            escape(c, &mut out);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// [`sanitise`] for bytes: valid UTF-8 kept, every other byte shown as `\xNN`.
pub fn sanitise_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.push_str(&sanitise(chunk.valid()));
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// Writes a Starlark `print()` line to stderr: the printer the CLI gives evaluations.
pub fn print_to_stderr(line: &str) {
    eprintln!("{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_control_characters_and_keeps_text() {
        assert_eq!(
            sanitise("plain\ttext\nnext ünïcödé ✓"),
            "plain\ttext\nnext ünïcödé ✓"
        );
        assert!(matches!(sanitise("plain"), Cow::Borrowed(_)));
        assert_eq!(
            sanitise("\x1b]52;c;aGk=\x07 \x1b[2J\r\x08\u{9b}31m \u{202e}cod"),
            "\\x1b]52;c;aGk=\\x07 \\x1b[2J\\x0d\\x08\\u{9b}31m \\u{202e}cod"
        );
    }

    #[test]
    fn invalid_utf8_bytes_are_escaped() {
        assert_eq!(
            sanitise_bytes(b"ok \xff\xfe \xe2\x9c\x93 \x1b[0m\n"),
            "ok \\xff\\xfe \u{2713} \\x1b[0m\n"
        );
    }
}
