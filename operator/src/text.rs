//! Bounding text that others wrote (a pod's messages, an annotation's value) before the
//! operator keeps or shows it.

/// Cuts `s` to at most `max` bytes, at a character boundary.
pub fn cut(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

/// Text someone else chose (a bundle's names, a manifest's media type, a parser's
/// complaint), as it may reach status, conditions and Events: at most `max` characters,
/// control characters as spaces, marked when cut.
pub fn foreign(text: &str, max: usize) -> String {
    let mut out: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).take(max).collect();
    if text.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn cuts_at_a_character_boundary() {
        let mut s = "é".repeat(10);
        super::cut(&mut s, 5);
        assert_eq!(s, "éé");
        let mut short = "ab".to_string();
        super::cut(&mut short, 5);
        assert_eq!(short, "ab");
    }

    #[test]
    fn foreign_text_is_bounded_and_shows_no_control_characters() {
        assert_eq!(super::foreign("a\nb\u{1b}[2J", 4), "a b …");
        assert_eq!(super::foreign("ok", 4), "ok");
    }
}
