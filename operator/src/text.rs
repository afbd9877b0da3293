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
}
